"""The restricted sandbox backend: warm invoke, host-call round trip, cold load.

    python -m benchmarks.bench_sandbox_restricted [--quick]

Figures (medians over >= 5 runs of the per-run p50, with min and max; ``*_p99`` the same for p99):
- ``warm_invoke_us``: ``invoke`` of a trivial ``run`` on a warm worker, IPC and event loop included;
- ``host_call_us``: one step host-call round trip (a memoized ``step.do`` answered from memory),
  measured as (invoke with 100 cached steps - trivial invoke) / 100;
- ``cold_load_ms``: ``prepare`` + ``load`` of a new 100-line tenant module (compile in the parent,
  ship to a worker, execute the module);
- ``cold_load_derived_ms``: ``load`` when the platform already has the derived form cached;
- ``prepare_ms``: RestrictedPython compilation of that module alone;
- ``host_call_cpu_us``: CPU time of the parent and the worker together per host call (amortized
  over the 100-step invoke): what spinning costs;
- ``*_spin_off``: the same on a second pool with ``spin_us=0`` (no spinning on an expected answer),
  measured in the same runs, interleaved, so the two compare under the same machine load.
Targets (issue 5): warm invoke p50 <= 100 us, host call p50 <= 30 us, cold load p50 <= 3 ms.
Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from sandbox import Bundle, Limits
from sandbox._restricted import RestrictedBackend

TRIVIAL = "def run(event, step):\n    return 1\n"
CACHED_STEPS = 100
STEPS = f"def run(event, step):\n    for i in range({CACHED_STEPS}):\n        step.do('s', lambda: 1)\n    return 1\n"


def hundred_lines(tag: int) -> str:
    lines = [f"import json\nimport math\nTAG = {tag}\n"]
    for i in range(24):
        lines.append(f"def helper_{i}(x):\n    y = x * {i} + TAG\n    return [y, math.sqrt(abs(y))]\n\n")
    lines.append("def run(event, step):\n    return helper_1(event['payload'])\n")
    source = "".join(lines)
    assert source.count("\n") >= 100
    return source


class CachedBridge:
    """Answers every step from memory (the hot path of a replay)."""

    __slots__ = ()

    def call(self, name: str, args: Any) -> Any:
        return {"action": "cached", "result": 1, "time": 0}


def _bundle(source: str, digest: str) -> Bundle:
    return Bundle(digest=digest, files={"main.py": source.encode()})


def _worker_cpu(backend: RestrictedBackend) -> float:
    """CPU seconds of the pool's workers (``schedstat``: nanoseconds)."""
    total = 0
    for worker in backend.pool_snapshot()["workers"]:
        with open(f"/proc/{worker['pid']}/schedstat") as stat:
            total += int(stat.read().split()[0])
    return total / 1e9


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _figure(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


async def _measure(quick: bool) -> dict[str, Any]:
    runs = 5 if quick else 7
    invokes = 300 if quick else 2000
    loads = 20 if quick else 60
    event = {"payload": 3, "timestamp": 0, "instanceId": "bench", "workflowName": "bench"}
    bridge = CachedBridge()
    limits = Limits()
    keys = ("warm", "warm99", "call", "call99", "cpu", "cold", "cold99", "derived", "derived99", "prepare")
    results: dict[str, list[float]] = {k: [] for k in keys}
    results.update({f"{k}_off": [] for k in ("warm", "warm99", "call", "call99", "cpu")})
    # recycle_after: the workers' CPU is read from /proc/<pid>, so they must outlive the runs.
    async with (
        RestrictedBackend(pool_size=2, recycle_after=1 << 30) as backend,
        RestrictedBackend(pool_size=2, recycle_after=1 << 30, spin_us=0) as spin_off,
    ):
        handles = {}
        for suffix, pool in (("", backend), ("_off", spin_off)):
            await pool.wait_ready()
            trivial = await pool.load(_bundle(TRIVIAL, "sha256:trivial"), limits=limits)
            steps = await pool.load(_bundle(STEPS, "sha256:steps"), limits=limits)
            for _ in range(200):
                await trivial.invoke(event, bridge)
                await steps.invoke(event, bridge)
            handles[suffix] = (pool, trivial, steps)
        tag = 0
        for _ in range(runs):
            for suffix, (pool, trivial, steps) in handles.items():
                warm = []
                for _ in range(invokes):
                    t0 = time.perf_counter()
                    await trivial.invoke(event, bridge)
                    warm.append(time.perf_counter() - t0)
                stepped = []
                cpu0 = time.process_time() + _worker_cpu(pool)
                for _ in range(max(50, invokes // 10)):
                    t0 = time.perf_counter()
                    await steps.invoke(event, bridge)
                    stepped.append(time.perf_counter() - t0)
                cpu = time.process_time() + _worker_cpu(pool) - cpu0
                w50, w99 = _percentiles(warm)
                s50, s99 = _percentiles(stepped)
                results["warm" + suffix].append(w50 * 1e6)
                results["warm99" + suffix].append(w99 * 1e6)
                results["call" + suffix].append((s50 - w50) / CACHED_STEPS * 1e6)
                results["call99" + suffix].append((s99 - w50) / CACHED_STEPS * 1e6)
                results["cpu" + suffix].append(cpu / (len(stepped) * CACHED_STEPS) * 1e6)
            cold, derived_loads, prepares = [], [], []
            for _ in range(loads):
                tag += 1
                bundle = _bundle(hundred_lines(tag), f"sha256:cold-{tag}")
                t0 = time.perf_counter()
                await backend.load(bundle, limits=limits)
                cold.append(time.perf_counter() - t0)
                tag += 1
                bundle = _bundle(hundred_lines(tag), f"sha256:cold-{tag}")
                t0 = time.perf_counter()
                derived = await backend.prepare(bundle)
                prepares.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await backend.load(bundle, limits=limits, derived=derived)
                derived_loads.append(time.perf_counter() - t0)
            c50, c99 = _percentiles(cold)
            results["cold"].append(c50 * 1e3)
            results["cold99"].append(c99 * 1e3)
            d50, d99 = _percentiles(derived_loads)
            results["derived"].append(d50 * 1e3)
            results["derived99"].append(d99 * 1e3)
            results["prepare"].append(_percentiles(prepares)[0] * 1e3)
    figures = {
        "warm_invoke_us": _figure(results["warm"]),
        "warm_invoke_us_p99": _figure(results["warm99"]),
        "host_call_us": _figure(results["call"]),
        "host_call_us_p99": _figure(results["call99"]),
        "host_call_cpu_us": _figure(results["cpu"]),
        "cold_load_ms": _figure(results["cold"]),
        "cold_load_ms_p99": _figure(results["cold99"]),
        "cold_load_derived_ms": _figure(results["derived"]),
        "cold_load_derived_ms_p99": _figure(results["derived99"]),
        "prepare_ms": _figure(results["prepare"]),
    }
    for name, key in (
        ("warm_invoke_us", "warm"),
        ("warm_invoke_us_p99", "warm99"),
        ("host_call_us", "call"),
        ("host_call_us_p99", "call99"),
        ("host_call_cpu_us", "cpu"),
    ):
        figures[f"{name}_spin_off"] = _figure(results[f"{key}_off"])
    return figures


def run(quick: bool) -> dict[str, Any]:
    """Figures for ``python -m benchmarks`` (see the module docstring)."""
    return asyncio.run(_measure(quick))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = run(args.quick)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{'figure':28} {'median':>10} {'min':>10} {'max':>10}")
    for name, figure in figures.items():
        print(f"{name:28} {figure['median']:>10.1f} {figure['min']:>10.1f} {figure['max']:>10.1f}")


if __name__ == "__main__":
    main()
