"""Schemathesis against a real uvicorn server on 127.0.0.1: every operation of the served OpenAPI
document, with generated paths, queries and bodies, authenticated with a real operator token.
The server must never answer 5xx. Bounded (``MAX_EXAMPLES`` per operation) to keep CI fast.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from dispatcher import OPERATOR, Platform
from dispatcher.api import create_app
from dispatcher.api._openapi import document
from sandbox import create_backend

MAX_EXAMPLES = 30
FLOW = "def run(event, step):\n    return step.do('echo', lambda: event['payload'])\n"
schema = schemathesis.openapi.from_dict(document())
SENT = {"requests": 0}
PINNED = {"account_id": "acme", "tenant": "acme", "name": "flow", "workflow": "flow", "instance_id": "i1"}


class _Server:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.ready = threading.Event()
        self.token = ""
        self.port = 0
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None

    async def _main(self) -> None:
        backend = create_backend("inprocess")
        platform = await Platform.open(self.data, backends={"wasm": backend, "restricted": backend})
        try:
            self.token = await platform.ensure_operator_token() or ""
            await platform.create_tenant(OPERATOR, "acme")
            await platform.deploy(OPERATOR, "acme", FLOW.encode(), filename="main.py", workflow="flow")
            await platform.create_instance(OPERATOR, "acme", "flow", {"n": 1}, instance_id="i1")
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            config = uvicorn.Config(create_app(platform), host="127.0.0.1", port=self.port, log_level="error",
                                    lifespan="off")  # fmt: skip
            self.server = uvicorn.Server(config)
            serving = asyncio.create_task(self.server.serve())
            while not self.server.started:
                await asyncio.sleep(0.01)
            self.ready.set()
            await serving
        finally:
            await platform.aclose()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
            self.ready.set()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    server = _Server(tmp_path_factory.mktemp("api") / "data")
    thread = threading.Thread(target=server.run, name="uvicorn-under-test", daemon=True)
    thread.start()
    assert server.ready.wait(60) and server.error is None, server.error
    yield server
    assert server.server is not None
    server.server.should_exit = True
    thread.join(30)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case: Any, api_server: _Server) -> None:
    base = f"http://127.0.0.1:{api_server.port}"
    headers = {"Authorization": f"Bearer {api_server.token}"}
    # As generated (mostly unknown resources), then with the path pinned to real ones so that the
    # generated queries and bodies reach an existing tenant, workflow and instance.
    for pinned in (False, True):
        if pinned:
            for key in case.path_parameters or {}:
                if key in PINNED:
                    case.path_parameters[key] = PINNED[key]
        response = case.call(base_url=base, headers=headers, timeout=30)
        SENT["requests"] += 1
        assert response.status_code < 500, (case.method, case.formatted_path, response.status_code,
                                            response.text[:500])  # fmt: skip


def test_the_server_is_healthy_afterwards(api_server: _Server) -> None:
    response = httpx.get(f"http://127.0.0.1:{api_server.port}/healthz", timeout=10)
    assert response.status_code == 200
    print(f"schemathesis requests sent: {SENT['requests']}")
