"""The ASGI application: routes, exception translation, and a guard that never lets a traceback out.

``create_app(platform)`` serves an already open platform (tests, embedding). ``create_serving_app``
opens the platform in the server's own event loop at startup (the engine's scheduler must live in
the loop that serves requests) and closes it at shutdown.

The guard is a plain ASGI middleware around everything: it gives each request an id (the
``X-Request-Id`` response header), records latency, and turns any unexpected exception into a v4
500 whose message carries the request id, after logging the traceback. Known errors never reach it:
the exception handlers translate them (``_errors.translate``).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from artifacts import ArtifactError
from engine import EngineError

from .._errors import PlatformError
from .._platform import Platform
from . import _cloudflare, _operator
from ._errors import ApiError, ErrorCode, error_body, error_response, translate
from ._http import ApiConfig
from ._metrics import HttpMetrics

log = logging.getLogger("tenantflow.api")


class _Guard:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s %s %s failed", request_id, scope.get("method"), scope.get("path"))
            if not started:
                response = JSONResponse(
                    error_body([{
                        "code": int(ErrorCode.INTERNAL),
                        "message": f"internal error; request id {request_id} (the server log has the details)",
                    }]),
                    status_code=500,
                )  # fmt: skip
                await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(str(scope.get("method", "")), template, status, time.perf_counter() - began)


async def _known_error(request: Request, exc: Exception) -> Response:
    response = translate(exc)
    if response is None:
        raise exc
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, ErrorCode.NOT_FOUND, f"no route {request.url.path}")
    if exc.status_code == 405:
        return error_response(405, ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here",
                              headers=dict(exc.headers or {}))  # fmt: skip
    return error_response(exc.status_code, ErrorCode.INVALID_REQUEST, str(exc.detail))


def _build(
    platform: Platform | None,
    config: ApiConfig,
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]] | None,
) -> Starlette:
    handler: Callable[[Request, Exception], Awaitable[Response]] = _known_error
    app = Starlette(
        routes=[*_cloudflare.routes(), *_operator.routes()],
        exception_handlers={
            ApiError: handler, PlatformError: handler, ArtifactError: handler, EngineError: handler,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )  # fmt: skip
    metrics = HttpMetrics()
    app.state.platform = platform
    app.state.api_config = config
    app.state.http_metrics = metrics
    app.add_middleware(_Guard, metrics=metrics)
    return app


def create_app(platform: Platform, config: ApiConfig | None = None) -> Starlette:
    """The API over an open ``platform`` (its lifetime is the caller's)."""
    return _build(platform, config or ApiConfig(), None)


def create_serving_app(
    open_platform: Callable[[], Awaitable[Platform]],
    config: ApiConfig | None = None,
    *,
    on_ready: Callable[[Platform], Awaitable[Any]] | None = None,
) -> Starlette:
    """The API whose platform is opened at server startup and closed at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        platform = await open_platform()
        app.state.platform = platform
        try:
            if on_ready is not None:
                await on_ready(platform)
            yield
        finally:
            await platform.aclose()

    return _build(None, config or ApiConfig(), lifespan)
