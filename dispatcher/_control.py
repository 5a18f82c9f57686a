"""The control store: tenants, their policies and API tokens.

``ControlStore`` is the interface; ``SqliteControlStore`` (here, the embedded default) and
``PostgresControlStore`` (``_control_pg.py``, the scale-out one shared by every API and worker
process) implement it with the same behaviour.

Tokens are random (``tf_`` + 43 url-safe characters), shown once when created, and stored only as
their sha256 hash. A token belongs to one tenant, or to no tenant (an operator token).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_token(tenant: str | None, label: str) -> tuple[TokenInfo, str]:
    """A fresh token record and its secret (shown once)."""
    return new_token_info(tenant, label), "tf_" + secrets.token_urlsafe(32)


def new_token_info(tenant: str | None, label: str) -> TokenInfo:
    return TokenInfo("tok_" + secrets.token_hex(8), tenant, label, now_ms(), None)


def new_tenant(tenant_id: str, display_name: str, policy: TenantPolicy) -> Tenant:
    return Tenant(tenant_id, display_name, "active", policy, now_ms())


def policy_json(policy: TenantPolicy) -> str:
    return json.dumps(policy.to_json(include_secrets=True))


def tenant_from_row(row: Any) -> Tenant:
    """A tenant from ``(id, display_name, status, policy JSON, created_at)``."""
    policy = TenantPolicy.from_json(json.loads(row[3]))
    return Tenant(row[0], row[1], row[2], policy, row[4])


class ControlStore(ABC):
    """Tenants and tokens: the interface every control store implements.

    Errors: ``ConflictError`` (a tenant that exists), ``NotFoundError`` (an unknown tenant or token).
    A store is an async context manager; ``aclose()`` is idempotent.
    """

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def create_tenant(self, tenant_id: str, display_name: str, policy: TenantPolicy) -> Tenant: ...

    @abstractmethod
    async def get_tenant(self, tenant_id: str) -> Tenant: ...

    @abstractmethod
    async def list_tenants(self) -> list[Tenant]: ...

    @abstractmethod
    async def update_tenant(
        self,
        tenant_id: str,
        *,
        policy: TenantPolicy | None = None,
        status: str | None = None,
        display_name: str | None = None,
    ) -> Tenant:
        """Change the given fields atomically; the others keep their current values."""

    @abstractmethod
    async def create_token(self, tenant: str | None, label: str = "") -> tuple[TokenInfo, str]:
        """A new token; the secret is returned here and never again."""

    @abstractmethod
    async def import_token(self, tenant: str | None, secret: str, label: str) -> TokenInfo:
        """Register a token whose secret the operator chose (e.g. TENANTFLOW_OPERATOR_TOKEN)."""

    @abstractmethod
    async def authenticate(self, secret: str) -> TokenInfo | None:
        """The live (unrevoked) token with this secret, or None."""

    @abstractmethod
    async def list_tokens(self, tenant: str | None = None, *, operators: bool = False) -> list[TokenInfo]:
        """Tokens of ``tenant``, or the operator tokens, oldest first."""

    @abstractmethod
    async def revoke_token(self, token_id: str, *, tenant: str | None = None) -> None:
        """Revoke a token (restricted to ``tenant``'s tokens when given)."""


class SqliteControlStore(ControlStore):
    """Tenants and tokens in one SQLite file. Open with ``await SqliteControlStore.open(path)``."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> SqliteControlStore:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.executescript(_SCHEMA)
        return cls(db)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._db.close()

    # -- tenants -------------------------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, display_name: str, policy: TenantPolicy) -> Tenant:
        tenant = new_tenant(tenant_id, display_name, policy)
        try:
            await self._db.execute(
                "INSERT INTO tenants (id, display_name, status, policy, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant.id, display_name, tenant.status, policy_json(policy), tenant.created_at),
            )
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
        return tenant_from_row(tuple(row))

    async def list_tenants(self) -> list[Tenant]:
        cursor = await self._db.execute(
            "SELECT id, display_name, status, policy, created_at FROM tenants ORDER BY id"
        )
        return [tenant_from_row(tuple(row)) for row in await cursor.fetchall()]

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
                policy_json(policy or current.policy),
                status or current.status,
                display_name if display_name is not None else current.display_name,
                tenant_id,
            ),
        )
        return await self.get_tenant(tenant_id)

    # -- tokens --------------------------------------------------------------------------------

    async def create_token(self, tenant: str | None, label: str = "") -> tuple[TokenInfo, str]:
        info, secret = new_token(tenant, label)
        await self._db.execute(
            "INSERT INTO tokens (id, tenant, label, hash, created_at) VALUES (?, ?, ?, ?, ?)",
            (info.id, tenant, label, hash_token(secret), info.created_at),
        )
        return info, secret

    async def import_token(self, tenant: str | None, secret: str, label: str) -> TokenInfo:
        cursor = await self._db.execute(
            "SELECT id, tenant, label, created_at, revoked_at FROM tokens WHERE hash = ?",
            (hash_token(secret),),
        )
        row = await cursor.fetchone()
        if row is not None:
            return TokenInfo(*row)
        info = new_token_info(tenant, label)
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
        sql = "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
        args: tuple[Any, ...] = (now_ms(), token_id)
        if tenant is not None:
            sql += " AND tenant = ?"
            args = (*args, tenant)
        cursor = await self._db.execute(sql, args)
        if cursor.rowcount == 0:
            raise NotFoundError(f"token {token_id!r} not found")
