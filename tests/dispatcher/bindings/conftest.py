"""Fixtures for the binding tests: real SQLite files in tmp_path and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dispatcher._bindings import BindingPolicy, TenantBindings
from sandbox import HostCallError

ALL = frozenset({"kv", "db", "fetch", "secrets"})

MakeBindings = Callable[..., TenantBindings]


@pytest.fixture
def make_bindings(tmp_path: Path) -> Iterator[MakeBindings]:
    """``make_bindings(tenant="acme", **policy_fields)``: bindings on ``tmp_path``, closed afterwards."""
    made: list[TenantBindings] = []

    def make(tenant: str = "acme", **fields: Any) -> TenantBindings:
        fields.setdefault("granted", ALL)
        bindings = TenantBindings(tenant, BindingPolicy(**fields), tmp_path)
        made.append(bindings)
        return bindings

    yield make
    for bindings in made:
        bindings.close()


@pytest.fixture
def env(make_bindings: MakeBindings) -> TenantBindings:
    return make_bindings()


def refusal(bindings: TenantBindings, name: str, args: Any = None) -> HostCallError:
    """The HostCallError a call raises (fails the test if it succeeds)."""
    with pytest.raises(HostCallError) as info:
        bindings.call(name, args)
    return info.value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/hello":
            self._send(200, b"hello", {"Content-Type": "text/plain", "X-Test": "yes"})
        elif url.path == "/echo":
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8"),
            }
            self._send(200, json.dumps(echo).encode(), {"Content-Type": "application/json"})
        elif url.path == "/redirect":
            self._send(int(query.get("status", "302")), b"", {"Location": query["to"]})
        elif url.path == "/big":
            self._send(200, b"x" * int(query["n"]))
        elif url.path == "/stream":
            # No Content-Length: the body ends when the connection closes.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(int(query["chunks"])):
                self.wfile.write(b"y" * 65536)
            self.close_connection = True
        elif url.path == "/slow":
            time.sleep(float(query.get("s", "2")))
            self._send(200, b"late")
        elif url.path == "/binary":
            self._send(200, b"\xff\xfe\x00ok")
        else:
            self._send(404, b"not found")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that stop reading (size caps, timeouts) break the pipe; that is the point


class LocalServer:
    def __init__(self) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="bindings-test-http",
            daemon=True,
        )

    @property
    def entry(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.thread.start()
    yield local
    local.httpd.shutdown()
    local.httpd.server_close()


@pytest.fixture
def other_server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.thread.start()
    yield local
    local.httpd.shutdown()
    local.httpd.server_close()
