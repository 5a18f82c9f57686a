"""The storage interface behind ``ArtifactStore``: one method per atomic operation.

Design note. The store's logic (validation, digests, verification on read, argument checks, the
in-use hook) lives once in ``ArtifactStore``; a backend only persists and queries rows. Each method
is one transaction, so the atomicity rules (a version number is allocated and its aliases moved in
the same transaction as the version row; an alias move checks its generation in the transaction
that writes it) are stated here and kept by every backend: SQLite with ``BEGIN IMMEDIATE``, and
PostgreSQL (issue 8) with row locks on the counter and alias rows. Backends return records and raise
the package's errors for not-found/conflict conditions they detect inside a transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ._digest import Ref
from ._records import AliasEvent, AliasReason, AliasRecord, GcResult, Version, WorkflowInfo


@dataclass(frozen=True, slots=True)
class NewBundle:
    """A validated, digested upload on its way into storage."""

    digest: str
    """Version digest (``sha256:<hex>``)."""
    manifest_json: str
    """``Manifest.to_json()``."""
    files: Mapping[str, tuple[str, bytes]]
    """Path -> (blob hex digest, content)."""
    size: int
    """Total bytes of the files."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a stored bundle, as read back (not yet verified)."""

    path: str
    """Bundle-relative path."""
    blob: str
    """The blob hex digest recorded for it."""
    data: bytes | None
    """The content read from storage (None: the blob row is missing)."""


class StorageBackend(ABC):
    """Persistence for one artifact store. Every method is a single transaction."""

    @abstractmethod
    async def record_upload(
        self,
        namespace: str,
        workflow: str,
        bundle: NewBundle,
        *,
        uploader: str,
        now: datetime,
        aliases: Sequence[str],
    ) -> tuple[Version, bool]:
        """Store blobs and bundle, find or create the version, move ``aliases`` to it (reason ``upload``).

        Returns (version, created). Stored blobs whose content no longer matches their digest are
        rewritten from the upload (re-uploading heals corruption).
        """

    @abstractmethod
    async def find_version(self, namespace: str, workflow: str, ref: Ref) -> Version | None:
        """One indexed lookup by number, digest or alias."""

    @abstractmethod
    async def list_versions(
        self, namespace: str, workflow: str, *, limit: int, before: int | None
    ) -> list[Version]:
        """Newest first; ``before`` pages (only numbers below it)."""

    @abstractmethod
    async def list_workflows(self, namespace: str) -> list[WorkflowInfo]:
        """Workflows that have at least one version, by name."""

    @abstractmethod
    async def load_bundle(self, digest: str) -> tuple[str, list[StoredFile]] | None:
        """(manifest JSON, files) of a stored bundle, or None."""

    @abstractmethod
    async def set_alias(
        self,
        namespace: str,
        workflow: str,
        alias: str,
        ref: Ref,
        *,
        actor: str,
        now: datetime,
        expected_generation: int | None,
        reason: AliasReason,
    ) -> AliasRecord:
        """Point ``alias`` at the version ``ref`` names, checking ``expected_generation`` if given."""

    @abstractmethod
    async def rollback_alias(
        self,
        namespace: str,
        workflow: str,
        alias: str,
        *,
        actor: str,
        now: datetime,
        expected_generation: int | None,
    ) -> AliasRecord:
        """Point ``alias`` back at the target it had before its last move."""

    @abstractmethod
    async def delete_alias(
        self, namespace: str, workflow: str, alias: str, *, actor: str, now: datetime
    ) -> None:
        """Remove the alias (its history keeps a ``delete`` event)."""

    @abstractmethod
    async def get_alias(self, namespace: str, workflow: str, alias: str) -> AliasRecord | None:
        """Where the alias points, or None."""

    @abstractmethod
    async def list_aliases(self, namespace: str, workflow: str) -> list[AliasRecord]:
        """All aliases of a workflow, by name."""

    @abstractmethod
    async def alias_history(
        self, namespace: str, workflow: str, alias: str, *, limit: int
    ) -> list[AliasEvent]:
        """Moves of the alias, newest first."""

    @abstractmethod
    async def delete_version(self, namespace: str, workflow: str, number: int) -> None:
        """Delete the version row; raise ``VersionInUseError`` if an alias points at it."""

    @abstractmethod
    async def collect_garbage(self) -> GcResult:
        """Remove bundles no version references, their derived forms, and unreferenced blobs."""

    @abstractmethod
    async def put_derived(
        self, digest: str, backend: str, backend_version: str, sha256: str, data: bytes, *, now: datetime
    ) -> None:
        """Store (or replace) a derived form; raise ``VersionNotFoundError`` if the bundle is unknown."""

    @abstractmethod
    async def get_derived(self, digest: str, backend: str, backend_version: str) -> tuple[str, bytes] | None:
        """(recorded sha256 hex, data) of a derived form, or None."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections. Idempotent."""
