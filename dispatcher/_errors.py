"""Errors of the dispatcher (the platform layer).

PlatformError                    root
├── AuthenticationError          no or unknown token (HTTP 401)
├── PermissionDeniedError        the token may not do this (HTTP 403)
├── NotFoundError                no such tenant/instance/version for this caller (HTTP 404);
│                                also what another tenant's resources look like: never "forbidden"
├── ConflictError                an id that is already taken (HTTP 409)
├── InvalidRequestError          malformed input; ``field`` names it (HTTP 400)
├── RateLimitedError             the tenant's creation rate was exceeded (HTTP 429)
├── TenantSuspendedError         the tenant is suspended (HTTP 403)
├── EnvelopeError                a stored payload lacks a valid routing envelope
└── DatabaseUnavailableError     the ``--db`` database cannot be reached or used
"""

from __future__ import annotations


class PlatformError(Exception):
    """Root of the dispatcher's errors."""


class AuthenticationError(PlatformError):
    """The request carries no token, or one that is unknown or revoked."""


class PermissionDeniedError(PlatformError):
    """The caller's token does not allow this operation."""


class NotFoundError(PlatformError, LookupError):
    """Nothing by that name exists for this caller."""


class ConflictError(PlatformError):
    """The id is already taken."""


class InvalidRequestError(PlatformError, ValueError):
    """The request is malformed; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RateLimitedError(PlatformError):
    """The tenant creates instances faster than its policy allows."""

    def __init__(self, tenant: str, rate: float, retry_after: float) -> None:
        super().__init__(
            f"tenant {tenant!r} exceeded its instance creation rate of {rate:g}/s; retry in {retry_after:.2f} s"
        )
        self.retry_after = retry_after


class TenantSuspendedError(PlatformError):
    """The tenant is suspended: new instances are refused."""


class EnvelopeError(PlatformError):
    """A stored payload is not a valid routing envelope; no tenant code may run for it."""


class DatabaseUnavailableError(PlatformError):
    """The PostgreSQL database given with ``db`` cannot be reached or used (the DSN shown without password)."""

    def __init__(self, dsn: str, reason: str) -> None:
        super().__init__(f"cannot use the database {dsn}: {reason}")
        self.dsn = dsn
        self.reason = reason
