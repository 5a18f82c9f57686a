"""The control store on PostgreSQL: tenants and tokens shared by every API and worker process.

Design note. The tables mirror the SQLite store's (times are epoch ms in BIGINT, the policy stays the
JSON text the SQLite store keeps, so both stores hold byte-identical records). Migrations are
versioned like the engine's: an ordered tuple applied once each, recorded in ``schema_version``
under the component ``control``, all pending ones in one transaction holding an advisory lock keyed
by the schema, so several processes starting at once serialize and the later ones find nothing to do.
``update_tenant`` reads the row ``FOR UPDATE`` so two API processes changing one tenant's policy at
once never lose either change's untouched fields.
"""

from __future__ import annotations

import re
from typing import Any

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
)
SCHEMA_VERSION = len(MIGRATIONS)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TENANT_COLS = "id, display_name, status, policy, created_at"
_TOKEN_COLS = "id, tenant, label, created_at, revoked_at"


class ControlSchemaError(RuntimeError):
    """The database holds a newer control schema than this tenantflow knows."""


def check_schema_name(schema: str) -> str:
    """A plain lower-case identifier only, so it never needs quoting in SQL or ``search_path``."""
    if not isinstance(schema, str) or _SCHEMA_NAME.fullmatch(schema) is None:
        raise ValueError(
            f"PostgreSQL schema name {schema!r} is invalid: use 1 to 63 lower-case letters, digits "
            "and '_', not starting with a digit"
        )
    return schema


def import_asyncpg() -> Any:
    """asyncpg, or an ImportError saying how to install it (it is the optional ``postgres`` extra)."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError('PostgreSQL support needs asyncpg: pip install "tenantflow[postgres]"') from exc
    return asyncpg


async def migrate(conn: Any, schema: str) -> int:
    """Create ``schema`` if needed and apply the pending migrations; returns the version reached."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"tenantflow:migrate:{schema}"
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (component TEXT NOT NULL, version INTEGER NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        current: int = await conn.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version WHERE component = $1", COMPONENT
        )
        if current > SCHEMA_VERSION:
            raise ControlSchemaError(
                f"PostgreSQL schema {schema!r} has control schema version {current}, newer than this "
                f"tenantflow ({SCHEMA_VERSION}); upgrade tenantflow"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute(
                "INSERT INTO schema_version (component, version) VALUES ($1, $2)", COMPONENT, version
            )
    return SCHEMA_VERSION


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

    async def _insert_token(self, info: TokenInfo, secret: str) -> None:
        await self._pool.execute(
            "INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            info.id, info.tenant, info.label, hash_token(secret), info.created_at,
        )  # fmt: skip
