"""Request helpers shared by the routes: configuration, auth, capped body reading, JSON, queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .._platform import Platform, Principal
from ._errors import ApiError, ErrorCode, bad_request, envelope

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Limits of the HTTP layer."""

    max_body_bytes: int = 2 * MiB
    """Largest JSON request body; larger ones get 413 (checked while reading, not after)."""
    max_upload_bytes: int = 6 * MiB
    """Largest bundle upload body."""
    max_per_page: int = 1000
    """Largest ``per_page`` of a listing."""
    default_per_page: int = 50
    """``per_page`` when none is given."""
    public_metrics: bool = True
    """Serve ``/metrics`` without a token (it holds no tenant names, only totals)."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_upload_bytes", "max_per_page", "default_per_page"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ApiConfig.{name} must be a positive integer, got {value!r}")


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def config_of(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.api_config
    return config


async def authenticate(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <token>`` (raises AuthenticationError)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else ""
    return await platform_of(request).authenticate(secret or None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"request body is larger than the {limit} bytes this endpoint accepts",
        field="body",
    )


_MISSING: Any = object()


async def read_json(request: Request, *, default: Any = _MISSING) -> Any:
    """The JSON body (capped by ``max_body_bytes``); ``default`` when the body is empty."""
    raw = await read_body(request, config_of(request).max_body_bytes)
    if not raw.strip():
        if default is _MISSING:
            raise ApiError(400, ErrorCode.INVALID_JSON, "body: a JSON body is required", field="body")
        return default
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "body: must be UTF-8 JSON", field="body") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            ErrorCode.INVALID_JSON,
            f"body: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            field="body",
        ) from None


async def read_object(request: Request, *, default: Any = _MISSING) -> dict[str, Any]:
    body = await read_json(request, default=default)
    if not isinstance(body, dict):
        raise bad_request("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw)) if raw.replace(".", "", 1).isdigit() else int(raw)
    except ValueError:
        raise bad_request(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_request(name, f"must be between {low} and {high}, got {value}")
    return value


def ok(result: Any, *, status: int = 200, result_info: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(envelope(result, result_info=result_info), status_code=status)


def tenant_visible(principal: Principal, tenant_id: str) -> None:
    """Raise NotFound when a tenant token reaches for another tenant (for store calls Platform lacks)."""
    from .._errors import NotFoundError

    if not principal.is_operator and principal.tenant != tenant_id:
        raise NotFoundError(f"tenant {tenant_id!r} not found")
