"""Dispatcher test helpers: a real Platform (engine, artifacts, control stores) in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import OPERATOR, Platform
from engine import FINISHED, EngineConfig, Instance
from sandbox import SandboxBackend, create_backend


async def open_platform(
    path: Path, backends: dict[str, SandboxBackend] | None = None, **options: Any
) -> Platform:
    return await Platform.open(path, backends=backends, engine_config=options.pop("engine_config", EngineConfig()),
                               **options)  # fmt: skip


@pytest.fixture
async def inprocess_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """A platform whose 'wasm' and 'restricted' tenants run on the in-process test backend."""
    backend = create_backend("inprocess")
    platform = await open_platform(tmp_path / "data", {"wasm": backend, "restricted": backend})
    yield platform
    await platform.aclose()


async def deploy(
    platform: Platform, tenant: str, source: str, *, workflow: str = "flow", **policy: Any
) -> str:
    """Create ``tenant`` (if new) with ``policy`` and deploy ``source`` as main.py; returns its token."""
    token = ""
    if tenant not in {t.id for t in await platform.list_tenants(OPERATOR)}:
        _, token = await platform.create_tenant(OPERATOR, tenant, policy=policy)
    await platform.deploy(OPERATOR, tenant, source.encode(), filename="main.py", workflow=workflow)
    return token


async def finish(platform: Platform, tenant: str, instance_id: str, timeout: float = 30) -> Instance:
    await platform.engine.wait(tenant, instance_id, statuses=FINISHED, timeout=timeout)
    return await platform.get_instance(OPERATOR, tenant, (await platform.engine.get(tenant, instance_id)).workflow,
                                       instance_id)  # fmt: skip
