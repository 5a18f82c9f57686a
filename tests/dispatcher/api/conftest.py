"""API test helpers: the app over a real Platform (in-process sandbox backend) via httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher import OPERATOR, Platform
from dispatcher.api import ApiConfig, create_app
from sandbox import create_backend

from ..conftest import open_platform

CF = "/client/v4/accounts"
TF = "/tenantflow/v1"

FLOW = """
def run(event, step):
    first = step.do("double", lambda: event["payload"]["n"] * 2)
    got = step.wait_for_event("approval", "approved", timeout="1 hour")
    return {"n": first, "by": got["payload"]}
"""
QUICK = "def run(event, step):\n    return step.do('echo', lambda: event['payload'])\n"


@dataclass
class Api:
    platform: Platform
    client: httpx.AsyncClient
    operator: dict[str, str]
    """Authorization header of an operator token."""
    acme: dict[str, str]
    """Authorization header of tenant ``acme``'s token."""
    globex: dict[str, str]
    """Authorization header of tenant ``globex``'s token."""

    async def deploy(self, tenant: str, source: str, workflow: str = "flow") -> dict[str, Any]:
        response = await self.client.post(
            f"{TF}/tenants/{tenant}/bundles",
            params={"filename": "main.py", "workflow": workflow},
            content=source.encode(),
            headers=self.operator,
        )
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()["result"]
        return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_api(tmp_path: Path, config: ApiConfig | None = None, **policy: Any) -> AsyncIterator[Api]:
    backend = create_backend("inprocess")
    platform = await open_platform(tmp_path / "data", {"wasm": backend, "restricted": backend})
    try:
        operator = await platform.ensure_operator_token()
        assert operator is not None
        _, acme = await platform.create_tenant(OPERATOR, "acme", policy=policy)
        _, globex = await platform.create_tenant(OPERATOR, "globex")
        transport = httpx.ASGITransport(app=create_app(platform, config), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(platform, client, bearer(operator), bearer(acme), bearer(globex))
    finally:
        await platform.aclose()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for value in make_api(tmp_path):
        yield value


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    assert body["errors"], body
    first: dict[str, Any] = body["errors"][0]
    assert isinstance(first["code"], int) and first["message"]
    return first
