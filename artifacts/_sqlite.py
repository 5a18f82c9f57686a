"""SQLite storage (aiosqlite): the embedded default. One file holds metadata and blobs.

Design note. Each store object holds two aiosqlite connections (plus the resolve connection below):
a writer, used under an ``asyncio.Lock`` for ``BEGIN IMMEDIATE`` transactions, and a reader for
single-statement reads, which WAL lets run beside a writer. ``BEGIN IMMEDIATE`` takes SQLite's write lock up front, so two store objects (or
processes) on one file serialize their writes: the version counter row is incremented and the
aliases moved inside that one transaction, so concurrent uploads get distinct consecutive numbers
and no alias move is lost. The busy timeout makes the second writer wait instead of failing.

Design note (resolve). ``find_version`` (behind ``resolve``/``get_version``) is on the path of
every instance creation, so it avoids the aiosqlite thread hop (~25-50 µs, most of the old 47-111
µs): it runs on the caller's thread, on a third, plain ``sqlite3`` connection that is read-only.
WAL readers never wait for writers, so this is a short, bounded piece of work on the event loop.
In front of it sits an LRU of (namespace, workflow, ref) -> ``Version``
(``StoreConfig.resolve_cache_entries``), validated on every call by ``PRAGMA data_version`` on
that connection: SQLite changes the value whenever any *other* connection commits to the file:
this store's own writer connection, another store object, another process (a CLI, another API
process). On a change the whole cache is dropped; writes to the artifact database are rare
(uploads, alias moves, derived forms), so this costs little and needs no bookkeeping of which
rows a write touched. The pragma is read before the lookup, so an entry filled from a newer
snapshot than the recorded value is at worst dropped once more, never served stale.

Measured (benchmarks/bench_artifacts.py --quick, p50, one run on a loaded 2-vCPU machine, 1k / 1M
namespaces): a cache hit 18 / 18 µs (12 / 12 in another run), flat; a miss (the indexed read and
building the ``Version`` on the caller's thread) 67 / 93 µs; the old path through the aiosqlite
reader thread, timed in the same run, 170 / 199 µs. The miss grows with the B-tree (the bare
query: 11 / 44 µs); the hit does not, which is why the cache is worth its few lines.

If the sync connection finds the file locked (its busy timeout is 0; only possible during WAL
recovery or while another connection holds an exclusive lock), the call falls back to the
aiosqlite reader, which waits up to the busy timeout off the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ._backend import NewBundle, StorageBackend, StoredFile
from ._cache import LRU
from ._config import StoreConfig
from ._digest import Ref
from ._errors import (
    AliasConflictError,
    AliasNotFoundError,
    AliasRollbackError,
    VersionInUseError,
    VersionNotFoundError,
)
from ._manifest import Manifest
from ._records import AliasEvent, AliasReason, AliasRecord, GcResult, Version, WorkflowInfo
from ._sqlite_schema import connect, from_micros, migrate, to_micros
from ._store import ArtifactStore

_VERSION_SELECT = (
    "SELECT v.namespace, v.workflow, v.number, v.digest, v.created_at, v.uploader, "
    "b.size, b.file_count, b.manifest FROM versions v JOIN bundles b ON b.digest = v.digest "
)
_ALIAS_SELECT = (
    "SELECT a.namespace, a.workflow, a.alias, a.number, v.digest, a.generation, a.updated_at, a.updated_by "
    "FROM aliases a JOIN versions v "
    "ON v.namespace = a.namespace AND v.workflow = a.workflow AND v.number = a.number "
)
_IN_CHUNK = 500


def _version(row: Any) -> Version:
    return Version(
        namespace=row[0],
        workflow=row[1],
        number=row[2],
        digest=row[3],
        created_at=from_micros(row[4]),
        uploader=row[5],
        size=row[6],
        file_count=row[7],
        manifest=Manifest.from_json(row[8]),
    )


def _alias(row: Any) -> AliasRecord:
    return AliasRecord(
        namespace=row[0],
        workflow=row[1],
        alias=row[2],
        number=row[3],
        digest=row[4],
        generation=row[5],
        updated_at=from_micros(row[6]),
        updated_by=row[7],
    )


def _connect_sync_reader(path: Path) -> sqlite3.Connection:
    """The read-only connection ``find_version`` uses on the caller's thread."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout = 0")  # never block the loop; find_version falls back instead
        db.execute("PRAGMA query_only = ON")
    except BaseException:
        db.close()
        raise
    return db


async def _all(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    return list(await db.execute_fetchall(sql, params))


class SqliteBackend(StorageBackend):
    """``StorageBackend`` on one SQLite file in WAL mode."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        sync_reader: sqlite3.Connection,
        *,
        resolve_cache_entries: int,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._closed = False
        # See the design note: used on the caller's thread, under a lock in case of several threads.
        self._sync = sync_reader
        self._sync_lock = threading.Lock()
        self._resolved: LRU[tuple[str, str, Ref], Version] = LRU(resolve_cache_entries)
        self._data_version: int | None = None

    @classmethod
    async def connect(cls, path: Path, *, busy_timeout: float, resolve_cache_entries: int) -> SqliteBackend:
        writer = await connect(path, busy_timeout)
        reader: aiosqlite.Connection | None = None
        try:
            await migrate(writer)
            reader = await connect(path, busy_timeout)
            sync_reader = await asyncio.to_thread(_connect_sync_reader, path)
        except BaseException:
            if reader is not None:
                await reader.close()
            await writer.close()
            raise
        return cls(writer, reader, sync_reader, resolve_cache_entries=resolve_cache_entries)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            db = self._writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Shielded: a cancelled caller must not leave the connection inside a transaction.
                # SQLite may already have rolled back (e.g. on SQLITE_FULL); don't mask the cause.
                if db.in_transaction:
                    await asyncio.shield(db.execute("ROLLBACK"))
                raise

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._reader.execute_fetchall(sql, params))

    # -- versions ------------------------------------------------------------------------------

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
        blobs = {blob: data for blob, data in bundle.files.values()}
        async with self._write() as db:
            existing: dict[str, bytes] = {}
            digests = list(blobs)
            for start in range(0, len(digests), _IN_CHUNK):
                chunk = digests[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in await db.execute_fetchall(
                    f"SELECT digest, data FROM blobs WHERE digest IN ({marks})", chunk
                ):
                    existing[row[0]] = row[1]
            for blob, data in existing.items():
                if hashlib.sha256(data).hexdigest() != blob:  # heal a corrupted copy
                    await db.execute(
                        "UPDATE blobs SET data = ?, size = ? WHERE digest = ?",
                        (blobs[blob], len(blobs[blob]), blob),
                    )
            await db.executemany(
                "INSERT INTO blobs (digest, size, data) VALUES (?, ?, ?)",
                [(b, len(d), d) for b, d in blobs.items() if b not in existing],
            )
            await db.execute(
                "INSERT OR IGNORE INTO bundles (digest, manifest, size, file_count, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (bundle.digest, bundle.manifest_json, bundle.size, len(bundle.files), to_micros(now)),
            )
            await db.executemany(
                "INSERT OR IGNORE INTO bundle_files (bundle, path, blob) VALUES (?, ?, ?)",
                [(bundle.digest, path, blob) for path, (blob, _) in bundle.files.items()],
            )
            found = await db.execute_fetchall(
                "SELECT number FROM versions WHERE namespace = ? AND workflow = ? AND digest = ?",
                (namespace, workflow, bundle.digest),
            )
            created = not found
            if found:
                number = next(iter(found))[0]
            else:
                counter = await db.execute_fetchall(
                    "INSERT INTO workflows (namespace, workflow, last_number) VALUES (?, ?, 1) "
                    "ON CONFLICT (namespace, workflow) DO UPDATE SET last_number = last_number + 1 "
                    "RETURNING last_number",
                    (namespace, workflow),
                )
                number = next(iter(counter))[0]
                await db.execute(
                    "INSERT INTO versions (namespace, workflow, number, digest, created_at, uploader) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (namespace, workflow, number, bundle.digest, to_micros(now), uploader),
                )
            for alias in aliases:
                await self._move(db, namespace, workflow, alias, number, uploader, now, None, "upload")
            rows = await db.execute_fetchall(
                _VERSION_SELECT + "WHERE v.namespace = ? AND v.workflow = ? AND v.number = ?",
                (namespace, workflow, number),
            )
            return _version(next(iter(rows))), created

    @staticmethod
    def _version_query(namespace: str, workflow: str, ref: Ref) -> tuple[str, tuple[Any, ...]]:
        if ref.number is not None:
            where = "WHERE v.namespace = ? AND v.workflow = ? AND v.number = ?"
            return _VERSION_SELECT + where, (namespace, workflow, ref.number)
        if ref.digest is not None:
            where = "WHERE v.namespace = ? AND v.workflow = ? AND v.digest = ?"
            return _VERSION_SELECT + where, (namespace, workflow, ref.digest)
        sql = (
            "SELECT v.namespace, v.workflow, v.number, v.digest, v.created_at, v.uploader, "
            "b.size, b.file_count, b.manifest FROM aliases a "
            "JOIN versions v ON v.namespace = a.namespace AND v.workflow = a.workflow AND v.number = a.number "
            "JOIN bundles b ON b.digest = v.digest "
            "WHERE a.namespace = ? AND a.workflow = ? AND a.alias = ?"
        )
        return sql, (namespace, workflow, ref.alias)

    async def find_version(self, namespace: str, workflow: str, ref: Ref) -> Version | None:
        try:
            return self._find_version_now(namespace, workflow, ref)
        except sqlite3.OperationalError:  # locked (see the design note): wait off the loop instead
            rows = await self._rows(*self._version_query(namespace, workflow, ref))
            return _version(rows[0]) if rows else None

    def _find_version_now(self, namespace: str, workflow: str, ref: Ref) -> Version | None:
        """The cached or freshly read version, on this thread (see the design note)."""
        with self._sync_lock:
            db = self._sync
            key = (namespace, workflow, ref)
            if self._resolved.capacity:
                (data_version,) = db.execute("PRAGMA data_version").fetchall()[0]
                if data_version != self._data_version:
                    self._resolved.clear()
                    self._data_version = data_version
                found = self._resolved.get(key)
                if found is not None:
                    return found
            rows = db.execute(*self._version_query(namespace, workflow, ref)).fetchall()
            if not rows:
                return None
            found = _version(rows[0])
            self._resolved.put(key, found)
            return found

    async def list_versions(
        self, namespace: str, workflow: str, *, limit: int, before: int | None
    ) -> list[Version]:
        rows = await self._rows(
            _VERSION_SELECT + "WHERE v.namespace = ? AND v.workflow = ? AND v.number < ? "
            "ORDER BY v.number DESC LIMIT ?",
            (namespace, workflow, before if before is not None else 2**62, limit),
        )
        return [_version(row) for row in rows]

    async def list_workflows(self, namespace: str) -> list[WorkflowInfo]:
        rows = await self._rows(
            "SELECT workflow, COUNT(*), MAX(number) FROM versions WHERE namespace = ? "
            "GROUP BY workflow ORDER BY workflow",
            (namespace,),
        )
        return [WorkflowInfo(workflow=r[0], versions=r[1], latest_number=r[2]) for r in rows]

    async def load_bundle(self, digest: str) -> tuple[str, list[StoredFile]] | None:
        # One statement: a consistent snapshot without a read transaction.
        rows = await self._rows(
            "SELECT b.manifest, f.path, f.blob, bl.data FROM bundles b "
            "JOIN bundle_files f ON f.bundle = b.digest LEFT JOIN blobs bl ON bl.digest = f.blob "
            "WHERE b.digest = ? ORDER BY f.path",
            (digest,),
        )
        if not rows:
            return None
        return rows[0][0], [StoredFile(path=r[1], blob=r[2], data=r[3]) for r in rows]

    async def delete_version(self, namespace: str, workflow: str, number: int) -> None:
        async with self._write() as db:
            found = await _all(
                db,
                "SELECT digest FROM versions WHERE namespace = ? AND workflow = ? AND number = ?",
                (namespace, workflow, number),
            )
            if not found:
                raise VersionNotFoundError(namespace, workflow, str(number))
            pointing = await db.execute_fetchall(
                "SELECT alias FROM aliases WHERE namespace = ? AND workflow = ? AND number = ? ORDER BY alias",
                (namespace, workflow, number),
            )
            if names := [r[0] for r in pointing]:
                raise VersionInUseError(namespace, workflow, number, found[0][0], aliases=names)
            await db.execute(
                "DELETE FROM versions WHERE namespace = ? AND workflow = ? AND number = ?",
                (namespace, workflow, number),
            )

    async def collect_garbage(self) -> GcResult:
        unused = "SELECT digest FROM bundles WHERE digest NOT IN (SELECT digest FROM versions)"
        async with self._write() as db:
            derived_bytes = await db.execute_fetchall(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM derived WHERE digest IN ({unused})"
            )
            derived, dbytes = next(iter(derived_bytes))
            await db.execute(f"DELETE FROM derived WHERE digest IN ({unused})")
            await db.execute(f"DELETE FROM bundle_files WHERE bundle IN ({unused})")
            cursor = await db.execute("DELETE FROM bundles WHERE digest NOT IN (SELECT digest FROM versions)")
            bundles = cursor.rowcount
            orphans = "FROM blobs WHERE digest NOT IN (SELECT blob FROM bundle_files)"
            blob_rows = await db.execute_fetchall(f"SELECT COUNT(*), COALESCE(SUM(size), 0) {orphans}")
            blobs, bbytes = next(iter(blob_rows))
            await db.execute(f"DELETE {orphans}")
        return GcResult(bundles=bundles, blobs=blobs, derived=derived, bytes_freed=bbytes + dbytes)

    # -- aliases -------------------------------------------------------------------------------

    async def _move(
        self,
        db: aiosqlite.Connection,
        namespace: str,
        workflow: str,
        alias: str,
        number: int,
        actor: str,
        now: datetime,
        expected: int | None,
        reason: AliasReason,
    ) -> AliasRecord:
        key = (namespace, workflow, alias)
        current = await _all(
            db,
            "SELECT number, generation FROM aliases WHERE namespace = ? AND workflow = ? AND alias = ?",
            key,
        )
        actual = current[0][1] if current else 0
        if expected is not None and expected != actual:
            raise AliasConflictError(namespace, workflow, alias, expected=expected, actual=actual)
        if not current or current[0][0] != number:
            history = await db.execute_fetchall(
                "SELECT COALESCE(MAX(generation), 0) FROM alias_history "
                "WHERE namespace = ? AND workflow = ? AND alias = ?",
                key,
            )
            generation = next(iter(history))[0] + 1
            await db.execute(
                "INSERT INTO aliases (namespace, workflow, alias, number, generation, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, workflow, alias) DO UPDATE SET "
                "number = excluded.number, generation = excluded.generation, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (*key, number, generation, to_micros(now), actor),
            )
            await db.execute(
                "INSERT INTO alias_history "
                "(namespace, workflow, alias, generation, number, previous, actor, at, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, generation, number, current[0][0] if current else None, actor, to_micros(now), reason),
            )
        rows = await db.execute_fetchall(
            _ALIAS_SELECT + "WHERE a.namespace = ? AND a.workflow = ? AND a.alias = ?", key
        )
        return _alias(next(iter(rows)))

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
        async with self._write() as db:
            rows = await db.execute_fetchall(*self._version_query(namespace, workflow, ref))
            found = list(rows)
            if not found:
                raise VersionNotFoundError(namespace, workflow, str(ref))
            number = found[0][2]
            return await self._move(
                db, namespace, workflow, alias, number, actor, now, expected_generation, reason
            )

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
        key = (namespace, workflow, alias)
        async with self._write() as db:
            current = await _all(
                db, "SELECT generation FROM aliases WHERE namespace = ? AND workflow = ? AND alias = ?", key
            )
            if not current:
                raise AliasNotFoundError(namespace, workflow, alias)
            if expected_generation is not None and expected_generation != current[0][0]:
                raise AliasConflictError(
                    namespace, workflow, alias, expected=expected_generation, actual=current[0][0]
                )
            last = await _all(
                db,
                "SELECT previous FROM alias_history WHERE namespace = ? AND workflow = ? AND alias = ? "
                "ORDER BY generation DESC LIMIT 1",
                key,
            )
            previous = last[0][0] if last else None
            if previous is None:
                raise AliasRollbackError(namespace, workflow, alias, "it has not moved since it was created")
            exists = await db.execute_fetchall(
                "SELECT 1 FROM versions WHERE namespace = ? AND workflow = ? AND number = ?",
                (namespace, workflow, previous),
            )
            if not list(exists):
                raise AliasRollbackError(
                    namespace, workflow, alias, f"its previous target, version {previous}, was deleted"
                )
            return await self._move(db, namespace, workflow, alias, previous, actor, now, None, "rollback")

    async def delete_alias(
        self, namespace: str, workflow: str, alias: str, *, actor: str, now: datetime
    ) -> None:
        key = (namespace, workflow, alias)
        async with self._write() as db:
            current = await _all(
                db,
                "SELECT number, generation FROM aliases WHERE namespace = ? AND workflow = ? AND alias = ?",
                key,
            )
            if not current:
                raise AliasNotFoundError(namespace, workflow, alias)
            number, generation = current[0]
            await db.execute("DELETE FROM aliases WHERE namespace = ? AND workflow = ? AND alias = ?", key)
            await db.execute(
                "INSERT INTO alias_history "
                "(namespace, workflow, alias, generation, number, previous, actor, at, reason) "
                "VALUES (?, ?, ?, ?, NULL, ?, ?, ?, 'delete')",
                (*key, generation + 1, number, actor, to_micros(now)),
            )

    async def get_alias(self, namespace: str, workflow: str, alias: str) -> AliasRecord | None:
        rows = await self._rows(
            _ALIAS_SELECT + "WHERE a.namespace = ? AND a.workflow = ? AND a.alias = ?",
            (namespace, workflow, alias),
        )
        return _alias(rows[0]) if rows else None

    async def list_aliases(self, namespace: str, workflow: str) -> list[AliasRecord]:
        rows = await self._rows(
            _ALIAS_SELECT + "WHERE a.namespace = ? AND a.workflow = ? ORDER BY a.alias", (namespace, workflow)
        )
        return [_alias(row) for row in rows]

    async def alias_history(
        self, namespace: str, workflow: str, alias: str, *, limit: int
    ) -> list[AliasEvent]:
        rows = await self._rows(
            "SELECT generation, number, previous, actor, at, reason FROM alias_history "
            "WHERE namespace = ? AND workflow = ? AND alias = ? ORDER BY generation DESC LIMIT ?",
            (namespace, workflow, alias, limit),
        )
        return [
            AliasEvent(
                generation=r[0], number=r[1], previous=r[2], actor=r[3], at=from_micros(r[4]), reason=r[5]
            )
            for r in rows
        ]

    # -- derived forms -------------------------------------------------------------------------

    async def put_derived(
        self, digest: str, backend: str, backend_version: str, sha256: str, data: bytes, *, now: datetime
    ) -> None:
        async with self._write() as db:
            if not await _all(db, "SELECT 1 FROM bundles WHERE digest = ?", (digest,)):
                raise VersionNotFoundError(None, None, digest)
            await db.execute(
                "INSERT OR REPLACE INTO derived "
                "(digest, backend, backend_version, sha256, size, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, backend, backend_version, sha256, len(data), data, to_micros(now)),
            )

    async def get_derived(self, digest: str, backend: str, backend_version: str) -> tuple[str, bytes] | None:
        rows = await self._rows(
            "SELECT sha256, data FROM derived WHERE digest = ? AND backend = ? AND backend_version = ?",
            (digest, backend, backend_version),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            with self._sync_lock:
                self._sync.close()
                self._resolved.clear()
            await self._reader.close()
            await self._writer.close()


class SqliteArtifactStore(ArtifactStore):
    """``ArtifactStore`` on one SQLite file (WAL, busy timeout, versioned schema).

    Several store objects and processes may open the same file; writes serialize on SQLite's lock.
    """

    @classmethod
    async def open(
        cls,
        path: str | Path,
        config: StoreConfig | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> SqliteArtifactStore:
        """Open (creating or migrating) the store at ``path``.

        Raises ``SchemaVersionError`` if the file was written by a newer schema.
        """
        config = config or StoreConfig()
        backend = await SqliteBackend.connect(
            Path(path),
            busy_timeout=config.busy_timeout_seconds,
            resolve_cache_entries=config.resolve_cache_entries,
        )
        return cls(backend, config, clock=clock)
