"""The control store on PostgreSQL: tenants and tokens shared by every API and worker process.

Design note. The tables mirror the SQLite store's (times are epoch ms in BIGINT, the policy stays the
JSON text the SQLite store keeps, so both stores hold byte-identical records). Migrations are
versioned like the engine's: an ordered tuple applied once each, recorded in ``schema_version``
under the component ``control``, all pending ones in one transaction holding an advisory lock keyed
by the schema, so several processes starting at once serialize and the later ones find nothing to do.
``update_tenant`` reads the row ``FOR UPDATE`` so two API processes changing one tenant's policy at
once never lose either change's untouched fields.

Version 2 adds the tenant state that must survive a machine: ``env.kv`` entries (``kv``, with the
per-tenant byte count ``kv_usage`` and the functions ``kv_put``/``kv_delete`` that keep it exact,
see ``_bindings/_kv_pg.py``) and the per-tenant creation-rate buckets (``creation_buckets``).
"""

from __future__ import annotations

from typing import Any

from engine._postgres_schema import apply_migrations
from engine._postgres_schema import check_schema_name as check_schema_name  # re-exported for the platform

from ._control import (
    ControlStore,
    TokenInfo,
    hash_token,
    new_tenant,
    new_token,
    new_token_info,
    now_ms,
    policy_json,
    tenant_from_row,
)
from ._errors import ConflictError, NotFoundError
from ._policy import Tenant, TenantPolicy

COMPONENT = "control"

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants and tokens
    """
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        status TEXT NOT NULL,
        policy TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        tenant TEXT,
        label TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE INDEX ix_tokens_tenant ON tokens (tenant, created_at);
    """,
    # 2: tenant state every machine shares: env.kv entries, their quota accounting, and the
    # creation-rate token buckets (see _bindings/_kv_pg.py and PostgresControlStore.take_creation_tokens)
    """
    CREATE TABLE kv (
        tenant TEXT NOT NULL,
        key BYTEA NOT NULL,
        value TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    );
    CREATE TABLE kv_usage (
        tenant TEXT PRIMARY KEY,
        bytes BIGINT NOT NULL
    );
    CREATE FUNCTION kv_put(p_tenant TEXT, p_key BYTEA, p_value TEXT, p_size INTEGER, p_quota BIGINT,
                           OUT stored BOOLEAN, OUT used BIGINT)
    LANGUAGE plpgsql AS $$
    DECLARE
        old_size INTEGER;
    BEGIN
        -- The usage row is locked first by every writer of the tenant, so its count stays exact.
        SELECT u.bytes INTO used FROM kv_usage u WHERE u.tenant = p_tenant FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO kv_usage (tenant, bytes) VALUES (p_tenant, 0) ON CONFLICT (tenant) DO NOTHING;
            SELECT u.bytes INTO used FROM kv_usage u WHERE u.tenant = p_tenant FOR UPDATE;
        END IF;
        SELECT k.size INTO old_size FROM kv k WHERE k.tenant = p_tenant AND k.key = p_key;
        old_size := COALESCE(old_size, 0);
        IF p_size > old_size AND used + p_size - old_size > p_quota THEN
            stored := FALSE;
            RETURN;
        END IF;
        INSERT INTO kv (tenant, key, value, size) VALUES (p_tenant, p_key, p_value, p_size)
        ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value, size = EXCLUDED.size;
        used := used + p_size - old_size;
        UPDATE kv_usage SET bytes = used WHERE tenant = p_tenant;
        stored := TRUE;
    END
    $$;
    CREATE FUNCTION kv_delete(p_tenant TEXT, p_key BYTEA) RETURNS BOOLEAN
    LANGUAGE plpgsql AS $$
    DECLARE
        old_size INTEGER;
    BEGIN
        PERFORM 1 FROM kv_usage u WHERE u.tenant = p_tenant FOR UPDATE;
        DELETE FROM kv k WHERE k.tenant = p_tenant AND k.key = p_key RETURNING k.size INTO old_size;
        IF NOT FOUND THEN
            RETURN FALSE;
        END IF;
        UPDATE kv_usage SET bytes = bytes - old_size WHERE tenant = p_tenant;
        RETURN TRUE;
    END
    $$;
    CREATE TABLE creation_buckets (
        tenant TEXT PRIMARY KEY,
        tokens DOUBLE PRECISION NOT NULL,
        refilled_at DOUBLE PRECISION NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_TENANT_COLS = "id, display_name, status, policy, created_at"
_TOKEN_COLS = "id, tenant, label, created_at, revoked_at"


_NOW = "extract(epoch FROM clock_timestamp())::float8"
_RATE, _COUNT = "$2::float8", "$3::float8"
_REFILLED = f"LEAST({_RATE}, b.tokens + GREATEST(0, {_NOW} - b.refilled_at) * {_RATE})"
_TAKE_TOKENS = f"""
INSERT INTO creation_buckets AS b (tenant, tokens, refilled_at)
SELECT $1::text, {_RATE} - {_COUNT}, {_NOW} WHERE {_COUNT} <= {_RATE}
ON CONFLICT (tenant) DO UPDATE
SET tokens = {_REFILLED} - {_COUNT}, refilled_at = GREATEST(b.refilled_at, {_NOW})
WHERE {_REFILLED} >= {_COUNT}
RETURNING tokens
"""
"""A token bucket refilling ``$2`` tokens per second up to ``$2`` (one second's burst): takes ``$3``
tokens, or nothing (no row returned)."""
_PEEK_TOKENS = f"SELECT {_REFILLED} FROM creation_buckets b WHERE tenant = $1"


class ControlSchemaError(RuntimeError):
    """The database holds a newer control schema than this tenantflow knows."""


def import_asyncpg() -> Any:
    """asyncpg, or an ImportError saying how to install it (it is the optional ``postgres`` extra)."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError('PostgreSQL support needs asyncpg: pip install "tenantflow[postgres]"') from exc
    return asyncpg


async def migrate(conn: Any, schema: str) -> int:
    """Create ``schema`` if needed and apply the control tables' pending migrations (the engine's
    runner: both components share the schema's ``schema_version`` table)."""
    return await apply_migrations(conn, schema, COMPONENT, MIGRATIONS, ControlSchemaError)


class PostgresControlStore(ControlStore):
    """Tenants and tokens in one PostgreSQL schema. ``await PostgresControlStore.open(dsn, schema=...)``."""

    def __init__(self, pool: Any, schema: str) -> None:
        self._pool = pool
        self.schema = schema
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, schema: str = "tenantflow_control", pool_size: int = 4
    ) -> PostgresControlStore:
        """Connect, creating ``schema`` and migrating it if needed."""
        check_schema_name(schema)
        asyncpg = import_asyncpg()
        settings = {"search_path": schema, "application_name": "tenantflow-control"}
        conn = await asyncpg.connect(dsn, server_settings=settings)
        try:
            await migrate(conn, schema)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, server_settings=settings)
        return cls(pool, schema)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()

    # -- tenants -------------------------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, display_name: str, policy: TenantPolicy) -> Tenant:
        tenant = new_tenant(tenant_id, display_name, policy)
        status = await self._pool.execute(
            f"INSERT INTO tenants ({_TENANT_COLS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            tenant.id, display_name, tenant.status, policy_json(policy), tenant.created_at,
        )  # fmt: skip
        if status.endswith(" 0"):
            raise ConflictError(f"tenant {tenant_id!r} already exists")
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        row = await self._pool.fetchrow(f"SELECT {_TENANT_COLS} FROM tenants WHERE id = $1", tenant_id)
        if row is None:
            raise NotFoundError(f"tenant {tenant_id!r} not found")
        return tenant_from_row(row)

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._pool.fetch(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY id")
        return [tenant_from_row(row) for row in rows]

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        policy: TenantPolicy | None = None,
        status: str | None = None,
        display_name: str | None = None,
    ) -> Tenant:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_TENANT_COLS} FROM tenants WHERE id = $1 FOR UPDATE", tenant_id
            )
            if row is None:
                raise NotFoundError(f"tenant {tenant_id!r} not found")
            current = tenant_from_row(row)
            row = await conn.fetchrow(
                f"UPDATE tenants SET policy = $1, status = $2, display_name = $3 WHERE id = $4 "
                f"RETURNING {_TENANT_COLS}",
                policy_json(policy or current.policy),
                status or current.status,
                display_name if display_name is not None else current.display_name,
                tenant_id,
            )
        return tenant_from_row(row)

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(self, tenant: str | None, label: str = "") -> tuple[TokenInfo, str]:
        info, secret = new_token(tenant, label)
        await self._insert_token(info, secret)
        return info, secret

    async def import_token(self, tenant: str | None, secret: str, label: str) -> TokenInfo:
        info = new_token_info(tenant, label)
        # ON CONFLICT on the hash: two processes importing the same secret at once register it once.
        row = await self._pool.fetchrow(
            f"INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES ($1, $2, $3, $4, $5) "
            f"ON CONFLICT (hash) DO NOTHING RETURNING {_TOKEN_COLS}",
            info.id, tenant, label, hash_token(secret), info.created_at,
        )  # fmt: skip
        if row is None:
            row = await self._pool.fetchrow(
                f"SELECT {_TOKEN_COLS} FROM tokens WHERE hash = $1", hash_token(secret)
            )
        return TokenInfo(*row)

    async def authenticate(self, secret: str) -> TokenInfo | None:
        row = await self._pool.fetchrow(
            f"SELECT {_TOKEN_COLS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL", hash_token(secret)
        )
        return None if row is None else TokenInfo(*row)

    async def list_tokens(self, tenant: str | None = None, *, operators: bool = False) -> list[TokenInfo]:
        if operators:
            rows = await self._pool.fetch(
                f"SELECT {_TOKEN_COLS} FROM tokens WHERE tenant IS NULL ORDER BY created_at, id"
            )
        else:
            rows = await self._pool.fetch(
                f"SELECT {_TOKEN_COLS} FROM tokens WHERE tenant = $1 ORDER BY created_at, id", tenant
            )
        return [TokenInfo(*row) for row in rows]

    async def revoke_token(self, token_id: str, *, tenant: str | None = None) -> None:
        sql = "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        args: tuple[Any, ...] = (now_ms(), token_id)
        if tenant is not None:
            sql += " AND tenant = $3"
            args = (*args, tenant)
        status = await self._pool.execute(sql, *args)
        if status.endswith(" 0"):
            raise NotFoundError(f"token {token_id!r} not found")

    # -- creation rate -------------------------------------------------------------------------

    async def take_creation_tokens(self, tenant: str, rate: float, count: int) -> float | None:
        """Take ``count`` tokens from the tenant's bucket shared by every process; None when taken,
        else the seconds until enough have refilled (nothing is taken then).

        One statement: the row lock orders concurrent callers, and the database's clock (not each
        machine's) measures the refill, so skewed machines agree.
        """
        tokens = await self._pool.fetchval(_TAKE_TOKENS, tenant, float(rate), float(count))
        if tokens is not None:
            return None
        available = await self._pool.fetchval(_PEEK_TOKENS, tenant, float(rate))
        available = float(rate) if available is None else float(available)
        return max(0.0, (count - available) / rate)

    async def _insert_token(self, info: TokenInfo, secret: str) -> None:
        await self._pool.execute(
            "INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            info.id, info.tenant, info.label, hash_token(secret), info.created_at,
        )  # fmt: skip
