"""Engine throughput on SQLite with ``synchronous=FULL``, and on PostgreSQL when one is reachable
(in-process workflows, no sandbox).

    python -m benchmarks.bench_engine [--quick]

Figures (medians of >= 5 runs, with min and max):
- ``latency_10_step_ms``: one 10-step workflow, create to complete (p50 of 50 sequential instances per run);
- ``sequential_steps_per_s``: durable steps per second, one instance after another;
- ``concurrent_1000x10_s``: 1,000 instances of 10 steps created at once, time until all complete;
- ``concurrent_steps_per_s``: the same, as durable steps per second.

The same figures prefixed ``pg_`` come from the PostgreSQL store, in a throwaway schema on the server at
``TENANTFLOW_BENCH_PG_DSN`` (else ``TENANTFLOW_TEST_PG_DSN``, else the local test server); they are left
out, with ``pg_skipped`` saying why, when that server is unreachable.
Nothing is asserted: timings depend on the machine and its disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
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

NS = "bench"
PG_DSN = os.environ.get(
    "TENANTFLOW_BENCH_PG_DSN",
    os.environ.get("TENANTFLOW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
)


async def ten_steps(params: Any, step: Journal) -> Any:
    total = 0
    for i in range(10):
        total += await step.do(f"step-{i}", lambda i=i: i)
    return total


CONFIG = EngineConfig(synchronous="FULL", max_concurrency=1_000, max_concurrency_per_key=1_000)


async def _with_engine(store: EngineStore, body: Any) -> Any:
    async with Engine(store, FunctionExecutor({"ten": ten_steps}), config=CONFIG) as engine:
        return await body(engine)


def _on_sqlite(body: Any) -> Any:
    with tempfile.TemporaryDirectory(prefix="tf-bench-engine-") as tmp:
        return asyncio.run(_with_engine(SqliteStore(Path(tmp) / "engine.db", CONFIG), body))


def _on_postgres(body: Any) -> Any:
    async def main() -> Any:
        import asyncpg

        schema = f"tf_bench_{uuid.uuid4().hex[:12]}"
        try:
            return await _with_engine(PostgresStore(PG_DSN, CONFIG, schema=schema), body)
        finally:
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await conn.close()

    return asyncio.run(main())


def _pg_unreachable() -> str | None:
    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_DSN}: {type(exc).__name__}: {exc}"
    return None


async def _sequential(engine: Engine, count: int) -> tuple[float, float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        instance = await engine.create(NS, CreateRequest("ten"))
        await engine.wait(NS, instance.id)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return statistics.median(latencies) * 1000, count * 10 / elapsed


async def _concurrent(engine: Engine, count: int) -> float:
    started = time.perf_counter()
    created = []
    for offset in range(0, count, 100):
        created += await engine.create_batch(
            NS, [CreateRequest("ten") for _ in range(min(100, count - offset))]
        )
    for instance in created:
        await engine.wait(NS, instance.id, timeout=600)
    return time.perf_counter() - started


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def _figures(on: Callable[[Any], Any], quick: bool, prefix: str = "") -> dict[str, Any]:
    runs = 5
    sequential_count = 20 if quick else 50
    concurrent_count = 200 if quick else 1_000
    latency, sequential, concurrent = [], [], []
    for _ in range(runs):
        p50, per_s = on(lambda e: _sequential(e, sequential_count))
        latency.append(p50)
        sequential.append(per_s)
        concurrent.append(on(lambda e: _concurrent(e, concurrent_count)))
    return {
        f"{prefix}latency_10_step_ms": _summary(latency),
        f"{prefix}sequential_steps_per_s": _summary(sequential),
        f"{prefix}concurrent_{concurrent_count}x10_s": _summary(concurrent),
        f"{prefix}concurrent_steps_per_s": _summary([concurrent_count * 10 / s for s in concurrent]),
    }


def run(quick: bool = False) -> dict[str, Any]:
    results = _figures(_on_sqlite, quick)
    unreachable = _pg_unreachable()
    if unreachable is None:
        results.update(_figures(_on_postgres, quick, prefix="pg_"))
    else:
        results["pg_skipped"] = unreachable
    return results


def main() -> None:
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
