"""``ArtifactStore``: the API. Validation, digests, verification and argument checks live here, once;
persistence is delegated to a ``StorageBackend`` (``_backend.py``), so a PostgreSQL store is a second
backend class, not a second copy of this logic.

Design note (in-memory bundles). A bundle is named by the sha256 of its content, so what
``read_bundle(digest)`` returns can never change; the same holds for a derived form per (digest,
backend, backend version), which only the platform writes. Both are kept here, after verification,
in one LRU bounded by total bytes (``StoreConfig.memory_cache_bytes``), for every backend: a
version's second cold load neither reads nor re-verifies. Nothing needs invalidating except
(a) ``put_derived`` replacing a form (the entry is dropped, and the next ``get_derived`` reads and
verifies the stored one) and (b) ``collect_garbage`` on this store object (the cache is emptied).
A bundle garbage-collected by *another* process may still be served from this memory; that is
harmless (the content is verified and immutable, and a version cannot be deleted while an alias or
a live instance pins it). Storage corruption that happens after a verified read is found on the
next read from storage, i.e. after eviction or in another process. Misses are not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Self

from ._backend import NewBundle, StorageBackend, StoredFile
from ._cache import LRU
from ._config import StoreConfig
from ._digest import (
    blob_digest,
    bundle_digest,
    check_alias,
    check_digest,
    check_label,
    check_namespace,
    digest_files,
    parse_ref,
)
from ._errors import (
    CorruptBlobError,
    InvalidNameError,
    StoreClosedError,
    VersionInUseError,
    VersionNotFoundError,
)
from ._manifest import Manifest, workflow_name_problem
from ._records import AliasEvent, AliasRecord, BundleFiles, GcResult, UploadResult, Version, WorkflowInfo
from ._validate import validate_bundle

InUseHook = Callable[[str], Awaitable[bool]]
"""Asked by ``delete_version`` with the version digest: True if live instances are pinned to it."""

LATEST = "latest"


def _check_workflow(workflow: object) -> str:
    if (why := workflow_name_problem(workflow)) is not None:
        raise InvalidNameError("workflow", workflow, why)
    assert isinstance(workflow, str)
    return workflow


def _verify(digest: str, manifest_json: str, stored: list[StoredFile]) -> BundleFiles:
    """Check every blob against its digest and the file list against the version digest."""
    files: dict[str, bytes] = {}
    for item in stored:
        expected = "sha256:" + item.blob
        if item.data is None:
            raise CorruptBlobError(digest, item.path, expected=expected, actual="nothing (blob missing)")
        actual = "sha256:" + blob_digest(item.data)
        if actual != expected:
            raise CorruptBlobError(digest, item.path, expected=expected, actual=actual)
        files[item.path] = item.data
    listed = bundle_digest((item.path, item.blob) for item in stored)
    if listed != digest:
        raise CorruptBlobError(digest, "(file list)", expected=digest, actual=listed)
    return BundleFiles(
        digest=digest, files=MappingProxyType(files), manifest=Manifest.from_json(manifest_json)
    )


class ArtifactStore:
    """Versioned, content-addressed storage of tenant code bundles. Never executes code.

    Create one with a concrete subclass (``await SqliteArtifactStore.open(path)``). Use it as an async
    context manager or call ``aclose()``.
    """

    def __init__(
        self,
        backend: StorageBackend,
        config: StoreConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._backend = backend
        self._config = config or StoreConfig()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._closed = False
        # digest -> BundleFiles, (digest, backend, backend_version) -> bytes; cost = bytes held
        self._memory: LRU[str | tuple[str, str, str], BundleFiles | bytes] = LRU(
            self._config.memory_cache_bytes
        )
        self._derived_writes = 0

    @property
    def config(self) -> StoreConfig:
        """The options this store was opened with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True after ``aclose()``."""
        return self._closed

    def _open(self) -> StorageBackend:
        if self._closed:
            raise StoreClosedError()
        return self._backend

    # -- upload and lookups --------------------------------------------------------------------

    async def upload(
        self,
        namespace: str,
        source: Path | bytes,
        *,
        uploader: str,
        workflow: str | None = None,
        filename: str | None = None,
        move_latest: bool = True,
        aliases: Iterable[str] = (),
    ) -> UploadResult:
        """Validate ``source`` and store it as a version of its workflow in ``namespace``.

        ``source`` is a directory, ``.zip``, ``.tar.gz``/``.tgz`` or ``.py`` path, or the bytes of one
        with ``filename`` naming the format. The workflow comes from the manifest (for a single
        ``.py``: ``workflow`` or the file's stem); when ``workflow`` is given the manifest must agree.
        Identical content already stored for the workflow returns that version (``created=False``).
        ``latest`` (unless ``move_latest=False``) and ``aliases`` end up pointing at the version, in
        the same transaction. Raises ``BundleValidationError`` listing every problem.
        """
        backend = self._open()
        check_namespace(namespace)
        check_label("uploader", uploader)
        if workflow is not None:
            _check_workflow(workflow)
        if not isinstance(source, Path | bytes | bytearray | memoryview):
            raise TypeError(f"source must be a pathlib.Path or bytes, not {type(source).__name__}")
        moves = [LATEST] if move_latest else []
        moves += [a for a in map(check_alias, aliases) if a not in moves]
        limits = self._config.limits

        def prepare() -> tuple[Manifest, NewBundle]:
            bundle = validate_bundle(source, filename=filename, workflow=workflow, limits=limits)
            digest, blobs = digest_files(bundle.files)
            files = {path: (blobs[path], data) for path, data in bundle.files.items()}
            size = sum(len(data) for data in bundle.files.values())
            return bundle.manifest, NewBundle(digest, bundle.manifest.to_json(), files, size)

        manifest, new = await asyncio.to_thread(prepare)
        version, created = await backend.record_upload(
            namespace, manifest.workflow, new, uploader=uploader, now=self._clock(), aliases=moves
        )
        return UploadResult(version=version, created=created)

    async def get_version(self, namespace: str, workflow: str, ref: int | str) -> Version | None:
        """The version ``ref`` (alias, number, digit string or ``sha256:...``) names, or None."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        return await backend.find_version(namespace, workflow, parse_ref(ref))

    async def resolve(self, namespace: str, workflow: str, ref: int | str) -> Version:
        """Like ``get_version`` but raises ``VersionNotFoundError``.

        One indexed lookup (on SQLite: on the caller's thread, from memory while the file is unchanged).
        An alias moved by any store object or process is seen by the next call.
        """
        version = await self.get_version(namespace, workflow, ref)
        if version is None:
            raise VersionNotFoundError(namespace, workflow, str(parse_ref(ref)))
        return version

    async def list_versions(
        self, namespace: str, workflow: str, *, limit: int = 100, before: int | None = None
    ) -> list[Version]:
        """Versions newest first, at most ``limit``; pass the last number seen as ``before`` to page."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        if not 1 <= limit <= 10_000:
            raise ValueError("limit must be between 1 and 10000")
        return await backend.list_versions(namespace, workflow, limit=limit, before=before)

    async def list_workflows(self, namespace: str) -> list[WorkflowInfo]:
        """Workflows of a namespace that have at least one version, by name."""
        backend = self._open()
        check_namespace(namespace)
        return await backend.list_workflows(namespace)

    async def read_bundle(self, digest: str) -> BundleFiles:
        """The files of a stored bundle, each verified against its sha256 when read from storage.

        Recently read bundles are served from memory (``StoreConfig.memory_cache_bytes``; see the
        module's design note). Raises ``CorruptBlobError`` (nothing of the bundle is returned) or
        ``VersionNotFoundError``.
        """
        backend = self._open()
        check_digest(digest)
        cached = self._memory.get(digest)
        if isinstance(cached, BundleFiles):
            return cached
        loaded = await backend.load_bundle(digest)
        if loaded is None:
            raise VersionNotFoundError(None, None, digest)
        files = await asyncio.to_thread(_verify, digest, *loaded)
        cost = sum(len(data) for data in files.files.values()) + len(loaded[0])
        self._memory.put(digest, files, cost)
        return files

    # -- aliases -------------------------------------------------------------------------------

    async def set_alias(
        self,
        namespace: str,
        workflow: str,
        alias: str,
        ref: int | str,
        *,
        actor: str,
        expected_generation: int | None = None,
    ) -> AliasRecord:
        """Point ``alias`` at the version ``ref`` names, atomically, recording the move in its history.

        With ``expected_generation`` (0: the alias must not exist yet) the move is a compare-and-set
        and raises ``AliasConflictError`` if the alias moved in between.
        """
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        check_alias(alias)
        check_label("actor", actor)
        return await backend.set_alias(
            namespace,
            workflow,
            alias,
            parse_ref(ref),
            actor=actor,
            now=self._clock(),
            expected_generation=expected_generation,
            reason="set",
        )

    async def rollback_alias(
        self, namespace: str, workflow: str, alias: str, *, actor: str, expected_generation: int | None = None
    ) -> AliasRecord:
        """Point ``alias`` back at its target before the last move. A second rollback undoes the first."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        check_alias(alias)
        check_label("actor", actor)
        return await backend.rollback_alias(
            namespace,
            workflow,
            alias,
            actor=actor,
            now=self._clock(),
            expected_generation=expected_generation,
        )

    async def delete_alias(self, namespace: str, workflow: str, alias: str, *, actor: str) -> None:
        """Remove an alias (its history keeps the deletion)."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        check_alias(alias)
        check_label("actor", actor)
        await backend.delete_alias(namespace, workflow, alias, actor=actor, now=self._clock())

    async def get_alias(self, namespace: str, workflow: str, alias: str) -> AliasRecord | None:
        """Where ``alias`` points, or None."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        check_alias(alias)
        return await backend.get_alias(namespace, workflow, alias)

    async def list_aliases(self, namespace: str, workflow: str) -> list[AliasRecord]:
        """Every alias of a workflow, by name."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        return await backend.list_aliases(namespace, workflow)

    async def alias_history(
        self, namespace: str, workflow: str, alias: str, *, limit: int = 100
    ) -> list[AliasEvent]:
        """The alias's moves, newest first."""
        backend = self._open()
        check_namespace(namespace)
        _check_workflow(workflow)
        check_alias(alias)
        return await backend.alias_history(namespace, workflow, alias, limit=limit)

    # -- deletion ------------------------------------------------------------------------------

    async def delete_version(
        self, namespace: str, workflow: str, ref: int | str, *, in_use: InUseHook | None
    ) -> Version:
        """Delete a version, refused with ``VersionInUseError`` while it is referenced.

        References are aliases (checked again in the deleting transaction) and live instances, which
        only the caller knows: ``in_use(digest)`` is awaited and must return True if any live
        instance of this namespace is pinned to the digest. Pass ``in_use=None`` only where no
        instances can exist. The version number is never reused; blobs go at ``collect_garbage``.
        """
        backend = self._open()
        version = await self.resolve(namespace, workflow, ref)
        aliases = [
            a.alias for a in await backend.list_aliases(namespace, workflow) if a.number == version.number
        ]
        if aliases:
            raise VersionInUseError(namespace, workflow, version.number, version.digest, aliases=aliases)
        if in_use is not None and await in_use(version.digest):
            raise VersionInUseError(namespace, workflow, version.number, version.digest, live_instances=True)
        await backend.delete_version(namespace, workflow, version.number)
        return version

    async def collect_garbage(self) -> GcResult:
        """Delete bundles no version references (with their derived forms) and unreferenced blobs."""
        try:
            return await self._open().collect_garbage()
        finally:
            self._memory.clear()  # whatever was removed is no longer served from memory here

    # -- derived forms -------------------------------------------------------------------------

    async def put_derived(self, digest: str, backend: str, backend_version: str, data: bytes) -> None:
        """Cache a platform-produced derived form of a bundle (e.g. compiled guest bytecode).

        Keyed by (digest, backend, backend_version); its sha256 is stored and checked on every read.
        There is deliberately no way for an uploader to supply one.
        """
        store = self._open()
        check_digest(digest)
        check_label("backend", backend)
        check_label("backend_version", backend_version)
        if not isinstance(data, bytes):
            raise TypeError("derived data must be bytes")
        if len(data) > self._config.max_derived_bytes:
            raise ValueError(
                f"derived form is {len(data):,} bytes; the store accepts at most "
                f"{self._config.max_derived_bytes:,} (StoreConfig.max_derived_bytes)"
            )
        sha = hashlib.sha256(data).hexdigest()
        self._memory.discard((digest, backend, backend_version))
        self._derived_writes += 1  # a get_derived reading the old form meanwhile will not keep it
        await store.put_derived(digest, backend, backend_version, sha, data, now=self._clock())

    async def get_derived(self, digest: str, backend: str, backend_version: str) -> bytes | None:
        """The cached derived form, verified against its stored sha256, or None if not cached."""
        store = self._open()
        check_digest(digest)
        check_label("backend", backend)
        check_label("backend_version", backend_version)
        key = (digest, backend, backend_version)
        cached = self._memory.get(key)
        if isinstance(cached, bytes):
            return cached
        writes = self._derived_writes
        found = await store.get_derived(digest, backend, backend_version)
        if found is None:
            return None
        expected, data = found
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CorruptBlobError(
                digest,
                f"derived:{backend}/{backend_version}",
                expected="sha256:" + expected,
                actual="sha256:" + actual,
            )
        if writes == self._derived_writes:
            self._memory.put(key, data, len(data))
        return data

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the store and its connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._memory.clear()
        await self._backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
