"""Errors raised by the artifact store.

    ArtifactError                     root of everything this package raises
    ├── BundleValidationError         an upload was rejected; ``problems`` lists every reason
    ├── InvalidNameError              a namespace, workflow, alias, ref or backend name is malformed
    ├── VersionNotFoundError          no version matches (namespace, workflow, ref) or a digest
    ├── AliasNotFoundError            the alias does not exist
    ├── AliasConflictError            a compare-and-set alias move lost a race
    ├── AliasRollbackError            the alias has no previous target to roll back to
    ├── VersionInUseError             delete refused: an alias or a live instance references the version
    ├── CorruptBlobError              stored content no longer matches its sha256; never returned
    ├── SchemaVersionError            the database was written by a newer schema than this code knows
    └── StoreClosedError              the store was closed

Backend exceptions (``sqlite3.Error``, ``asyncpg`` errors) are not translated: they mean the
storage itself failed, which the caller cannot fix by changing its request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ArtifactError(Exception):
    """Root of every error raised by ``artifacts``."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a bundle was rejected."""

    path: str | None
    """The bundle-relative path the problem is about, or None for the bundle as a whole."""
    line: int | None
    """1-based line in that file, when the problem has a position."""
    column: int | None
    """1-based column in that line, when the problem has a position."""
    message: str
    """What is wrong and what to do about it."""

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        return where + self.message


class BundleValidationError(ArtifactError):
    """The upload was rejected. ``problems`` holds every problem found, in archive order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"bundle rejected ({count} problem{'s' if count != 1 else ''}); fix these and upload again:\n{lines}"
        )


class InvalidNameError(ArtifactError):
    """A name or reference does not have the required form."""

    def __init__(self, kind: str, value: object, rule: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {rule}")
        self.kind = kind
        self.value = value
        self.rule = rule


class VersionNotFoundError(ArtifactError):
    """No version matches the reference (or no bundle has the digest)."""

    def __init__(self, namespace: str | None, workflow: str | None, ref: str) -> None:
        if namespace is None:
            text = f"no bundle with digest {ref} is stored; upload it first"
        else:
            text = (
                f"no version {ref} of workflow {workflow!r} in namespace {namespace!r}; "
                "list_versions() shows what exists"
            )
        super().__init__(text)
        self.namespace = namespace
        self.workflow = workflow
        self.ref = ref


class AliasNotFoundError(ArtifactError):
    """The alias does not exist for this workflow."""

    def __init__(self, namespace: str, workflow: str, alias: str) -> None:
        super().__init__(
            f"alias {alias!r} of workflow {workflow!r} in namespace {namespace!r} does not exist; "
            "create it with set_alias()"
        )
        self.namespace = namespace
        self.workflow = workflow
        self.alias = alias


class AliasConflictError(ArtifactError):
    """A compare-and-set move failed: the alias changed since the caller read it."""

    def __init__(self, namespace: str, workflow: str, alias: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"alias {alias!r} of workflow {workflow!r} in namespace {namespace!r} is at generation "
            f"{actual}, not the expected {expected}; read it again and retry"
        )
        self.namespace = namespace
        self.workflow = workflow
        self.alias = alias
        self.expected = expected
        self.actual = actual


class AliasRollbackError(ArtifactError):
    """The alias cannot be rolled back (it was never moved, or its previous target is gone)."""

    def __init__(self, namespace: str, workflow: str, alias: str, reason: str) -> None:
        super().__init__(
            f"cannot roll back alias {alias!r} of workflow {workflow!r} in namespace {namespace!r}: "
            f"{reason}; use set_alias() to choose a version explicitly"
        )
        self.namespace = namespace
        self.workflow = workflow
        self.alias = alias
        self.reason = reason


class VersionInUseError(ArtifactError):
    """Delete refused: the version is still referenced."""

    def __init__(
        self,
        namespace: str,
        workflow: str,
        number: int,
        digest: str,
        *,
        aliases: Sequence[str] = (),
        live_instances: bool = False,
    ) -> None:
        reasons = []
        if aliases:
            names = ", ".join(repr(a) for a in aliases)
            reasons.append(
                f"alias {names} points at it (move it first)"
                if len(aliases) == 1
                else f"aliases {names} point at it (move them first)"
            )
        if live_instances:
            reasons.append("live instances are pinned to it (let them finish or migrate them first)")
        super().__init__(
            f"version {number} ({digest}) of workflow {workflow!r} in namespace {namespace!r} "
            f"is in use: {'; '.join(reasons)}"
        )
        self.namespace = namespace
        self.workflow = workflow
        self.number = number
        self.digest = digest
        self.aliases: tuple[str, ...] = tuple(aliases)
        self.live_instances = live_instances


class CorruptBlobError(ArtifactError):
    """Stored content does not match its recorded sha256. The content is never returned."""

    def __init__(self, digest: str, path: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"stored content of {path!r} in {digest} is corrupt (expected {expected}, read {actual}); "
            "restore the store from a backup or upload the bundle again"
        )
        self.digest = digest
        """The version digest (``sha256:...``) whose content is corrupt."""
        self.path = path
        """The file path inside the bundle, ``derived:<backend>/<version>`` for a derived form, or
        ``(file list)`` when the recorded list of files no longer matches the version digest."""
        self.expected = expected
        self.actual = actual


class SchemaVersionError(ArtifactError):
    """The database schema is newer than this code understands."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"artifact store schema version {found} is newer than the supported {supported}; "
            "upgrade tenantflow before opening this store"
        )
        self.found = found
        self.supported = supported


class StoreClosedError(ArtifactError):
    """The store was closed; open a new one."""

    def __init__(self) -> None:
        super().__init__("the artifact store is closed; open a new one")
