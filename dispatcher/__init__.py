"""The composition root and the only package that knows tenants.

``Platform`` ties the engine, the artifact store and the sandboxes together: tenants and their
policies, tokens, routing envelopes around every persisted payload, version pinning, the warm
sandbox cache, the step bridge and bindings, and authorization of every operation.
"""

from ._cache import CacheKey, CacheStats, WarmCache
from ._control import ControlStore, SqliteControlStore, TokenInfo
from ._control_pg import PostgresControlStore
from ._envelope import ENVELOPE_VERSION, Route, unwrap, wrap
from ._errors import (
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    EnvelopeError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PlatformError,
    RateLimitedError,
    TenantSuspendedError,
)
from ._platform import OPERATOR, Platform, Principal, default_data_dir
from ._policy import BINDINGS, Tenant, TenantPolicy, validate_tenant_id

__all__ = [
    "BINDINGS",
    "ENVELOPE_VERSION",
    "OPERATOR",
    "AuthenticationError",
    "CacheKey",
    "CacheStats",
    "ConflictError",
    "ControlStore",
    "DatabaseUnavailableError",
    "EnvelopeError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "Platform",
    "PlatformError",
    "PostgresControlStore",
    "Principal",
    "RateLimitedError",
    "Route",
    "SqliteControlStore",
    "Tenant",
    "TenantPolicy",
    "TenantSuspendedError",
    "TokenInfo",
    "WarmCache",
    "default_data_dir",
    "unwrap",
    "validate_tenant_id",
    "wrap",
]
