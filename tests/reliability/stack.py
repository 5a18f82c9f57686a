"""The real stack for the reliability suites: a Platform with both real sandbox backends, the HTTP
API in front of it (ASGI transport), canaries planted on the host, and a victim tenant per backend
whose stored step result is a canary too.

A case is run as a tenant bundle: the tenant is created with the case's backend, the source is
deployed as ``main.py``, an instance is created and awaited, and everything a client could see
(the instance, its describe record with logs, the HTTP API's answer to the tenant's own token) is
gathered into one text so the caller can look for canaries in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dispatcher import OPERATOR, Platform
from dispatcher.api import create_app
from engine import FINISHED, EngineConfig, RetryConfig, Status, StepConfig

BACKENDS = ("wasm", "restricted")
HOST_ENV_CANARY = "tf-host-env-" + secrets.token_hex(8)
HOST_FILE_CANARY = "tf-host-file-" + secrets.token_hex(8)
VICTIM_CANARY = "tf-victim-step-" + secrets.token_hex(8)
ATTACK_LIMITS = {
    "memory_bytes": 64 * 1024 * 1024,
    "cpu_seconds": 0.5,
    "wall_seconds": 5.0,
    "output_bytes": 64 * 1024,
    "result_bytes": 1024 * 1024,
    "host_calls": 2000,
}
ENGINE_CONFIG = EngineConfig(
    synchronous="NORMAL",
    # A failing step fails at once: attacks are not retried with 10 s backoffs.
    default_step_config=StepConfig(retries=RetryConfig(limit=0)),
)
VICTIM_SOURCE = """
def run(event, step):
    secret = step.do("secret-step", lambda: {"token": event["payload"]["token"]})
    got = step.wait_for_event("victim-wait", "go", timeout="1 hour")
    return {"secret": secret, "got": got["payload"]}
"""
NEIGHBOUR_SOURCE = "def run(event, step):\n    return step.do('double', lambda: event['payload'] * 2)\n"


def body(source: str) -> str:
    """A ``run(event, step)`` module whose body is ``source``."""
    return "def run(event, step):\n" + textwrap.indent(source, "    ") + "\n"


@dataclass
class Outcome:
    tenant: str
    instance_id: str
    status: str
    error_name: str | None
    text: str
    """Everything a client can see about the instance, as one string."""
    output: Any = None

    @property
    def kind(self) -> str:
        """ok | load | tenant | limit | crash (the shared table's outcome names)."""
        if self.status == Status.COMPLETE:
            return "ok"
        return {
            "LoadError": "load",
            "LimitExceededError": "limit",
            "SandboxCrashError": "crash",
        }.get(self.error_name or "", "tenant")


class Stack:
    """One platform (both real backends) plus its API, canaries and victims."""

    def __init__(self, platform: Platform, client: httpx.AsyncClient, canary_path: Path) -> None:
        self.platform = platform
        self.client = client
        self.canary_path = canary_path
        self.tokens: dict[str, str] = {}
        self._serial = 0

    @classmethod
    async def open(cls, data: Path, canary_path: Path) -> Stack:
        platform = await Platform.open(data, engine_config=ENGINE_CONFIG)
        app = create_app(platform)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
        )
        stack = cls(platform, client, canary_path)
        for backend in BACKENDS:
            await stack.tenant(f"victim-{backend}", backend, VICTIM_SOURCE, bindings=["kv"])
            await platform.create_instance(
                OPERATOR, f"victim-{backend}", "flow", {"token": VICTIM_CANARY}, instance_id="victim-1"
            )
            await stack.tenant(f"neighbour-{backend}", backend, NEIGHBOUR_SOURCE)
        for backend in BACKENDS:
            await platform.engine.wait(
                f"victim-{backend}", "victim-1", statuses={Status.WAITING, *FINISHED}, timeout=120
            )
        return stack

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.platform.aclose()

    async def tenant(
        self, tenant: str, backend: str, source: str, *, workflow: str = "flow", **policy: Any
    ) -> str:
        """Create ``tenant`` with ``backend`` (the attack limits) and deploy ``source``; returns a token."""
        if tenant not in self.tokens:
            _, token = await self.platform.create_tenant(
                OPERATOR, tenant, policy={"backend": backend, "limits": ATTACK_LIMITS, **policy}
            )
            self.tokens[tenant] = token
        await self.platform.deploy(OPERATOR, tenant, source.encode(), filename="main.py", workflow=workflow)
        return self.tokens[tenant]

    async def run(
        self,
        tenant: str,
        backend: str,
        source: str,
        params: Any = None,
        *,
        instance_id: str = "case-1",
        timeout: float = 90,
        **policy: Any,
    ) -> Outcome:
        """Deploy ``source`` for a new or existing ``tenant``, run one instance, gather what it shows."""
        await self.tenant(tenant, backend, source, **policy)
        await self.platform.create_instance(OPERATOR, tenant, "flow", params, instance_id=instance_id)
        return await self.outcome(tenant, instance_id, timeout=timeout)

    async def outcome(self, tenant: str, instance_id: str, *, timeout: float = 90) -> Outcome:
        engine_view = await self.platform.engine.wait(tenant, instance_id, statuses=FINISHED, timeout=timeout)
        instance = await self.platform.get_instance(OPERATOR, tenant, "flow", instance_id)
        record = await self.platform.describe_instance(OPERATOR, tenant, "flow", instance_id)
        response = await self.client.get(
            f"/client/v4/accounts/{tenant}/workflows/flow/instances/{instance_id}",
            headers={"Authorization": f"Bearer {self.tokens[tenant]}"},
        )
        assert response.status_code == 200, response.text
        text = "\n".join(
            [
                repr(instance),
                json.dumps(record, default=repr),
                response.text,
                repr(engine_view.error),
            ]
        )
        error = instance.error
        return Outcome(
            tenant, instance_id, str(instance.status), error.name if error else None, text, instance.output
        )

    def leaks(self, text: str) -> list[str]:
        """Canaries and host strings found in ``text``."""
        from tests.sandbox.attacks import FORBIDDEN

        found = [c for c in (HOST_ENV_CANARY, HOST_FILE_CANARY, VICTIM_CANARY) if c in text]
        found += [f for f in FORBIDDEN if f in text]
        return found

    async def neighbour_works(self, backend: str) -> None:
        """Another tenant's workflow on the same backend still completes (the host is healthy)."""
        self._serial += 1
        serial = self._serial
        tenant = f"neighbour-{backend}"
        instance_id = f"n{serial}"
        await self.platform.create_instance(OPERATOR, tenant, "flow", serial, instance_id=instance_id)
        done = await self.platform.engine.wait(tenant, instance_id, statuses=FINISHED, timeout=60)
        assert done.status == Status.COMPLETE, (backend, done.error)
        assert (await self.platform.get_instance(OPERATOR, tenant, "flow", instance_id)).output == 2 * serial

    async def victims_intact(self) -> None:
        """Each victim still holds its secret and completes with it when its own event arrives."""
        for backend in BACKENDS:
            tenant = f"victim-{backend}"
            await self.platform.send_event(OPERATOR, tenant, "flow", "victim-1", "go", {"from": "operator"})
            done = await self.platform.engine.wait(tenant, "victim-1", statuses=FINISHED, timeout=60)
            assert done.status == Status.COMPLETE, done.error
            output = (await self.platform.get_instance(OPERATOR, tenant, "flow", "victim-1")).output
            assert output == {"secret": {"token": VICTIM_CANARY}, "got": {"from": "operator"}}


def plant_canaries(directory: Path) -> Path:
    """The host env var and host file canaries (returns the file's path)."""
    path = directory / "secret.txt"
    path.write_text(HOST_FILE_CANARY + "\n")
    os.environ["TENANTFLOW_ISOLATION_CANARY"] = HOST_ENV_CANARY
    return path


async def gather_limited(limit: int, *coros: Any) -> list[Any]:
    """``asyncio.gather`` with at most ``limit`` coroutines running at once (exceptions returned)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)
