"""Store fixtures: every store test runs on SQLite and on PostgreSQL.

PostgreSQL tests use ``TENANTFLOW_TEST_PG_DSN`` (default: the local server, database ``test``),
each test in a schema of its own that is dropped afterwards; they skip, saying why, when the
server is unreachable.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from artifacts import ArtifactStore, PostgresArtifactStore, SqliteArtifactStore, StoreConfig

PG_DSN = os.environ.get("TENANTFLOW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

OpenStore = Callable[..., Awaitable[ArtifactStore]]
RawSql = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]


async def _probe(dsn: str) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {dsn} is unreachable ({exc.__class__.__name__}: {exc})"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def pg_unreachable() -> str | None:
    return asyncio.run(_probe(PG_DSN))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_unreachable: str | None
) -> AsyncIterator[OpenStore]:
    """Opens store objects on one shared storage (a SQLite file or a PostgreSQL schema)."""
    opened: list[ArtifactStore] = []
    schema = f"test_artifacts_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres" and pg_unreachable:
        pytest.skip(pg_unreachable)

    async def open_one(
        config: StoreConfig | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> ArtifactStore:
        store: ArtifactStore
        if request.param == "sqlite":
            store = await SqliteArtifactStore.open(tmp_path / "artifacts.db", config, clock=clock)
        else:
            store = await PostgresArtifactStore.open(PG_DSN, config, schema=schema, pool_size=4, clock=clock)
        opened.append(store)
        return store

    open_one.kind = request.param  # type: ignore[attr-defined]
    open_one.schema = schema  # type: ignore[attr-defined]
    yield open_one
    for store in opened:
        await store.aclose()
    if request.param == "postgres":
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def store(open_store: OpenStore) -> ArtifactStore:
    return await open_store()


@pytest.fixture
async def raw_sql(open_store: OpenStore, tmp_path: Path) -> RawSql:
    """Run SQL (``?`` placeholders) directly on the store's database, bypassing the store."""
    import sqlite3

    async def run(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if open_store.kind == "sqlite":  # type: ignore[attr-defined]
            db = sqlite3.connect(tmp_path / "artifacts.db", isolation_level=None)
            try:
                return [tuple(row) for row in db.execute(sql, params).fetchall()]
            finally:
                db.close()
        counter = iter(range(1, 1000))
        pg_sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": open_store.schema})  # type: ignore[attr-defined]
        try:
            return [tuple(row) for row in await conn.fetch(pg_sql, *params)]
        finally:
            await conn.close()

    return run


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteArtifactStore]:
    """For tests about SQLite itself, or about validation (which never reaches storage)."""
    opened = await SqliteArtifactStore.open(tmp_path / "artifacts.db")
    yield opened
    await opened.aclose()
