"""A whole-platform process for the crash test: ``python -m tests.dispatcher.crash_platform DATA MODE``.

``start``: create two tenants (wasm and restricted, kv granted), deploy, create instances, and SIGKILL
the whole process once some steps have committed. ``recover``: open the same data directory (an
empty warm cache), wait for every instance and print their outputs as JSON.
Every step records its execution in the tenant's kv store under a unique key, so the test can count
how many times each step ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from dispatcher import OPERATOR, Platform

SOURCE = """
import random
from tenantflow import env

def run(event, step):
    total = 0
    for i in range(6):
        def effect(i=i):
            env.kv.put(key=f"effect:{event['instanceId']}:{i}:{random.random()}", value=i)
            return i
        total += step.do(f"s{i}", effect)
        step.sleep(f"pause{i}", 20)
    return total
"""
TENANTS = {"t-wasm": "wasm", "t-rest": "restricted"}
INSTANCES = [f"i{n}" for n in range(8)]


def committed_steps(data: Path) -> int:
    with sqlite3.connect(data / "engine.db") as db:
        return int(
            db.execute("SELECT COUNT(*) FROM steps WHERE type = 'step' AND state = 'complete'").fetchone()[0]
        )


async def start(data: Path) -> None:
    platform = await Platform.open(data)
    for tenant, backend in TENANTS.items():
        await platform.create_tenant(OPERATOR, tenant, policy={"backend": backend, "bindings": ["kv"]})
        await platform.deploy(OPERATOR, tenant, SOURCE.encode(), filename="main.py", workflow="flow")
        await platform.create_instances(OPERATOR, tenant, "flow", [(i, None) for i in INSTANCES])
    while committed_steps(data) < 30:
        await asyncio.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)


async def recover(data: Path) -> None:
    platform = await Platform.open(data)
    outputs = {}
    for tenant in TENANTS:
        for instance_id in INSTANCES:
            await platform.engine.wait(tenant, instance_id, timeout=120)
            outputs[f"{tenant}/{instance_id}"] = (
                await platform.get_instance(OPERATOR, tenant, "flow", instance_id)
            ).output
    await platform.aclose()
    print(json.dumps(outputs))


if __name__ == "__main__":
    data_dir, mode = Path(sys.argv[1]), sys.argv[2]
    asyncio.run(start(data_dir) if mode == "start" else recover(data_dir))
