"""A worker process for the failover test: ``python -m tests.engine.failover_worker DSN SCHEMA``.

Runs the ``ten`` workflow (10 steps) until SIGTERM. Each step records its side effect as one row of
``side_effects`` through the process's own connection pool (not the engine's), with a fresh token
that the step also returns, so the test can match every journal entry with the execution that
produced it. Prints ``{"worker": ID, "pid": PID}`` once the engine runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from typing import Any

import asyncpg

from engine import Engine, EngineConfig, FunctionExecutor, Journal, PostgresStore

CONFIG = EngineConfig(max_concurrency=100, lease_ms=2_000, heartbeat_ms=400, poll_interval_ms=250)
SIDE_EFFECTS = """
CREATE TABLE IF NOT EXISTS side_effects (
    instance_id TEXT NOT NULL, step INTEGER NOT NULL, token TEXT NOT NULL, generation BIGINT NOT NULL,
    worker TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)
"""


async def main(dsn: str, schema: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4, server_settings={"search_path": schema})
    worker_id = ""

    async def ten(params: Any, step: Journal) -> Any:
        total = params["base"] * 10
        for n in range(10):

            async def effect(n: int = n) -> dict[str, Any]:
                token = uuid.uuid4().hex
                await pool.execute(
                    "INSERT INTO side_effects (instance_id, step, token, generation, worker) VALUES ($1, $2, $3, $4, $5)",
                    step.instance_id, n, token, step.instance.generation, worker_id,
                )  # fmt: skip
                return {"n": n, "token": token}

            total += (await step.do(f"s{n}", effect))["n"]
        return total

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = PostgresStore(dsn, CONFIG, schema=schema, max_read_connections=4)
    engine = Engine(store, FunctionExecutor({"ten": ten}), config=CONFIG)
    worker_id = engine.worker_id or ""
    async with engine:
        print(json.dumps({"worker": worker_id, "pid": os.getpid()}), flush=True)
        await stop.wait()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
