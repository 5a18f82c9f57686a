"""Engine throughput on SQLite with ``synchronous=FULL`` (in-process workflows, no sandbox).

    python -m benchmarks.bench_engine [--quick]

Figures (medians of >= 5 runs, with min and max):
- ``latency_10_step_ms``: one 10-step workflow, create to complete (p50 of 50 sequential instances per run);
- ``sequential_steps_per_s``: durable steps per second, one instance after another;
- ``concurrent_1000x10_s``: 1,000 instances of 10 steps created at once, time until all complete;
- ``concurrent_steps_per_s``: the same, as durable steps per second.
Nothing is asserted: timings depend on the machine and its disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import CreateRequest, Engine, EngineConfig, FunctionExecutor, Journal, SqliteStore

NS = "bench"


async def ten_steps(params: Any, step: Journal) -> Any:
    total = 0
    for i in range(10):
        total += await step.do(f"step-{i}", lambda i=i: i)
    return total


async def _with_engine(directory: Path, body: Any) -> Any:
    config = EngineConfig(synchronous="FULL", max_concurrency=1_000, max_concurrency_per_key=1_000)
    engine = Engine(
        SqliteStore(directory / "engine.db", config), FunctionExecutor({"ten": ten_steps}), config=config
    )
    async with engine:
        return await body(engine)


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


def run(quick: bool = False) -> dict[str, Any]:
    runs = 5
    sequential_count = 20 if quick else 50
    concurrent_count = 200 if quick else 1_000
    latency, sequential, concurrent = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="tf-bench-engine-") as tmp:
            p50, per_s = asyncio.run(_with_engine(Path(tmp), lambda e: _sequential(e, sequential_count)))
            latency.append(p50)
            sequential.append(per_s)
        with tempfile.TemporaryDirectory(prefix="tf-bench-engine-") as tmp:
            concurrent.append(
                asyncio.run(_with_engine(Path(tmp), lambda e: _concurrent(e, concurrent_count)))
            )
    return {
        "latency_10_step_ms": _summary(latency),
        "sequential_steps_per_s": _summary(sequential),
        f"concurrent_{concurrent_count}x10_s": _summary(concurrent),
        "concurrent_steps_per_s": _summary([concurrent_count * 10 / s for s in concurrent]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    results = run(quick=parser.parse_args().quick)
    for name, figure in results.items():
        print(
            f"{name:28} median {figure['median']:10.2f}  min {figure['min']:10.2f}  max {figure['max']:10.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
