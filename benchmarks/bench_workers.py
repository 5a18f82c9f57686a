"""Aggregate durable steps/s with 1, 2 and 3 worker PROCESSES sharing one PostgreSQL database.

    python -m benchmarks.bench_workers [--quick]

Each worker is a separate process (``--worker``) running the engine's leased scheduler with
``max_concurrency`` 200; this process only creates instances (an API-only engine) and watches them.
A run creates N instances of the 10-trivial-step workflow of bench_engine (in batches of 100) and
times creation start -> all complete. Figures per worker count, medians of >= 5 runs with min and max:
``workers_K_steps_per_s`` and ``workers_K_1000x10_s`` (200x10 with ``--quick``). The workers stay up
across runs (process start-up is not timed). PostgreSQL at ``TENANTFLOW_BENCH_PG_DSN`` (else
``TENANTFLOW_TEST_PG_DSN``, else the local test server), in a throwaway schema; ``skipped`` says why
when it is unreachable. Nothing is asserted.

On a 2-core machine the database server and the workers share the cores, so more workers mostly
show what the coordination (claims, leases, notifications) costs rather than a speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from engine import CreateRequest, Engine, EngineConfig, FunctionExecutor, Journal, PostgresStore

from .bench_engine import PG_DSN, _pg_unreachable

ROOT = Path(__file__).resolve().parents[1]
WORKER_CONFIG = EngineConfig(max_concurrency=200, max_concurrency_per_key=1_000)


async def ten_steps(params: Any, step: Journal) -> Any:
    total = 0
    for i in range(10):
        total += await step.do(f"step-{i}", lambda i=i: i)
    return total


async def _worker(dsn: str, schema: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = PostgresStore(dsn, WORKER_CONFIG, schema=schema)
    async with Engine(store, FunctionExecutor({"ten": ten_steps}), config=WORKER_CONFIG) as engine:
        print(json.dumps({"worker": engine.worker_id}), flush=True)
        await stop.wait()


def _start_workers(count: int, schema: str) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_workers", "--worker", PG_DSN, schema],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if not proc.stdout.readline():
            raise RuntimeError(f"a worker process exited at start (code {proc.wait()})")
    return procs


def _stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _one_run(api: Engine, ns: str, count: int) -> float:
    started = time.perf_counter()
    for offset in range(0, count, 100):
        await api.create_batch(ns, [CreateRequest("ten") for _ in range(min(100, count - offset))])
    while (await api.count(ns)).get("complete", 0) < count:  # noqa: ASYNC110 (other processes do the work)
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def _measure(workers: int, count: int, runs: int) -> list[float]:
    import asyncpg

    schema = f"tf_bench_w_{uuid.uuid4().hex[:12]}"
    api = Engine(PostgresStore(PG_DSN, schema=schema), FunctionExecutor(), worker=False)
    await api.start()  # creates the schema before the workers start
    procs = await asyncio.to_thread(_start_workers, workers, schema)
    try:
        await _one_run(api, "warm-up", min(count, 200))
        return [await _one_run(api, f"run-{n}", count) for n in range(runs)]
    finally:
        await asyncio.to_thread(_stop_workers, procs)
        await api.aclose()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def run(quick: bool = False) -> dict[str, Any]:
    unreachable = _pg_unreachable()
    if unreachable is not None:
        return {"skipped": unreachable}
    count = 200 if quick else 1_000
    results: dict[str, Any] = {}
    for workers in (1, 2, 3):
        seconds = asyncio.run(_measure(workers, count, runs=5))
        results[f"workers_{workers}_{count}x10_s"] = _summary(seconds)
        results[f"workers_{workers}_steps_per_s"] = _summary([count * 10 / s for s in seconds])
    return results


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(_worker(*sys.argv[2:4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    results = run(quick=parser.parse_args().quick)
    for name, figure in results.items():
        if not isinstance(figure, dict):
            print(f"{name:28} {figure}")
            continue
        print(
            f"{name:28} median {figure['median']:10.2f}  min {figure['min']:10.2f}  max {figure['max']:10.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
