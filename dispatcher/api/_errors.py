"""The v4 error envelope, stable error codes, and the translation of every exception into one.

Every error response is ``{"success": false, "errors": [{"code", "message", ...}], "messages": [],
"result": null}`` with the HTTP status below. Codes are stable: clients may switch on them.

    code   status  meaning
    10000  401     missing, unknown or revoked bearer token
    10001  400     malformed input; ``field`` names the offending part
    10002  400     the body is not valid JSON (``field`` is ``body``)
    10003  400     a bundle was rejected; one error per problem
    10004  403     the token may not do this
    10005  403     the tenant is suspended
    10006  404     no such thing for this caller (also anything in another tenant)
    10007  405     method not allowed on this path
    10008  409     conflict: the id is taken, or the transition is not possible now
    10009  413     the request body is larger than the server accepts
    10010  429     the tenant exceeded its instance creation rate (see ``Retry-After``)
    10011  500     an unexpected error; the message carries the request id to find it in the log

Exceptions are translated here and only here, so route code raises the platform's own errors.
"""

from __future__ import annotations

import enum
import math
from typing import Any

from starlette.responses import JSONResponse

from artifacts import (
    AliasConflictError,
    AliasNotFoundError,
    AliasRollbackError,
    ArtifactError,
    BundleValidationError,
    InvalidNameError,
    VersionInUseError,
    VersionNotFoundError,
)
from engine import (
    EngineError,
    EngineValidationError,
    InstanceExistsError,
    InstanceNotFoundError,
    InvalidTransitionError,
)

from .._errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PlatformError,
    RateLimitedError,
    TenantSuspendedError,
)


class ErrorCode(enum.IntEnum):
    """Stable error codes of the v4 envelope (see the module docstring)."""

    AUTHENTICATION = 10000
    INVALID_REQUEST = 10001
    INVALID_JSON = 10002
    BUNDLE_REJECTED = 10003
    PERMISSION_DENIED = 10004
    TENANT_SUSPENDED = 10005
    NOT_FOUND = 10006
    METHOD_NOT_ALLOWED = 10007
    CONFLICT = 10008
    PAYLOAD_TOO_LARGE = 10009
    RATE_LIMITED = 10010
    INTERNAL = 10011


class ApiError(Exception):
    """An error the HTTP layer itself detects (body too large, malformed JSON, bad query)."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def bad_request(field: str, message: str) -> ApiError:
    """A 400 naming ``field``."""
    return ApiError(400, ErrorCode.INVALID_REQUEST, f"{field}: {message}", field=field)


def envelope(result: Any, *, result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"success": False, "errors": errors, "messages": [], "result": None}


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    item: dict[str, Any] = {"code": int(code), "message": message}
    if field is not None:
        item["field"] = field
    return JSONResponse(error_body([item]), status_code=status, headers=headers)


def translate(exc: BaseException) -> JSONResponse | None:
    """The v4 response for a known exception, or None for an unexpected one (a 500)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, field=exc.field, headers=exc.headers)
    if isinstance(exc, PlatformError):
        return _platform(exc)
    if isinstance(exc, ArtifactError):
        return _artifact(exc)
    if isinstance(exc, EngineError):
        return _engine(exc)
    return None


def _platform(exc: PlatformError) -> JSONResponse | None:
    if isinstance(exc, AuthenticationError):
        return error_response(401, ErrorCode.AUTHENTICATION, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, TenantSuspendedError):
        return error_response(403, ErrorCode.TENANT_SUSPENDED, str(exc))
    if isinstance(exc, PermissionDeniedError):
        return error_response(403, ErrorCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, NotFoundError):
        return error_response(404, ErrorCode.NOT_FOUND, str(exc))
    if isinstance(exc, ConflictError):
        return error_response(409, ErrorCode.CONFLICT, str(exc))
    if isinstance(exc, InvalidRequestError):
        return error_response(400, ErrorCode.INVALID_REQUEST, str(exc), field=exc.field)
    if isinstance(exc, RateLimitedError):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return error_response(429, ErrorCode.RATE_LIMITED, str(exc), headers={"Retry-After": retry})
    return None


def _artifact(exc: ArtifactError) -> JSONResponse | None:
    if isinstance(exc, BundleValidationError):
        errors = [
            {"code": int(ErrorCode.BUNDLE_REJECTED), "message": str(p), "field": p.path or "bundle"}
            for p in exc.problems
        ] or [{"code": int(ErrorCode.BUNDLE_REJECTED), "message": str(exc)}]
        return JSONResponse(error_body(errors), status_code=400)
    if isinstance(exc, InvalidNameError):
        return error_response(400, ErrorCode.INVALID_REQUEST, str(exc), field=exc.kind)
    if isinstance(exc, VersionNotFoundError | AliasNotFoundError):
        return error_response(404, ErrorCode.NOT_FOUND, str(exc))
    if isinstance(exc, AliasConflictError | AliasRollbackError | VersionInUseError):
        return error_response(409, ErrorCode.CONFLICT, str(exc))
    return None


def _engine(exc: EngineError) -> JSONResponse | None:
    if isinstance(exc, EngineValidationError):
        return error_response(400, ErrorCode.INVALID_REQUEST, str(exc), field=exc.field)
    if isinstance(exc, InstanceNotFoundError):
        return error_response(404, ErrorCode.NOT_FOUND, "instance not found")
    if isinstance(exc, InstanceExistsError | InvalidTransitionError):
        return error_response(409, ErrorCode.CONFLICT, str(exc))
    return None
