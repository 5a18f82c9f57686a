"""tenantflow through the full stack: a real ``dispatcher.Platform`` (engine on SQLite, artifact store,
control store, warm cache, the real sandbox backend) in a temporary directory, a tenant with real
code deployed, instances created through ``Platform.create_instances``. The wasm backend unless a
figure says ``restricted``; the engine at ``synchronous=FULL`` unless a figure says otherwise.

    python -m benchmarks full [--quick]

Figures (each the median over 5 runs of that run's p50 or total, with min and max; 2 runs with
``--quick``):
- ``latency_10_step_ms``: one 10-step workflow, create to complete (``engine.wait`` returns);
- ``sequential_steps_per_s``: durable steps per second, one 10-step instance after another;
- ``concurrent_<n>x10_s``: ``n`` instances created at once (batches of 100), until all complete;
- ``cold_start_new_version_ms``: a freshly deployed version's first wake, bundle to ready sandbox
  (fetch from the artifact store, verify, prepare the derived form, load), from ``CacheStats``;
  ``cold_start_known_version_ms``: the same for a reload (derived form already stored);
- ``warm_dispatch_us``: a no-step run on a warm sandbox at ``synchronous=OFF`` (fsync excluded by
  configuration, not by subtraction): ``create_instances`` returned -> engine claim -> executor ->
  outcome recorded (the store's ``finish_run`` returned); ``warm_dispatch_executor_us``: the
  executor's share; ``warm_dispatch_to_waiter_us``: until ``engine.wait`` returns instead;
- ``host_call_us``: one step host-call round trip (replayed step, see ``_host_call``);
- ``create_per_s_in_process`` / ``create_per_s_http``: instances created per second, batches of
  100 from 4 concurrent callers, in process and over HTTP to a uvicorn server on 127.0.0.1.

Helpers here are shared by ``bench_full_tenants`` (PSS per warm tenant) and ``bench_full_sleepers``
(a million sleeping instances) and ``bench_dbos``. Tenants get ``BENCH_POLICY`` and the platform
``CACHE_OPTIONS`` (see each). Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dispatcher import OPERATOR, Platform
from engine import FINISHED, EngineConfig, Status

TEN_STEPS = (
    "def run(event, step):\n"
    "    total = 0\n"
    "    for i in range(10):\n"
    "        total += step.do(f's{i}', lambda i=i: i)\n"
    "    return total\n"
)
NO_STEP = "def run(event, step):\n    return 1\n"

BENCH_POLICY: dict[str, Any] = {"creation_rate": 10_000_000.0}
"""Lifts the per-tenant creation rate (default 100/s); ``max_concurrent_instances`` stays at its
default of 100: with 10,000, a burst of 1,000 wakes loads ~1,000 sandboxes at once (one serves one
invocation at a time), which is slower (8.4 s vs 5.3 s for 1,000 x 10 steps) and peaks at ~9 GB."""


def engine_config(synchronous: str = "FULL") -> EngineConfig:
    return EngineConfig(
        synchronous=synchronous,  # type: ignore[arg-type]
        max_concurrency=1_000,
        max_concurrency_per_key=10_000,
    )


CACHE_OPTIONS: dict[str, Any] = {"pool_size": 100}
"""Idle sandboxes kept per (tenant, version): as many as the tenant may run at once (its default
``max_concurrent_instances``). With the default of 2, every wake beyond the second concurrent one
loads a sandbox and closes it afterwards: 198 loads instead of 100 for 1,000 x 10 steps."""


async def open_platform(
    data_dir: Path, *, synchronous: str = "FULL", cache_options: dict[str, Any] | None = None
) -> Platform:
    return await Platform.open(
        data_dir,
        engine_config=engine_config(synchronous),
        cache_options=CACHE_OPTIONS if cache_options is None else cache_options,
    )


async def add_tenant(
    platform: Platform, tenant: str, source: str, *, backend: str = "wasm", workflow: str = "flow"
) -> str:
    """Create ``tenant`` on ``backend`` and deploy ``source``; returns the tenant's token."""
    _, token = await platform.create_tenant(OPERATOR, tenant, policy={"backend": backend, **BENCH_POLICY})
    await platform.deploy(OPERATOR, tenant, source.encode(), filename="main.py", workflow=workflow)
    return token


async def run_one(platform: Platform, tenant: str, workflow: str = "flow", params: Any = None) -> Any:
    """Create one instance and wait for it to finish; returns the finished instance."""
    instance = await platform.create_instance(OPERATOR, tenant, workflow, params)
    done = await platform.engine.wait(tenant, instance.id, statuses=FINISHED, timeout=120)
    if done.status != Status.COMPLETE:
        raise RuntimeError(f"benchmark instance ended {done.status}: {done.error}")
    return done


def in_platform(
    body: Callable[[Platform], Awaitable[Any]], *, synchronous: str = "FULL", **options: Any
) -> Any:
    """Run ``body(platform)`` on a fresh platform in a fresh temporary directory (own event loop)."""

    async def main(tmp: str) -> Any:
        platform = await open_platform(Path(tmp) / "data", synchronous=synchronous, **options)
        try:
            return await body(platform)
        finally:
            await platform.aclose()

    with tempfile.TemporaryDirectory(prefix="tf-bench-full-") as tmp:
        return asyncio.run(main(tmp))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max over runs."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": len(values),
    }


class Stopwatch:
    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


# -- the figures ---------------------------------------------------------------------------------

TENANT = "bench"
REPLAY_STEPS = 200
REPLAY = (
    "def run(event, step):\n"
    f"    for i in range({REPLAY_STEPS}):\n"
    "        step.do(f's{i}', lambda i=i: i)\n"
    "    step.sleep('nap', 1)\n"
    "    return 0\n"
)


async def _sequential(platform: Platform, count: int) -> tuple[float, float]:
    """(p50 create-to-complete ms, durable steps/s) for ``count`` 10-step instances one after another."""
    await run_one(platform, TENANT)  # warm the sandbox
    latencies = []
    watch = Stopwatch()
    for _ in range(count):
        one = Stopwatch()
        await run_one(platform, TENANT)
        latencies.append(one.seconds())
    return statistics.median(latencies) * 1000, count * 10 / watch.seconds()


async def _concurrent(platform: Platform, count: int) -> float:
    """Seconds from the first create to the last of ``count`` 10-step instances complete."""
    await run_one(platform, TENANT)
    watch = Stopwatch()
    created = []
    for offset in range(0, count, 100):
        items = [(None, None)] * min(100, count - offset)
        created += await platform.create_instances(OPERATOR, TENANT, "flow", items)
    for instance in created:
        await platform.engine.wait(TENANT, instance.id, statuses=FINISHED, timeout=600)
    return watch.seconds()


async def _ten_step_figures(platform: Platform, sequential: int, concurrent: int) -> tuple[float, ...]:
    await add_tenant(platform, TENANT, TEN_STEPS)
    p50, per_s = await _sequential(platform, sequential)
    return p50, per_s, await _concurrent(platform, concurrent)


async def _warm_dispatch(platform: Platform, count: int, backend: str) -> dict[str, float]:
    """A no-step run on a warm sandbox (engine at synchronous=OFF, so no fsync is in the figure).

    ``wake_to_recorded``: from ``create_instances`` returning (the instance is committed and the
    scheduler told) to the engine's ``finish_run`` write returning (the outcome is recorded): claim,
    executor (envelope, tenant, warm sandbox, invoke), outcome committed. ``executor``: the
    executor's share. ``to_waiter``: until ``engine.wait`` returns (one more read and a wake-up).
    """
    await add_tenant(platform, TENANT, NO_STEP, backend=backend)
    for _ in range(20):
        await run_one(platform, TENANT)
    executor, store = platform.executor, platform.engine.store
    inner, finish = executor.execute, store.finish_run
    spans: list[float] = []
    recorded: list[float] = []

    async def timed(run: Any) -> Any:
        started = time.perf_counter()
        try:
            return await inner(run)
        finally:
            spans.append(time.perf_counter() - started)

    async def finish_run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await finish(*args, **kwargs)
        finally:
            recorded.append(time.perf_counter())

    executor.execute = timed  # type: ignore[method-assign]
    store.finish_run = finish_run  # type: ignore[method-assign]
    totals, waits = [], []
    try:
        for _ in range(count):
            instance = await platform.create_instance(OPERATOR, TENANT, "flow")
            started = time.perf_counter()
            await platform.engine.wait(TENANT, instance.id, statuses=FINISHED, timeout=60)
            waits.append(time.perf_counter() - started)
            totals.append(recorded[-1] - started)
    finally:
        executor.execute = inner  # type: ignore[method-assign]
        store.finish_run = finish  # type: ignore[method-assign]
    return {
        "wake_to_recorded_us": pct(totals, 0.5) * 1e6,
        "executor_us": pct(spans, 0.5) * 1e6,
        "to_waiter_us": pct(waits, 0.5) * 1e6,
    }


async def _host_call(platform: Platform, backend: str, instances: int) -> float:
    """p50 step host-call round trip (µs) through the dispatcher's bridge and the engine's journal.

    Each instance runs 200 steps, sleeps 1 ms and is woken again: its second invocation replays the
    200 steps from the journal. The figure is the gap between consecutive ``step.do`` host calls of
    that replay as the bridge sees them: bridge -> event loop -> journal lookup -> guest -> bridge.
    """
    from dispatcher import _bridge

    await add_tenant(platform, TENANT, REPLAY, backend=backend)
    stamps: dict[int, list[float]] = {}
    original = _bridge.StepBridge.call

    def recording(self: Any, name: str, args: Any) -> Any:
        if name == "step.do":
            stamps.setdefault(id(self), []).append(time.perf_counter())
        return original(self, name, args)

    _bridge.StepBridge.call = recording  # type: ignore[method-assign]
    try:
        gaps: list[float] = []
        for _ in range(instances):
            stamps.clear()
            await run_one(platform, TENANT)
            replays = [s for s in stamps.values() if len(s) == REPLAY_STEPS]
            replay = replays[-1]  # the bridge of the wake-up after the sleep
            gaps += [b - a for a, b in itertools.pairwise(replay)]
    finally:
        _bridge.StepBridge.call = original  # type: ignore[method-assign]
    return pct(gaps, 0.5) * 1e6


async def _cold_start(platform: Platform, count: int) -> dict[str, float]:
    """Bundle to ready sandbox through the warm cache (``CacheStats.cold_start_seconds``).

    ``new_version``: a freshly deployed version's first wake: fetch the bundle from the artifact
    store, verify it, prepare the backend's derived form, load a sandbox. ``known_version``: the
    same after the tenant's sandboxes were dropped (derived form still prepared), i.e. a reload.
    """
    await add_tenant(platform, TENANT, NO_STEP)
    stats = platform.cache.stats
    new, known = [], []
    for i in range(count):
        source = f"# revision {i}\n{NO_STEP}"
        await platform.deploy(OPERATOR, TENANT, source.encode(), filename="main.py", workflow="flow")
        before = stats.cold_start_seconds
        await run_one(platform, TENANT)
        new.append(stats.cold_start_seconds - before)
        platform.cache.invalidate(TENANT)
        await asyncio.sleep(0.005)  # let the backend refill its spare instances, as between real wakes
        before = stats.cold_start_seconds
        await run_one(platform, TENANT)
        known.append(stats.cold_start_seconds - before)
    return {"new_version_ms": pct(new, 0.5) * 1e3, "known_version_ms": pct(known, 0.5) * 1e3}


async def _create_rate(platform: Platform, count: int, creators: int = 4) -> float:
    """Instances created per second through ``Platform.create_instances`` (batches of 100, from
    ``creators`` concurrent callers, as the HTTP figure has concurrent connections).

    The engine runs meanwhile (each new instance is a no-step run on a warm sandbox), as in service;
    the clock stops when the last batch is committed (the runs are awaited afterwards, untimed).
    """
    await add_tenant(platform, TENANT, NO_STEP)
    await run_one(platform, TENANT)
    queue = [
        [(None, {"n": offset + i}) for i in range(min(100, count - offset))]
        for offset in range(0, count, 100)
    ]
    created: list[Any] = []

    async def creator() -> None:
        while queue:
            created.extend(await platform.create_instances(OPERATOR, TENANT, "flow", queue.pop()))

    watch = Stopwatch()
    await asyncio.gather(*(creator() for _ in range(creators)))
    elapsed = watch.seconds()
    for instance in created:
        await platform.engine.wait(TENANT, instance.id, statuses=FINISHED, timeout=600)
    return count / elapsed


SERVER = """
import sys, uvicorn
from benchmarks.bench_full import open_platform
from dispatcher.api import create_serving_app
from pathlib import Path
app = create_serving_app(lambda: open_platform(Path(sys.argv[1])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _http_setup(data_dir: Path) -> str:
    platform = await open_platform(data_dir)
    try:
        return await add_tenant(platform, TENANT, NO_STEP)
    finally:
        await platform.aclose()


async def _http_client(port: int, token: str, count: int, connections: int) -> float:
    import httpx

    url = f"http://127.0.0.1:{port}/client/v4/accounts/{TENANT}/workflows/flow/instances/batch"
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        for _ in range(400):  # wait for the server to listen; this also warms the tenant's sandbox
            try:
                (await client.post(url, json=[{"params": {}}])).raise_for_status()
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        queue = [
            [{"params": {"n": offset + i}} for i in range(min(100, count - offset))]
            for offset in range(0, count, 100)
        ]

        async def worker() -> None:
            while queue:
                (await client.post(url, json=queue.pop())).raise_for_status()

        watch = Stopwatch()
        await asyncio.gather(*(worker() for _ in range(connections)))
        rate = count / watch.seconds()
        # Untimed: let the server finish the runs, so that it shuts down idle.
        listing = url.removesuffix("/batch")
        for status in ("queued", "running"):
            for _ in range(600):  # polling a server: there is no event to wait on
                page = await client.get(listing, params={"status": status, "per_page": 1})
                if not page.json()["result"]:
                    break
                await asyncio.sleep(0.1)
        return rate


def _http_rate_run(count: int, connections: int = 4) -> float:
    """Instances created per second over HTTP: POST .../instances/batch (100 per request) to a real
    uvicorn server on 127.0.0.1 (its own process, engine running the instances) from
    ``connections`` concurrent keep-alive connections of an httpx client in this process.
    """
    with tempfile.TemporaryDirectory(prefix="tf-bench-http-") as tmp:
        data_dir = Path(tmp) / "data"
        token = asyncio.run(_http_setup(data_dir))
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(data_dir), str(port)], cwd=Path(__file__).parent.parent
        )
        try:
            return asyncio.run(_http_client(port, token, count, connections))
        finally:
            server.terminate()
            server.wait(timeout=60)


def run(quick: bool = False) -> dict[str, Any]:
    runs = 2 if quick else 5
    sequential = 20 if quick else 100
    concurrent = 200 if quick else 1_000
    latency, steps_per_s, concurrent_s = [], [], []
    for _ in range(runs):
        p50, per_s, total = in_platform(lambda p: _ten_step_figures(p, sequential, concurrent))
        latency.append(p50)
        steps_per_s.append(per_s)
        concurrent_s.append(total)
    figures: dict[str, Any] = {
        "latency_10_step_ms": summary(latency),
        "sequential_steps_per_s": summary(steps_per_s, 1),
        f"concurrent_{concurrent}x10_s": summary(concurrent_s),
        "concurrent_steps_per_s": summary([concurrent * 10 / s for s in concurrent_s], 1),
    }
    cold = [in_platform(lambda p: _cold_start(p, 5 if quick else 30)) for _ in range(runs)]
    figures["cold_start_new_version_ms"] = summary([c["new_version_ms"] for c in cold])
    figures["cold_start_known_version_ms"] = summary([c["known_version_ms"] for c in cold])
    for backend in ("wasm", "restricted"):
        prefix = "" if backend == "wasm" else "restricted_"
        warm = [
            in_platform(lambda p, b=backend: _warm_dispatch(p, 50 if quick else 300, b), synchronous="OFF")
            for _ in range(runs)
        ]
        figures[f"{prefix}warm_dispatch_us"] = summary([w["wake_to_recorded_us"] for w in warm], 1)
        figures[f"{prefix}warm_dispatch_executor_us"] = summary([w["executor_us"] for w in warm], 1)
        figures[f"{prefix}warm_dispatch_to_waiter_us"] = summary([w["to_waiter_us"] for w in warm], 1)
        calls = [
            in_platform(lambda p, b=backend: _host_call(p, b, 2 if quick else 5), synchronous="OFF")
            for _ in range(runs)
        ]
        figures[f"{prefix}host_call_us"] = summary(calls, 1)
    rate = [in_platform(lambda p: _create_rate(p, 1_000 if quick else 10_000)) for _ in range(runs)]
    figures["create_per_s_in_process"] = summary(rate, 0)
    http = [_http_rate_run(1_000 if quick else 10_000) for _ in range(runs)]
    figures["create_per_s_http"] = summary(http, 0)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=2))
