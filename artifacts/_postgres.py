"""PostgreSQL storage (asyncpg): the scale-out backend, shared by workers on many machines.

Design note. SQLite serializes every write with one database lock; PostgreSQL needs explicit
locks for the same guarantees. Every transaction that allocates a version number or moves an alias
first locks the workflow's counter row (``SELECT ... FOR UPDATE``, creating the row if needed), so
uploads and alias moves of one workflow serialize while different workflows proceed in parallel.
Garbage collection takes an exclusive advisory lock that uploads and derived-form writes share, so
it never deletes a blob an in-flight upload is about to reference. Reads are single statements.

Resolve is deliberately not cached here (SQLite caches it, see ``_sqlite.py``). A cache is only
correct with an invalidation signal that cannot be missed: checking a per-namespace generation
costs the same round trip as the indexed read it would save, and LISTEN/NOTIFY leaves a window
between another machine's commit and the notification's arrival (and a lost connection loses
notifications), in which a resolve would return the alias's old target after the move was
acknowledged. An alias move must be visible to the next resolve on every machine, so each resolve
reads the database. Bundles and derived forms, immutable per digest, are kept in memory for every
backend (``_store.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from ._backend import NewBundle, StorageBackend, StoredFile
from ._config import StoreConfig
from ._digest import Ref, blob_digest
from ._errors import (
    AliasConflictError,
    AliasNotFoundError,
    AliasRollbackError,
    VersionInUseError,
    VersionNotFoundError,
)
from ._manifest import Manifest
from ._postgres_schema import GC_LOCK, GC_LOCK_SHARED, migrate
from ._records import AliasEvent, AliasReason, AliasRecord, GcResult, Version, WorkflowInfo
from ._store import ArtifactStore

_VERSION_COLS = (
    "v.namespace, v.workflow, v.number, v.digest, v.created_at, v.uploader, b.size, b.file_count, b.manifest"
)
_VERSION_SELECT = f"SELECT {_VERSION_COLS} FROM versions v JOIN bundles b ON b.digest = v.digest "
_ALIAS_SELECT = (
    "SELECT a.namespace, a.workflow, a.alias, a.number, v.digest, a.generation, a.updated_at, a.updated_by "
    "FROM aliases a JOIN versions v "
    "ON v.namespace = a.namespace AND v.workflow = a.workflow AND v.number = a.number "
)
_KEY = "namespace = $1 AND workflow = $2 AND alias = $3"


def _version(row: Any) -> Version:
    return Version(
        namespace=row[0],
        workflow=row[1],
        number=row[2],
        digest=row[3],
        created_at=row[4],
        uploader=row[5],
        size=row[6],
        file_count=row[7],
        manifest=Manifest.from_json(row[8]),
    )


def _alias(row: Any) -> AliasRecord:
    return AliasRecord(*row)


class PostgresBackend(StorageBackend):
    """``StorageBackend`` on PostgreSQL through an asyncpg pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    @classmethod
    async def connect(cls, dsn: str, *, schema: str, pool_size: int, lock_timeout: float) -> PostgresBackend:
        # Imported here: asyncpg is the optional "postgres" extra, and SQLite users need not install it.
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, schema)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            # lock_timeout plays the part of SQLite's busy timeout for writers waiting on each other
            server_settings={"search_path": schema, "lock_timeout": str(int(lock_timeout * 1000))},
        )
        return cls(pool)

    @asynccontextmanager
    async def _tx(self, *, gc_shared: bool = False) -> AsyncIterator[Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            if gc_shared:
                await conn.execute(GC_LOCK_SHARED)
            yield conn

    @staticmethod
    async def _lock_workflow(conn: Any, namespace: str, workflow: str) -> None:
        await conn.execute(
            "INSERT INTO workflows (namespace, workflow, last_number) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
            namespace,
            workflow,
        )
        await conn.execute(
            "SELECT 1 FROM workflows WHERE namespace = $1 AND workflow = $2 FOR UPDATE", namespace, workflow
        )

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
        async with self._tx(gc_shared=True) as conn:
            await self._lock_workflow(conn, namespace, workflow)
            # Rows are always touched in digest order, so concurrent uploads sharing blobs cannot deadlock.
            existing = await conn.fetch(
                "SELECT digest, data FROM blobs WHERE digest = ANY($1::text[]) ORDER BY digest", sorted(blobs)
            )
            present = {row[0] for row in existing}
            for row in existing:
                if blob_digest(row[1]) != row[0]:  # heal a corrupted copy
                    data = blobs[row[0]]
                    await conn.execute(
                        "UPDATE blobs SET data = $1, size = $2 WHERE digest = $3", data, len(data), row[0]
                    )
            await conn.executemany(
                "INSERT INTO blobs (digest, size, data) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING",
                [(b, len(d), d) for b, d in sorted(blobs.items()) if b not in present],
            )
            await conn.execute(
                "INSERT INTO bundles (digest, manifest, size, file_count, created_at) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (digest) DO NOTHING",
                bundle.digest,
                bundle.manifest_json,
                bundle.size,
                len(bundle.files),
                now,
            )
            await conn.executemany(
                "INSERT INTO bundle_files (bundle, path, blob) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [(bundle.digest, path, blob) for path, (blob, _) in sorted(bundle.files.items())],
            )
            number = await conn.fetchval(
                "SELECT number FROM versions WHERE namespace = $1 AND workflow = $2 AND digest = $3",
                namespace,
                workflow,
                bundle.digest,
            )
            created = number is None
            if number is None:
                number = await conn.fetchval(
                    "UPDATE workflows SET last_number = last_number + 1 "
                    "WHERE namespace = $1 AND workflow = $2 RETURNING last_number",
                    namespace,
                    workflow,
                )
                await conn.execute(
                    "INSERT INTO versions (namespace, workflow, number, digest, created_at, uploader) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    namespace,
                    workflow,
                    number,
                    bundle.digest,
                    now,
                    uploader,
                )
            for alias in aliases:
                await self._move(conn, namespace, workflow, alias, number, uploader, now, None, "upload")
            row = await conn.fetchrow(
                _VERSION_SELECT + "WHERE v.namespace = $1 AND v.workflow = $2 AND v.number = $3",
                namespace,
                workflow,
                number,
            )
            return _version(row), created

    @staticmethod
    def _version_query(namespace: str, workflow: str, ref: Ref) -> tuple[str, tuple[Any, ...]]:
        if ref.number is not None:
            return _VERSION_SELECT + "WHERE v.namespace = $1 AND v.workflow = $2 AND v.number = $3", (
                namespace,
                workflow,
                ref.number,
            )
        if ref.digest is not None:
            return _VERSION_SELECT + "WHERE v.namespace = $1 AND v.workflow = $2 AND v.digest = $3", (
                namespace,
                workflow,
                ref.digest,
            )
        sql = (
            f"SELECT {_VERSION_COLS} FROM aliases a "
            "JOIN versions v ON v.namespace = a.namespace AND v.workflow = a.workflow AND v.number = a.number "
            "JOIN bundles b ON b.digest = v.digest "
            "WHERE a.namespace = $1 AND a.workflow = $2 AND a.alias = $3"
        )
        return sql, (namespace, workflow, ref.alias)

    async def find_version(self, namespace: str, workflow: str, ref: Ref) -> Version | None:
        sql, params = self._version_query(namespace, workflow, ref)
        row = await self._pool.fetchrow(sql, *params)
        return None if row is None else _version(row)

    async def list_versions(
        self, namespace: str, workflow: str, *, limit: int, before: int | None
    ) -> list[Version]:
        rows = await self._pool.fetch(
            _VERSION_SELECT + "WHERE v.namespace = $1 AND v.workflow = $2 AND v.number < $3 "
            "ORDER BY v.number DESC LIMIT $4",
            namespace,
            workflow,
            before if before is not None else 2**62,
            limit,
        )
        return [_version(row) for row in rows]

    async def list_workflows(self, namespace: str) -> list[WorkflowInfo]:
        rows = await self._pool.fetch(
            "SELECT workflow, COUNT(*), MAX(number) FROM versions WHERE namespace = $1 "
            'GROUP BY workflow ORDER BY workflow COLLATE "C"',
            namespace,
        )
        return [WorkflowInfo(workflow=r[0], versions=r[1], latest_number=r[2]) for r in rows]

    async def load_bundle(self, digest: str) -> tuple[str, list[StoredFile]] | None:
        rows = await self._pool.fetch(
            "SELECT b.manifest, f.path, f.blob, bl.data FROM bundles b "
            "JOIN bundle_files f ON f.bundle = b.digest LEFT JOIN blobs bl ON bl.digest = f.blob "
            "WHERE b.digest = $1",
            digest,
        )
        if not rows:
            return None
        return rows[0][0], [StoredFile(path=r[1], blob=r[2], data=r[3]) for r in rows]

    async def delete_version(self, namespace: str, workflow: str, number: int) -> None:
        async with self._tx() as conn:
            await self._lock_workflow(conn, namespace, workflow)
            digest = await conn.fetchval(
                "SELECT digest FROM versions WHERE namespace = $1 AND workflow = $2 AND number = $3",
                namespace,
                workflow,
                number,
            )
            if digest is None:
                raise VersionNotFoundError(namespace, workflow, str(number))
            pointing = await conn.fetch(
                "SELECT alias FROM aliases WHERE namespace = $1 AND workflow = $2 AND number = $3 "
                'ORDER BY alias COLLATE "C"',
                namespace,
                workflow,
                number,
            )
            if pointing:
                raise VersionInUseError(namespace, workflow, number, digest, aliases=[r[0] for r in pointing])
            await conn.execute(
                "DELETE FROM versions WHERE namespace = $1 AND workflow = $2 AND number = $3",
                namespace,
                workflow,
                number,
            )

    async def collect_garbage(self) -> GcResult:
        unused = "SELECT digest FROM bundles WHERE digest NOT IN (SELECT digest FROM versions)"
        async with self._tx() as conn:
            await conn.execute(GC_LOCK)
            derived, dbytes = await conn.fetchrow(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM derived WHERE digest IN ({unused})"
            )
            await conn.execute(f"DELETE FROM derived WHERE digest IN ({unused})")
            await conn.execute(f"DELETE FROM bundle_files WHERE bundle IN ({unused})")
            status = await conn.execute(
                "DELETE FROM bundles WHERE digest NOT IN (SELECT digest FROM versions)"
            )
            orphans = "FROM blobs WHERE digest NOT IN (SELECT blob FROM bundle_files)"
            blobs, bbytes = await conn.fetchrow(f"SELECT COUNT(*), COALESCE(SUM(size), 0) {orphans}")
            await conn.execute(f"DELETE {orphans}")
        return GcResult(
            bundles=int(status.split()[-1]), blobs=blobs, derived=derived, bytes_freed=int(bbytes + dbytes)
        )

    # -- aliases -------------------------------------------------------------------------------

    async def _move(
        self,
        conn: Any,
        namespace: str,
        workflow: str,
        alias: str,
        number: int,
        actor: str,
        now: datetime,
        expected: int | None,
        reason: AliasReason,
    ) -> AliasRecord:
        """Move an alias; the caller holds the workflow lock."""
        key = (namespace, workflow, alias)
        current = await conn.fetchrow(f"SELECT number, generation FROM aliases WHERE {_KEY}", *key)
        actual = current[1] if current else 0
        if expected is not None and expected != actual:
            raise AliasConflictError(namespace, workflow, alias, expected=expected, actual=actual)
        if current is None or current[0] != number:
            last = await conn.fetchval(
                f"SELECT COALESCE(MAX(generation), 0) FROM alias_history WHERE {_KEY}", *key
            )
            generation = last + 1
            await conn.execute(
                "INSERT INTO aliases (namespace, workflow, alias, number, generation, updated_at, updated_by) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (namespace, workflow, alias) DO UPDATE SET "
                "number = excluded.number, generation = excluded.generation, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                *key,
                number,
                generation,
                now,
                actor,
            )
            await conn.execute(
                "INSERT INTO alias_history "
                "(namespace, workflow, alias, generation, number, previous, actor, at, reason) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                *key,
                generation,
                number,
                current[0] if current else None,
                actor,
                now,
                reason,
            )
        row = await conn.fetchrow(
            _ALIAS_SELECT + "WHERE a.namespace = $1 AND a.workflow = $2 AND a.alias = $3", *key
        )
        return _alias(row)

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
        async with self._tx() as conn:
            await self._lock_workflow(conn, namespace, workflow)
            sql, params = self._version_query(namespace, workflow, ref)
            found = await conn.fetchrow(sql, *params)
            if found is None:
                raise VersionNotFoundError(namespace, workflow, str(ref))
            return await self._move(
                conn, namespace, workflow, alias, found[2], actor, now, expected_generation, reason
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
        async with self._tx() as conn:
            await self._lock_workflow(conn, namespace, workflow)
            generation = await conn.fetchval(f"SELECT generation FROM aliases WHERE {_KEY}", *key)
            if generation is None:
                raise AliasNotFoundError(namespace, workflow, alias)
            if expected_generation is not None and expected_generation != generation:
                raise AliasConflictError(
                    namespace, workflow, alias, expected=expected_generation, actual=generation
                )
            previous = await conn.fetchval(
                f"SELECT previous FROM alias_history WHERE {_KEY} ORDER BY generation DESC LIMIT 1", *key
            )
            if previous is None:
                raise AliasRollbackError(namespace, workflow, alias, "it has not moved since it was created")
            exists = await conn.fetchval(
                "SELECT 1 FROM versions WHERE namespace = $1 AND workflow = $2 AND number = $3",
                namespace,
                workflow,
                previous,
            )
            if exists is None:
                raise AliasRollbackError(
                    namespace, workflow, alias, f"its previous target, version {previous}, was deleted"
                )
            return await self._move(conn, namespace, workflow, alias, previous, actor, now, None, "rollback")

    async def delete_alias(
        self, namespace: str, workflow: str, alias: str, *, actor: str, now: datetime
    ) -> None:
        key = (namespace, workflow, alias)
        async with self._tx() as conn:
            await self._lock_workflow(conn, namespace, workflow)
            current = await conn.fetchrow(f"SELECT number, generation FROM aliases WHERE {_KEY}", *key)
            if current is None:
                raise AliasNotFoundError(namespace, workflow, alias)
            await conn.execute(f"DELETE FROM aliases WHERE {_KEY}", *key)
            await conn.execute(
                "INSERT INTO alias_history "
                "(namespace, workflow, alias, generation, number, previous, actor, at, reason) "
                "VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, 'delete')",
                *key,
                current[1] + 1,
                current[0],
                actor,
                now,
            )

    async def get_alias(self, namespace: str, workflow: str, alias: str) -> AliasRecord | None:
        row = await self._pool.fetchrow(
            _ALIAS_SELECT + "WHERE a.namespace = $1 AND a.workflow = $2 AND a.alias = $3",
            namespace,
            workflow,
            alias,
        )
        return None if row is None else _alias(row)

    async def list_aliases(self, namespace: str, workflow: str) -> list[AliasRecord]:
        rows = await self._pool.fetch(
            _ALIAS_SELECT + 'WHERE a.namespace = $1 AND a.workflow = $2 ORDER BY a.alias COLLATE "C"',
            namespace,
            workflow,
        )
        return [_alias(row) for row in rows]

    async def alias_history(
        self, namespace: str, workflow: str, alias: str, *, limit: int
    ) -> list[AliasEvent]:
        rows = await self._pool.fetch(
            "SELECT generation, number, previous, actor, at, reason FROM alias_history "
            f"WHERE {_KEY} ORDER BY generation DESC LIMIT $4",
            namespace,
            workflow,
            alias,
            limit,
        )
        return [AliasEvent(*row) for row in rows]

    # -- derived forms -------------------------------------------------------------------------

    async def put_derived(
        self, digest: str, backend: str, backend_version: str, sha256: str, data: bytes, *, now: datetime
    ) -> None:
        async with self._tx(gc_shared=True) as conn:
            if await conn.fetchval("SELECT 1 FROM bundles WHERE digest = $1", digest) is None:
                raise VersionNotFoundError(None, None, digest)
            await conn.execute(
                "INSERT INTO derived (digest, backend, backend_version, sha256, size, data, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest, backend, backend_version) DO UPDATE SET "
                "sha256 = excluded.sha256, size = excluded.size, data = excluded.data, created_at = excluded.created_at",
                digest,
                backend,
                backend_version,
                sha256,
                len(data),
                data,
                now,
            )

    async def get_derived(self, digest: str, backend: str, backend_version: str) -> tuple[str, bytes] | None:
        row = await self._pool.fetchrow(
            "SELECT sha256, data FROM derived WHERE digest = $1 AND backend = $2 AND backend_version = $3",
            digest,
            backend,
            backend_version,
        )
        return None if row is None else (row[0], row[1])

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()


class PostgresArtifactStore(ArtifactStore):
    """``ArtifactStore`` on PostgreSQL: all tables in one schema, shared by many processes."""

    @classmethod
    async def open(
        cls,
        dsn: str,
        config: StoreConfig | None = None,
        *,
        schema: str = "tenantflow_artifacts",
        pool_size: int = 10,
        clock: Callable[[], datetime] | None = None,
    ) -> PostgresArtifactStore:
        """Connect, creating ``schema`` and migrating it if needed (``SchemaVersionError`` if newer)."""
        config = config or StoreConfig()
        backend = await PostgresBackend.connect(
            dsn, schema=schema, pool_size=pool_size, lock_timeout=config.busy_timeout_seconds
        )
        return cls(backend, config, clock=clock)
