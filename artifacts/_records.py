"""Immutable records returned by the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ._manifest import Manifest


@dataclass(frozen=True, slots=True)
class Version:
    """One immutable version of a workflow in a namespace."""

    namespace: str
    """The opaque namespace (the dispatcher passes the tenant id)."""
    workflow: str
    """The workflow name, from the manifest."""
    number: int
    """1, 2, 3, ... per (namespace, workflow); never reused, even after a delete."""
    digest: str
    """``sha256:<hex>`` of the bundle's canonical (path, blob digest) list; the code's identity."""
    created_at: datetime
    """When this version was first uploaded (UTC)."""
    uploader: str
    """Who uploaded it, as given to ``upload``."""
    size: int
    """Total uncompressed bytes of the bundle's files."""
    file_count: int
    """Number of files in the bundle, manifest included."""
    manifest: Manifest
    """The parsed manifest: workflow, entry, bindings, limit requests, description."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The outcome of an upload."""

    version: Version
    """The version holding the uploaded content."""
    created: bool
    """False when identical content was already a version of this workflow (nothing new was stored)."""


@dataclass(frozen=True, slots=True)
class BundleFiles:
    """The verified files of one version, as a sandbox loads them."""

    digest: str
    """The version digest the files were verified against."""
    files: Mapping[str, bytes]
    """Bundle-relative POSIX path -> content (read-only mapping)."""
    manifest: Manifest
    """The parsed manifest."""

    @property
    def entry(self) -> str:
        """The entry module's path (defines ``run(event, step)``)."""
        return self.manifest.entry


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """Where an alias points now."""

    namespace: str
    """The namespace."""
    workflow: str
    """The workflow."""
    alias: str
    """The alias name (``latest``, ``production``, ...)."""
    number: int
    """The version number it points at."""
    digest: str
    """The digest of that version."""
    generation: int
    """Bumped on every move; pass it as ``expected_generation`` for a compare-and-set move."""
    updated_at: datetime
    """When it last moved (UTC)."""
    updated_by: str
    """Who moved it last."""


AliasReason = Literal["upload", "set", "rollback", "delete"]


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias, as kept in its history."""

    generation: int
    """The alias generation this move produced."""
    number: int | None
    """The version it points at after the move (None: the alias was deleted)."""
    previous: int | None
    """The version it pointed at before (None: the alias was created)."""
    actor: str
    """Who moved it."""
    at: datetime
    """When (UTC)."""
    reason: AliasReason
    """``upload`` (moved by an upload), ``set``, ``rollback`` or ``delete``."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow of a namespace, for listings."""

    workflow: str
    """The workflow name."""
    versions: int
    """How many versions exist (deleted ones excluded)."""
    latest_number: int | None
    """The highest existing version number."""


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``collect_garbage`` removed."""

    bundles: int
    """Bundles no version references any more."""
    blobs: int
    """File blobs no bundle references any more."""
    derived: int
    """Derived forms of removed bundles."""
    bytes_freed: int
    """Blob and derived bytes removed."""
