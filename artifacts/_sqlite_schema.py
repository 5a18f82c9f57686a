"""SQLite schema (versioned migrations) and connection setup. Append migrations; never edit one.

Times are integer microseconds since the Unix epoch (UTC). Blob digests are bare hex; version
digests carry the ``sha256:`` prefix. Composite primary keys put the namespace first, so every
lookup the API makes is a primary-key (or unique-index) probe whose cost grows with log(rows),
not with the number of namespaces.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite

from ._errors import SchemaVersionError

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE bundles (
        digest TEXT PRIMARY KEY,
        manifest TEXT NOT NULL,
        size INTEGER NOT NULL,
        file_count INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE bundle_files (
        bundle TEXT NOT NULL REFERENCES bundles(digest),
        path TEXT NOT NULL,
        blob TEXT NOT NULL REFERENCES blobs(digest),
        PRIMARY KEY (bundle, path)
    ) WITHOUT ROWID;
    CREATE INDEX bundle_files_blob ON bundle_files(blob);
    CREATE TABLE workflows (
        namespace TEXT NOT NULL,
        workflow TEXT NOT NULL,
        last_number INTEGER NOT NULL,
        PRIMARY KEY (namespace, workflow)
    ) WITHOUT ROWID;
    CREATE TABLE versions (
        namespace TEXT NOT NULL,
        workflow TEXT NOT NULL,
        number INTEGER NOT NULL,
        digest TEXT NOT NULL REFERENCES bundles(digest),
        created_at INTEGER NOT NULL,
        uploader TEXT NOT NULL,
        PRIMARY KEY (namespace, workflow, number),
        UNIQUE (namespace, workflow, digest)
    ) WITHOUT ROWID;
    CREATE INDEX versions_digest ON versions(digest);
    CREATE TABLE aliases (
        namespace TEXT NOT NULL,
        workflow TEXT NOT NULL,
        alias TEXT NOT NULL,
        number INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (namespace, workflow, alias)
    ) WITHOUT ROWID;
    CREATE TABLE alias_history (
        namespace TEXT NOT NULL,
        workflow TEXT NOT NULL,
        alias TEXT NOT NULL,
        generation INTEGER NOT NULL,
        number INTEGER,
        previous INTEGER,
        actor TEXT NOT NULL,
        at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (namespace, workflow, alias, generation)
    ) WITHOUT ROWID;
    CREATE TABLE derived (
        digest TEXT NOT NULL REFERENCES bundles(digest),
        backend TEXT NOT NULL,
        backend_version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (digest, backend, backend_version)
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def to_micros(dt: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    return (dt - _EPOCH) // _MICRO


def from_micros(us: int) -> datetime:
    return _EPOCH + us * _MICRO


async def connect(path: Path, busy_timeout: float) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await db.close()
        raise
    return db


async def migrate(db: aiosqlite.Connection) -> None:
    # executescript() would COMMIT first; run statements one by one inside our transaction.
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        rows = await db.execute_fetchall("SELECT MAX(version) FROM schema_version")
        current = next(iter(rows))[0] or 0
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(current, SCHEMA_VERSION)
        for index in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[index].split(";"):
                if statement.strip():
                    await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_version VALUES (?, ?)", (index + 1, to_micros(datetime.now(UTC)))
            )
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
