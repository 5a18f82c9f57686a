"""PostgreSQL schema (versioned migrations) of the artifact store. Append migrations; never edit one.

Everything lives in one PostgreSQL schema (``search_path``), so several stores (or test runs) can
share a database. Version digests carry the ``sha256:`` prefix, blob digests are bare hex; times
are ``timestamptz``. Keys mirror the SQLite schema: every lookup is a primary-key or unique-index probe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ._errors import SchemaVersionError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: initial schema
    (
        """CREATE TABLE blobs (
            digest TEXT PRIMARY KEY,
            size BIGINT NOT NULL,
            data BYTEA NOT NULL
        )""",
        """CREATE TABLE bundles (
            digest TEXT PRIMARY KEY,
            manifest TEXT NOT NULL,
            size BIGINT NOT NULL,
            file_count INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE bundle_files (
            bundle TEXT NOT NULL REFERENCES bundles(digest),
            path TEXT NOT NULL,
            blob TEXT NOT NULL REFERENCES blobs(digest),
            PRIMARY KEY (bundle, path)
        )""",
        "CREATE INDEX bundle_files_blob ON bundle_files(blob)",
        """CREATE TABLE workflows (
            namespace TEXT NOT NULL,
            workflow TEXT NOT NULL,
            last_number BIGINT NOT NULL,
            PRIMARY KEY (namespace, workflow)
        )""",
        """CREATE TABLE versions (
            namespace TEXT NOT NULL,
            workflow TEXT NOT NULL,
            number BIGINT NOT NULL,
            digest TEXT NOT NULL REFERENCES bundles(digest),
            created_at TIMESTAMPTZ NOT NULL,
            uploader TEXT NOT NULL,
            PRIMARY KEY (namespace, workflow, number),
            UNIQUE (namespace, workflow, digest)
        )""",
        "CREATE INDEX versions_digest ON versions(digest)",
        """CREATE TABLE aliases (
            namespace TEXT NOT NULL,
            workflow TEXT NOT NULL,
            alias TEXT NOT NULL,
            number BIGINT NOT NULL,
            generation BIGINT NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (namespace, workflow, alias)
        )""",
        """CREATE TABLE alias_history (
            namespace TEXT NOT NULL,
            workflow TEXT NOT NULL,
            alias TEXT NOT NULL,
            generation BIGINT NOT NULL,
            number BIGINT,
            previous BIGINT,
            actor TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (namespace, workflow, alias, generation)
        )""",
        """CREATE TABLE derived (
            digest TEXT NOT NULL REFERENCES bundles(digest),
            backend TEXT NOT NULL,
            backend_version TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size BIGINT NOT NULL,
            data BYTEA NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (digest, backend, backend_version)
        )""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

# Advisory lock names, scoped to the store's schema by hashing it into the key.
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tenantflow.artifacts.migrate.' || $1::text))"
GC_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tenantflow.artifacts.gc.' || current_schema()))"
GC_LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(hashtext('tenantflow.artifacts.gc.' || current_schema()))"
)


async def migrate(conn: Any, schema: str) -> None:
    """Create the schema if needed and apply pending migrations, one transaction, under a lock."""
    quoted = '"' + schema.replace('"', '""') + '"'
    async with conn.transaction():
        await conn.execute(MIGRATE_LOCK, schema)  # before CREATE SCHEMA: concurrent creators race
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        await conn.execute(f"SET LOCAL search_path TO {quoted}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
        )
        current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(current, SCHEMA_VERSION)
        for index in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[index]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version VALUES ($1, $2)", index + 1, datetime.now(UTC))
