"""Shared test configuration."""

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

# -- PostgreSQL ----------------------------------------------------------------------------------
# Tests of a PostgreSQL backend request ``pg_schema``: the DSN of the test server (see
# ``TENANTFLOW_TEST_PG_DSN``) and a fresh schema name, dropped after the test. When the server is
# unreachable those tests skip and say why. The probe and the drop run in a thread of their own,
# so these fixtures work from sync and async tests alike without touching pytest-asyncio's loop.

PG_DSN_ENV = "TENANTFLOW_TEST_PG_DSN"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"

_T = TypeVar("_T")


def run_in_thread(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a fresh event loop in another thread."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="pg-test-helper")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    value: _T = outcome["value"]
    return value


async def _probe_pg(dsn: str) -> str | None:
    try:
        import asyncpg
    except ImportError:
        return 'asyncpg is not installed (pip install "tenantflow[dev]")'
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


async def _drop_pg_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The test PostgreSQL server's DSN; skips the test when the server is unreachable."""
    dsn = os.environ.get(PG_DSN_ENV, DEFAULT_PG_DSN)
    error = run_in_thread(_probe_pg(dsn))
    if error is not None:
        pytest.skip(f"PostgreSQL not reachable at {dsn}: {error}; set {PG_DSN_ENV}")
    return dsn


@dataclass(frozen=True)
class PgSchema:
    """Where a test keeps its PostgreSQL data."""

    dsn: str
    name: str
    """A fresh schema name (``tf_test_<hex>``), not created yet; dropped after the test."""


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[PgSchema]:
    """A schema of this test's own on the test server, dropped (with everything in it) afterwards."""
    schema = PgSchema(pg_dsn, f"tf_test_{uuid.uuid4().hex[:16]}")
    yield schema
    run_in_thread(_drop_pg_schema(pg_dsn, schema.name))
