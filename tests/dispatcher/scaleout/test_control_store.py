"""The control store behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher import (
    ConflictError,
    ControlStore,
    NotFoundError,
    PostgresControlStore,
    SqliteControlStore,
    TenantPolicy,
)
from dispatcher._control_pg import migrate
from tests.conftest import PgSchema

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlStore]:
    if request.param == "sqlite":
        opened: ControlStore = await SqliteControlStore.open(tmp_path / "control.db")
    else:
        pg: PgSchema = request.getfixturevalue("pg_schema")
        opened = await PostgresControlStore.open(pg.dsn, schema=pg.name)
    async with opened:
        yield opened


async def test_tenants(store: ControlStore) -> None:
    policy = TenantPolicy.from_json({"backend": "restricted"})
    created = await store.create_tenant("acme", "Acme", policy)
    assert created.status == "active"
    with pytest.raises(ConflictError, match="already exists"):
        await store.create_tenant("acme", "again", policy)
    assert await store.get_tenant("acme") == created
    with pytest.raises(NotFoundError):
        await store.get_tenant("nobody")
    await store.create_tenant("beta", "Beta", policy)
    assert [t.id for t in await store.list_tenants()] == ["acme", "beta"]
    changed = await store.update_tenant("acme", status="suspended")
    assert changed.status == "suspended" and changed.display_name == "Acme" and changed.policy == policy
    renamed = await store.update_tenant("acme", display_name="ACME", policy=TenantPolicy())
    assert renamed.status == "suspended" and renamed.display_name == "ACME"
    assert renamed.policy == TenantPolicy()
    with pytest.raises(NotFoundError):
        await store.update_tenant("nobody", status="active")


async def test_tokens(store: ControlStore) -> None:
    info, secret = await store.create_token("acme", "ci")
    assert secret.startswith("tf_") and info.tenant == "acme" and info.revoked_at is None
    assert await store.authenticate(secret) == info
    assert await store.authenticate("tf_wrong") is None
    operator = await store.import_token(None, "tf_chosen", "env")
    assert await store.import_token(None, "tf_chosen", "env again") == operator
    assert [t.id for t in await store.list_tokens(operators=True)] == [operator.id]
    assert [t.id for t in await store.list_tokens("acme")] == [info.id]
    with pytest.raises(NotFoundError):
        await store.revoke_token(info.id, tenant="other")
    await store.revoke_token(info.id, tenant="acme")
    assert await store.authenticate(secret) is None
    with pytest.raises(NotFoundError):
        await store.revoke_token(info.id)
    assert (await store.list_tokens("acme"))[0].revoked_at is not None


async def test_aclose_is_idempotent(store: ControlStore) -> None:
    await store.aclose()
    await store.aclose()


@pytest.mark.postgres
async def test_postgres_migrations_are_versioned_and_safe_to_race(pg_schema: PgSchema) -> None:
    stores = await asyncio.gather(
        *(PostgresControlStore.open(pg_schema.dsn, schema=pg_schema.name) for _ in range(4))
    )
    for opened in stores:
        await opened.aclose()
    import asyncpg

    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        rows = await conn.fetch(
            f"SELECT component, version FROM {pg_schema.name}.schema_version ORDER BY version"
        )
        assert [tuple(r) for r in rows] == [("control", 1), ("control", 2)]
        assert await migrate(conn, pg_schema.name) == 2  # nothing left to apply
        await conn.execute(f"INSERT INTO {pg_schema.name}.schema_version VALUES ('control', 99)")
        with pytest.raises(RuntimeError, match="upgrade tenantflow"):
            await PostgresControlStore.open(pg_schema.dsn, schema=pg_schema.name)
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_a_version_1_schema_upgrades_to_version_2_keeping_its_tenants(pg_schema: PgSchema) -> None:
    import asyncpg

    from dispatcher._control_pg import MIGRATIONS

    conn = await asyncpg.connect(pg_schema.dsn)
    try:  # a database an earlier tenantflow made: migration 1 only, with a tenant in it
        await conn.execute(f"CREATE SCHEMA {pg_schema.name}; SET search_path TO {pg_schema.name}")
        await conn.execute(
            "CREATE TABLE schema_version (component TEXT NOT NULL, version INTEGER NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        await conn.execute(MIGRATIONS[0])
        await conn.execute("INSERT INTO schema_version (component, version) VALUES ('control', 1)")
        await conn.execute("INSERT INTO tenants VALUES ('acme', 'Acme', 'active', '{}', 1)")
    finally:
        await conn.close()
    async with await PostgresControlStore.open(pg_schema.dsn, schema=pg_schema.name) as store:
        assert (await store.get_tenant("acme")).display_name == "Acme"
        assert await store.take_creation_tokens("acme", 1.0, 1) is None  # the new table exists
    conn = await asyncpg.connect(pg_schema.dsn, server_settings={"search_path": pg_schema.name})
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == 2
        assert tuple(await conn.fetchrow("SELECT * FROM kv_put('acme', 'k'::bytea, '1', 66, 1000)")) == (
            True,
            66,
        )
    finally:
        await conn.close()


def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        asyncio.run(PostgresControlStore.open("postgresql://nowhere", schema="Bad-Name"))
