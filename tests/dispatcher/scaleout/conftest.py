"""Scale-out test helpers: a PostgreSQL schema prefix of the test's own, dropped afterwards.

A platform on PostgreSQL keeps its stores in ``<prefix>_engine``, ``<prefix>_artifacts`` and
``<prefix>_control``; ``pg_prefix`` hands out a fresh prefix and drops all three after the test.
Tests skip with the reason when the server is unreachable (see ``pg_dsn`` in tests/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import run_in_thread


@dataclass(frozen=True)
class PgPrefix:
    dsn: str
    prefix: str

    @property
    def schemas(self) -> list[str]:
        return [f"{self.prefix}_{part}" for part in ("engine", "artifacts", "control")]


async def _drop(dsn: str, schemas: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def pg_prefix(pg_dsn: str) -> Iterator[PgPrefix]:
    prefix = PgPrefix(pg_dsn, f"tf_test_{uuid.uuid4().hex[:12]}")
    yield prefix
    run_in_thread(_drop(pg_dsn, prefix.schemas))
