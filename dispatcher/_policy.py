"""Tenants and their policies."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sandbox import Limits

from ._errors import InvalidRequestError

BINDINGS = frozenset({"kv", "db", "fetch", "secrets"})
"""Bindings a policy may grant (``env.log`` and ``print`` are always available)."""
_LIMIT_FIELDS = ("memory_bytes", "cpu_seconds", "wall_seconds", "output_bytes", "result_bytes", "host_calls")
_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}", re.ASCII)
_HOST = re.compile(
    r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?", re.ASCII
)
MiB = 1024 * 1024


def validate_tenant_id(value: object) -> str:
    """Tenant ids follow the instance id rules: ``^[a-zA-Z0-9_][a-zA-Z0-9-_]*$``, at most 100 chars."""
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidRequestError(
            "tenant id",
            f"{value!r} is invalid: use 1-100 letters, digits, '_' and '-', not starting with '-'",
        )
    return value


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What a tenant may do and use. Every limit is finite by default."""

    backend: Literal["wasm", "restricted"] = "wasm"
    """Sandbox backend for the tenant's code."""
    limits: dict[str, float] = field(default_factory=dict)
    """Overrides of the sandbox limits (memory_bytes, cpu_seconds, wall_seconds, output_bytes,
    result_bytes, host_calls)."""
    bindings: frozenset[str] = frozenset()
    """Granted bindings among kv, db, fetch, secrets. A scale-out (PostgreSQL) platform refuses to
    grant db: its SQLite database would stay on one machine (use kv, which every machine shares)."""
    fetch_allowlist: tuple[str, ...] = ()
    """Hosts ``env.fetch`` may reach (``api.example.com``, ``*.example.com``, ``127.0.0.1:8080``).
    Loopback and private addresses are refused unless listed literally."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Read-only values for ``env.secrets``; never returned by any API or logged."""
    max_concurrent_instances: int = 100
    """Instances of this tenant running at once (across the engine)."""
    creation_rate: float = 100.0
    """Instances this tenant may create per second (token bucket; bursts up to one second's worth).
    On PostgreSQL the bucket is in the database: the rate holds across every API process."""
    retention_seconds: int = 7 * 86_400
    """How long finished instances are kept."""
    storage_quota_bytes: int = 10 * MiB
    """Size cap of the tenant's kv/db data: the SQLite file's size (embedded), or on PostgreSQL the
    sum over kv entries of UTF-8 key + JSON value + 64 bytes, counted across every machine."""
    fetch_timeout_seconds: float = 10.0
    """Timeout of one env.fetch call."""
    fetch_max_response_bytes: int = 1 * MiB
    """Largest env.fetch response body."""
    log_bytes: int = 64 * 1024
    """env.log text kept per instance."""

    @property
    def sandbox_limits(self) -> Limits:
        return Limits().override(**self.limits)

    @classmethod
    def from_json(cls, data: Any, base: TenantPolicy | None = None) -> TenantPolicy:
        """Parse a policy (or a partial update of ``base``) from JSON, naming any bad field."""
        if not isinstance(data, dict):
            raise InvalidRequestError("policy", "must be a JSON object")
        policy = base or cls()
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise InvalidRequestError("policy", f"unknown fields {sorted(unknown)}; known: {sorted(known)}")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            changes[key] = _parse_field(key, value)
        return replace(policy, **changes)

    def to_json(self, *, include_secrets: bool = False) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "limits": dict(self.limits),
            "bindings": sorted(self.bindings),
            "fetch_allowlist": list(self.fetch_allowlist),
            "secrets": dict(self.secrets) if include_secrets else sorted(self.secrets),
            "max_concurrent_instances": self.max_concurrent_instances,
            "creation_rate": self.creation_rate,
            "retention_seconds": self.retention_seconds,
            "storage_quota_bytes": self.storage_quota_bytes,
            "fetch_timeout_seconds": self.fetch_timeout_seconds,
            "fetch_max_response_bytes": self.fetch_max_response_bytes,
            "log_bytes": self.log_bytes,
        }


def _positive(key: str, value: Any, *, integer: bool = True) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise InvalidRequestError(f"policy.{key}", f"must be {kind}, got {value!r}")
    return value


def _parse_field(key: str, value: Any) -> Any:
    if key == "backend":
        if value not in ("wasm", "restricted"):
            raise InvalidRequestError("policy.backend", f"must be 'wasm' or 'restricted', got {value!r}")
        return value
    if key == "limits":
        if not isinstance(value, dict):
            raise InvalidRequestError("policy.limits", "must be an object")
        unknown = set(value) - set(_LIMIT_FIELDS)
        if unknown:
            raise InvalidRequestError(
                "policy.limits", f"unknown limits {sorted(unknown)}; known: {list(_LIMIT_FIELDS)}"
            )
        for name, limit in value.items():
            _positive(f"limits.{name}", limit, integer=name in ("memory_bytes", "output_bytes", "result_bytes",
                                                                 "host_calls"))  # fmt: skip
        try:
            Limits().override(**value)
        except ValueError as exc:
            raise InvalidRequestError("policy.limits", str(exc)) from None
        return dict(value)
    if key == "bindings":
        if not isinstance(value, list | tuple | set | frozenset) or not all(
            isinstance(b, str) for b in value
        ):
            raise InvalidRequestError("policy.bindings", "must be a list of binding names")
        unknown = set(value) - BINDINGS
        if unknown:
            raise InvalidRequestError(
                "policy.bindings", f"unknown bindings {sorted(unknown)}; known: {sorted(BINDINGS)}"
            )
        return frozenset(value)
    if key == "fetch_allowlist":
        if not isinstance(value, list | tuple) or not all(isinstance(h, str) for h in value):
            raise InvalidRequestError("policy.fetch_allowlist", "must be a list of host names")
        hosts = tuple(h.lower() for h in value)
        for host in hosts:
            if _HOST.fullmatch(host) is None:
                raise InvalidRequestError(
                    "policy.fetch_allowlist", f"{host!r} is not a host name or host:port"
                )
        return hosts
    if key == "secrets":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise InvalidRequestError("policy.secrets", "must be an object of string names to string values")
        for name in value:
            if not name.isidentifier():
                raise InvalidRequestError(
                    "policy.secrets", f"secret name {name!r} must be a valid identifier"
                )
        return dict(value)
    if key in ("creation_rate", "fetch_timeout_seconds"):
        return float(_positive(key, value, integer=False))
    return _positive(key, value)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant of the platform."""

    id: str
    display_name: str
    status: Literal["active", "suspended"]
    policy: TenantPolicy
    created_at: int
    """Epoch ms."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "display_name": self.display_name,
            "status": self.status,
            "policy": self.policy.to_json(),
            "created_at": self.created_at,
        }
