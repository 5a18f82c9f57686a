"""A workflow process for the crash tests: ``python -m tests.engine.crash_worker EFFECTS MODE STORE...``.

STORE is ``sqlite PATH`` or ``postgres DSN SCHEMA``.

Each of 5 steps appends ``instance:step`` to EFFECTS (fsynced) and returns a value. MODE decides where
the first process kills itself with SIGKILL: ``mid-step`` (inside step 3 of instance c7, before the step
finishes), ``after-commit`` (right after step 3 of c7 committed, before the workflow continues), or
``none`` (run to completion: the recovery process).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

from engine import (
    CreateRequest,
    Engine,
    EngineConfig,
    EngineStore,
    FunctionExecutor,
    Journal,
    PostgresStore,
    SqliteStore,
)

INSTANCES = [f"c{i}" for i in range(12)]


def open_store(backend: str, *where: str) -> EngineStore:
    if backend == "sqlite":
        (path,) = where
        return SqliteStore(path)
    dsn, schema = where
    return PostgresStore(dsn, schema=schema)


def main(effects: str, mode: str, backend: str, *where: str) -> None:
    def record(instance_id: str, index: int) -> int:
        if mode == "mid-step" and instance_id == "c7" and index == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        with open(effects, "a") as f:
            f.write(f"{instance_id}:{index}\n")
            f.flush()
            os.fsync(f.fileno())
        return index * 10

    async def five(params: Any, step: Journal) -> Any:
        total = 0
        for index in range(1, 6):
            total += await step.do(f"step-{index}", lambda index=index: record(step.instance_id, index))
            if mode == "after-commit" and step.instance_id == "c7" and index == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            await asyncio.sleep(0.001)
        return total

    async def run() -> None:
        executor = FunctionExecutor({"five": five})
        # Short leases: on PostgreSQL the recovery process takes the dead one's instances over at expiry.
        config = EngineConfig(lease_ms=1_500, heartbeat_ms=300)
        async with Engine(open_store(backend, *where), executor, config=config) as engine:
            if mode != "none":
                await engine.create_batch("crash", [CreateRequest("five", id=i) for i in INSTANCES])
            outputs = {i: (await engine.wait("crash", i, timeout=30)).output for i in INSTANCES}
            print(json.dumps(outputs))

    asyncio.run(run())


if __name__ == "__main__":
    main(*sys.argv[1:])
