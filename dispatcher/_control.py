"""The control store: tenants, their policies and API tokens (SQLite).

Tokens are random (``tf_`` + 43 url-safe characters), shown once when created, and stored only as
their sha256 hash. A token belongs to one tenant, or to no tenant (an operator token).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from ._errors import ConflictError, NotFoundError
from ._policy import Tenant, TenantPolicy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    status TEXT NOT NULL,
    policy TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT,
    label TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS control_schema (version INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    id: str
    tenant: str | None
    """None for an operator token."""
    label: str
    created_at: int
    revoked_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "label": self.label, "created_at": self.created_at,
                "revoked": self.revoked_at is not None}  # fmt: skip


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> int:
    return time.time_ns() // 1_000_000


def _tenant(row: sqlite3.Row | tuple[Any, ...]) -> Tenant:
    policy = TenantPolicy.from_json(json.loads(row[3]))
    return Tenant(row[0], row[1], row[2], policy, row[4])


class ControlStore:
    """Tenants and tokens. Open with ``await ControlStore.open(path)``."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str | Path) -> ControlStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.executescript(_SCHEMA)
        return cls(db)

    async def aclose(self) -> None:
        await self._db.close()

    # -- tenants -------------------------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, display_name: str, policy: TenantPolicy) -> Tenant:
        tenant = Tenant(tenant_id, display_name, "active", policy, _now())
        try:
            await self._db.execute(
                "INSERT INTO tenants (id, display_name, status, policy, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant.id, display_name, tenant.status, json.dumps(policy.to_json(include_secrets=True)),
                 tenant.created_at),
            )  # fmt: skip
        except sqlite3.IntegrityError:
            raise ConflictError(f"tenant {tenant_id!r} already exists") from None
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        cursor = await self._db.execute(
            "SELECT id, display_name, status, policy, created_at FROM tenants WHERE id = ?", (tenant_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            raise NotFoundError(f"tenant {tenant_id!r} not found")
        return _tenant(tuple(row))

    async def list_tenants(self) -> list[Tenant]:
        cursor = await self._db.execute(
            "SELECT id, display_name, status, policy, created_at FROM tenants ORDER BY id"
        )
        return [_tenant(tuple(row)) for row in await cursor.fetchall()]

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        policy: TenantPolicy | None = None,
        status: str | None = None,
        display_name: str | None = None,
    ) -> Tenant:
        current = await self.get_tenant(tenant_id)
        await self._db.execute(
            "UPDATE tenants SET policy = ?, status = ?, display_name = ? WHERE id = ?",
            (
                json.dumps((policy or current.policy).to_json(include_secrets=True)),
                status or current.status,
                display_name if display_name is not None else current.display_name,
                tenant_id,
            ),
        )
        return await self.get_tenant(tenant_id)

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(self, tenant: str | None, label: str = "") -> tuple[TokenInfo, str]:
        """A new token; the secret is returned here and never again."""
        secret = "tf_" + secrets.token_urlsafe(32)
        info = TokenInfo("tok_" + secrets.token_hex(8), tenant, label, _now(), None)
        await self._db.execute(
            "INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (info.id, tenant, label, hash_token(secret), info.created_at),
        )
        return info, secret

    async def import_token(self, tenant: str | None, secret: str, label: str) -> TokenInfo:
        """Register a token whose secret the operator chose (e.g. TENANTFLOW_OPERATOR_TOKEN)."""
        cursor = await self._db.execute(
            "SELECT id, tenant, label, created_at, revoked_at FROM tokens WHERE hash = ?",
            (hash_token(secret),),
        )
        row = await cursor.fetchone()
        if row is not None:
            return TokenInfo(*row)
        info = TokenInfo("tok_" + secrets.token_hex(8), tenant, label, _now(), None)
        await self._db.execute(
            "INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (info.id, tenant, label, hash_token(secret), info.created_at),
        )
        return info

    async def authenticate(self, secret: str) -> TokenInfo | None:
        cursor = await self._db.execute(
            "SELECT id, tenant, label, created_at, revoked_at FROM tokens WHERE hash = ? AND revoked_at IS NULL",
            (hash_token(secret),),
        )
        row = await cursor.fetchone()
        return None if row is None else TokenInfo(*row)

    async def list_tokens(self, tenant: str | None = None, *, operators: bool = False) -> list[TokenInfo]:
        if operators:
            cursor = await self._db.execute(
                "SELECT id, tenant, label, created_at, revoked_at FROM tokens WHERE tenant IS NULL ORDER BY created_at"
            )
        else:
            cursor = await self._db.execute(
                "SELECT id, tenant, label, created_at, revoked_at FROM tokens WHERE tenant = ? ORDER BY created_at",
                (tenant,),
            )
        return [TokenInfo(*row) for row in await cursor.fetchall()]

    async def revoke_token(self, token_id: str, *, tenant: str | None = None) -> None:
        """Revoke a token (restricted to ``tenant``'s tokens when given)."""
        sql = "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        args: tuple[Any, ...] = (_now(), token_id)
        if tenant is not None:
            sql += " AND tenant = ?"
            args = (*args, tenant)
        cursor = await self._db.execute(sql, args)
        if cursor.rowcount == 0:
            raise NotFoundError(f"token {token_id!r} not found")
