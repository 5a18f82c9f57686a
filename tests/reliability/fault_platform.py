"""A whole-platform process that SIGKILLs itself at a chosen phase:
``python -m tests.reliability.fault_platform DATA PHASE`` (then ``DATA recover``).

The kill points are installed by wrapping platform methods in this child process only:

* ``mid-step``: the Nth ``step.commit`` host call arrives: the step's function ran (its kv side
  effect is written) but its result is not yet durable.
* ``after-commit``: the Nth ``step.commit`` returned: the result is durable, the guest has not continued.
* ``claim``: the scheduler's Nth ``claim_due`` returned due instances (their timers are consumed) and
  they were not yet run.
* ``upload``: deploying version 2 - inside the artifact store's write transaction, after the blobs,
  bundle and version rows were written and the ``latest`` alias moved, before COMMIT.
* ``alias``: moving the ``production`` alias to version 2, inside its transaction, before COMMIT.

``recover`` opens the data directory in a fresh process, waits for every instance and prints a
JSON report: outputs, the artifact store's versions and aliases.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from dispatcher import OPERATOR, Platform

SOURCE = """
import random
from tenantflow import env

def run(event, step):
    total = 0
    for i in range(5):
        def effect(i=i):
            env.kv.put(key=f"effect:{event['instanceId']}:{i}:{random.random()}", value=i)
            return i + VERSION_BONUS
        total += step.do(f"s{i}", effect)
        step.sleep(f"pause{i}", 30)
    return total
"""
TENANTS = {"f-wasm": "wasm", "f-rest": "restricted"}
INSTANCES = [f"i{n}" for n in range(6)]
KILL_AT = {"mid-step": 13, "after-commit": 13, "claim": 6}


def source(version: int) -> bytes:
    return f"VERSION_BONUS = {10 * (version - 1)}\n{SOURCE}".encode()


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(phase: str) -> None:
    """Wrap the method where ``phase`` happens so that its Nth call SIGKILLs the process."""
    calls = {"n": 0}
    if phase in ("mid-step", "after-commit"):
        from dispatcher._bridge import StepBridge

        original = StepBridge.call

        def call(self: Any, name: str, args: Any) -> Any:
            if name == "step.commit":
                calls["n"] += 1
                n = calls["n"]  # host calls of several sandboxes arrive on several threads
                if phase == "mid-step" and n == KILL_AT[phase]:
                    _kill()
                result = original(self, name, args)
                if phase == "after-commit" and n == KILL_AT[phase]:
                    _kill()
                return result
            return original(self, name, args)

        StepBridge.call = call  # type: ignore[method-assign]
    elif phase == "claim":
        from engine._sqlite import SqliteStore

        original_claim = SqliteStore.claim_due

        @functools.wraps(original_claim)
        async def claim_due(self: Any, now: int, limit: int) -> list[tuple[int, str]]:
            claimed = await original_claim(self, now, limit)
            if claimed:
                calls["n"] += 1
                if calls["n"] == KILL_AT[phase]:
                    _kill()
            return claimed

        SqliteStore.claim_due = claim_due  # type: ignore[method-assign]
    elif phase in ("upload", "alias"):
        from artifacts._sqlite import SqliteBackend

        original_move = SqliteBackend._move

        async def move(self: Any, db: Any, namespace: str, workflow: str, alias: str, *args: Any) -> Any:
            record = await original_move(self, db, namespace, workflow, alias, *args)
            armed = (phase == "upload" and alias == "latest") or (phase == "alias" and alias == "production")
            if armed and record.number == 2:
                _kill()  # inside the write transaction: every row is written, nothing committed
            return record

        SqliteBackend._move = move  # type: ignore[method-assign]


async def start(data: Path, phase: str) -> None:
    platform = await Platform.open(data)
    for tenant, backend in TENANTS.items():
        await platform.create_tenant(OPERATOR, tenant, policy={"backend": backend, "bindings": ["kv"]})
        await platform.deploy(OPERATOR, tenant, source(1), filename="main.py", workflow="flow",
                              aliases=["production"])  # fmt: skip
    _install(phase)
    if phase == "upload":
        await platform.deploy(OPERATOR, "f-wasm", source(2), filename="main.py", workflow="flow")
    elif phase == "alias":
        await platform.deploy(OPERATOR, "f-wasm", source(2), filename="main.py", workflow="flow",
                              move_latest=False)  # fmt: skip
        await platform.set_alias(OPERATOR, "f-wasm", "flow", "production", 2)
    else:
        for tenant in TENANTS:
            await platform.create_instances(OPERATOR, tenant, "flow", [(i, None) for i in INSTANCES])
        await asyncio.sleep(120)
    raise SystemExit(f"phase {phase!r} never reached its kill point")


async def recover(data: Path) -> None:
    platform = await Platform.open(data)
    report: dict[str, Any] = {"outputs": {}, "versions": {}, "aliases": {}}
    for tenant in TENANTS:
        instances, _ = await platform.list_instances(OPERATOR, tenant, "flow", limit=100)
        for instance in instances:
            done = await platform.engine.wait(tenant, instance.id, timeout=120)
            output = (await platform.get_instance(OPERATOR, tenant, "flow", instance.id)).output
            report["outputs"][f"{tenant}/{instance.id}"] = [str(done.status), output]
        versions = await platform.list_versions(OPERATOR, tenant, "flow")
        report["versions"][tenant] = sorted(v.number for v in versions)
        report["aliases"][tenant] = {
            a.alias: a.number for a in await platform.list_aliases(OPERATOR, tenant, "flow")
        }
    await platform.aclose()
    print(json.dumps(report))


if __name__ == "__main__":
    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    asyncio.run(recover(data_dir) if mode == "recover" else start(data_dir, mode))
