"""The versioned, content-addressed artifact store for tenant code bundles. Never executes code.

A bundle (``.py`` files plus the manifest ``tenantflow.toml``) is validated while it is read, its
files are stored once each by sha256, and it becomes an immutable, numbered version of a workflow in
a namespace. ``namespace`` is an opaque string (the dispatcher passes the tenant id). Aliases
(``latest``, ``production``, ...) point at versions, move atomically and keep a history.

    async with await SqliteArtifactStore.open("artifacts.db") as store:
        result = await store.upload(ns, Path("bundle.zip"), uploader="ops@example")
        result = await store.upload(ns, body, filename="bundle.tar.gz", uploader="api")   # bytes
        version = await store.resolve(ns, "orders", "production")   # alias | 3 | "3" | "sha256:..."
        bundle = await store.read_bundle(version.digest)           # verified: path -> bytes, manifest
        await store.set_alias(ns, "orders", "production", 4, actor="ops", expected_generation=7)
        await store.rollback_alias(ns, "orders", "production", actor="ops")
        await store.delete_version(ns, "orders", 2, in_use=engine_has_live_instances)
        await store.collect_garbage()

The API (all methods are coroutines of ``ArtifactStore``):

* ``upload(namespace, source, *, uploader, workflow=None, filename=None, move_latest=True, aliases=())
  -> UploadResult(version, created)``: ``source`` is a ``Path`` (directory, ``.zip``,
  ``.tar.gz``/``.tgz``, ``.py``) or ``bytes`` with ``filename`` naming the format. Rejections raise
  ``BundleValidationError`` whose ``problems`` list every ``Problem(path, line, column, message)``.
  Re-uploading identical content returns the existing version with ``created=False``.
* ``resolve(namespace, workflow, ref) -> Version`` (raises ``VersionNotFoundError``) and
  ``get_version(...) -> Version | None``: one indexed lookup by alias, number or digest (SQLite:
  without a thread hop, and from memory while the file is unchanged; a move by any process is seen).
* ``list_versions(namespace, workflow, *, limit=100, before=None)``, ``list_workflows(namespace)``.
* ``read_bundle(digest) -> BundleFiles``: every blob verified on read; ``CorruptBlobError`` otherwise.
  Recent bundles and derived forms stay in memory (``StoreConfig.memory_cache_bytes``, 64 MiB).
* ``set_alias(namespace, workflow, alias, ref, *, actor, expected_generation=None)``,
  ``get_alias``, ``list_aliases``, ``alias_history``, ``rollback_alias(..., *, actor)``, ``delete_alias``.
* ``delete_version(namespace, workflow, ref, *, in_use)``: ``in_use(digest) -> Awaitable[bool]`` is
  how the caller reports live instances; refused with ``VersionInUseError``.
* ``collect_garbage() -> GcResult``.
* ``put_derived(digest, backend, backend_version, data)`` and ``get_derived(...) -> bytes | None``:
  platform-produced derived forms (never accepted from uploaders), verified on read.

Storage: ``SqliteArtifactStore.open(path)`` (one file, the embedded default) or
``PostgresArtifactStore.open(dsn, schema=...)`` (asyncpg, the ``postgres`` extra; many processes on
many machines). Both are the same ``ArtifactStore`` over a small ``StorageBackend`` interface.

Validation caps live in ``ValidationLimits`` (defaults: 5 MiB uncompressed, 500 files, 2 MiB per
file, 100:1 compression ratio, 5 MiB upload); the manifest format is described in ``_manifest.py``
and the digest encoding in ``_digest.py``.
"""

from ._config import StoreConfig, ValidationLimits
from ._errors import (
    AliasConflictError,
    AliasNotFoundError,
    AliasRollbackError,
    ArtifactError,
    BundleValidationError,
    CorruptBlobError,
    InvalidNameError,
    Problem,
    SchemaVersionError,
    StoreClosedError,
    VersionInUseError,
    VersionNotFoundError,
)
from ._manifest import MANIFEST_PATH, Manifest
from ._postgres import PostgresArtifactStore
from ._records import (
    AliasEvent,
    AliasRecord,
    BundleFiles,
    GcResult,
    UploadResult,
    Version,
    WorkflowInfo,
)
from ._sqlite import SqliteArtifactStore
from ._store import ArtifactStore, InUseHook

__all__ = [
    "MANIFEST_PATH",
    "AliasConflictError",
    "AliasEvent",
    "AliasNotFoundError",
    "AliasRecord",
    "AliasRollbackError",
    "ArtifactError",
    "ArtifactStore",
    "BundleFiles",
    "BundleValidationError",
    "CorruptBlobError",
    "GcResult",
    "InUseHook",
    "InvalidNameError",
    "Manifest",
    "PostgresArtifactStore",
    "Problem",
    "SchemaVersionError",
    "SqliteArtifactStore",
    "StoreClosedError",
    "StoreConfig",
    "UploadResult",
    "ValidationLimits",
    "Version",
    "VersionInUseError",
    "VersionNotFoundError",
    "WorkflowInfo",
]
