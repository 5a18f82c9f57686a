"""Where the time of one full-stack wake-up goes: the stages behind the ``bench_full`` figures,
measured by wrapping the dispatcher's, engine's and artifact store's methods with timers for the
duration of a run (the product code is untouched). Reports numbers; asserts nothing.

    python -m benchmarks full_breakdown [--quick]

- ``seq_<sync>_*``: one 10-step instance at a time (wasm tenant), p50 in µs per instance of:
  ``create`` (``create_instance`` call), ``to_execute`` (create returned -> executor called: the
  engine's claim), ``execute`` (the executor: ``acquire`` + ``invoke`` + envelope work),
  ``after`` (executor returned -> ``engine.wait`` returned: outcome committed, waiter woken, one
  read), and per step: ``bridge_do``/``bridge_commit`` (the guest thread's host call, hop to the
  event loop and back included), ``journal_begin``/``journal_finish`` (the engine's part on the
  loop, the commit included); ``guest_per_step``: what ``invoke`` leaves after the host calls,
  divided by 10 (guest code, SDK, wasm boundary, thread wake-ups). ``<sync>`` is FULL or OFF.
- ``cold_*``: p50 in µs of the stages of a freshly deployed version's first wake: ``read_bundle``
  and ``get_derived`` (artifact store), ``prepare`` (backend: the derived form), ``put_derived``,
  ``load`` (backend: a sandbox from bundle + derived form).
- ``hostcall_*``: a replayed ``step.do`` (journal hit): ``total`` as the guest thread waits for
  it, ``on_loop`` the bridge's coroutine on the event loop; the rest is the two thread hops.
- ``warm_<backend>_*``: a no-step run on a warm sandbox (engine at ``synchronous=OFF``, as
  ``bench_full``'s ``warm_dispatch_us``), p50 in µs of the stages between ``create_instances``
  returning and ``finish_run`` returning: ``to_run`` (the run task starts), ``load_run`` (the store
  read; absent when the fast path for fresh instances skips it), ``run_to_execute`` (the rest of the
  engine's claim), ``exec_to_acquire`` (envelope, tenant, cache key), ``acquire``, ``to_invoke``
  (bridge and event), ``invoke``, ``invoke_to_return`` (output, logs, release), ``to_finish``
  (outcome encoded), ``finish_run``, and ``total``. The caller awaits a future set when
  ``finish_run`` returns (not ``engine.wait``, whose read would overlap the run and blur the stages).
- ``machine_*``: what one thread hand-off costs on this machine, p50 of 5,000 round trips:
  ``thread_round_trip_us`` (two threads, ``threading.Event`` ping-pong) and ``loop_hop_us`` (a
  thread -> ``call_soon_threadsafe`` -> the event loop -> ``concurrent.futures.Future`` -> back:
  the hop of every host call). On a VM, waking an idle vCPU dominates both.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.bench_full import (
    NO_STEP,
    REPLAY,
    REPLAY_STEPS,
    TEN_STEPS,
    TENANT,
    add_tenant,
    in_platform,
    run_one,
)
from dispatcher import OPERATOR, Platform, _bridge, _cache
from engine import FINISHED, Journal

Samples = dict[str, list[float]]


@contextmanager
def _timed(owner: Any, name: str, samples: Samples, label: str) -> Iterator[None]:
    """Replace the method ``owner.name`` (a coroutine or a plain one) by one that records its duration
    under ``label``; a missing method is left alone (the code under measurement moves on)."""
    original = getattr(owner, name, None)
    if original is None:
        yield
        return
    wrapper: Callable[..., Any]
    if inspect.iscoroutinefunction(original):

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                samples[label].append(time.perf_counter() - started)

    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                samples[label].append(time.perf_counter() - started)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def _timed_sync(owner: Any, name: str, record: Callable[[Any, float], None]) -> Iterator[None]:
    original = getattr(owner, name)

    def wrapper(self: Any, call: str, args: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, call, args)
        finally:
            record(call, time.perf_counter() - started)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _p50_us(values: list[float]) -> float:
    return round(statistics.median(values) * 1e6, 1) if values else float("nan")


async def _sequential(platform: Platform, count: int) -> dict[str, float]:
    await add_tenant(platform, TENANT, TEN_STEPS)
    for _ in range(10):
        await run_one(platform, TENANT)
    samples: Samples = collections.defaultdict(list)
    starts: list[float] = []
    executor = platform.executor
    inner = executor.execute

    async def execute(run: Any) -> Any:
        starts.append(time.perf_counter())
        try:
            return await inner(run)
        finally:
            samples["execute"].append(time.perf_counter() - starts[-1])

    def bridge(call: str, seconds: float) -> None:
        samples["bridge_" + call.removeprefix("step.")].append(seconds)

    invokes: list[float] = []
    acquire = _cache.WarmCache.acquire

    async def timed_acquire(self: Any, key: Any) -> Any:
        started = time.perf_counter()
        sandbox = await acquire(self, key)
        samples["acquire"].append(time.perf_counter() - started)
        invoke = sandbox.invoke
        if not getattr(invoke, "_bench_timed", False):

            async def timed_invoke(event: Any, host: Any) -> Any:
                begun = time.perf_counter()
                try:
                    return await invoke(event, host)
                finally:
                    invokes.append(time.perf_counter() - begun)

            timed_invoke._bench_timed = True  # type: ignore[attr-defined]
            sandbox.invoke = timed_invoke
        return sandbox

    executor.execute = execute  # type: ignore[method-assign]
    _cache.WarmCache.acquire = timed_acquire  # type: ignore[method-assign]
    try:
        with (
            _timed(Journal, "begin_step", samples, "journal_begin"),
            _timed(Journal, "finish_attempt", samples, "journal_finish"),
            _timed(Journal, "finish_attempt_blocking", samples, "journal_finish"),
            _timed_sync(_bridge.StepBridge, "call", bridge),
        ):
            for _ in range(count):
                started = time.perf_counter()
                instance = await platform.create_instance(OPERATOR, TENANT, "flow")
                created = time.perf_counter()
                await platform.engine.wait(TENANT, instance.id, statuses=FINISHED)
                done = time.perf_counter()
                samples["create"].append(created - started)
                samples["to_execute"].append(starts[-1] - created)
                samples["after"].append(done - starts[-1] - samples["execute"][-1])
                samples["total"].append(done - started)
    finally:
        executor.execute = inner  # type: ignore[method-assign]
        _cache.WarmCache.acquire = acquire  # type: ignore[method-assign]
    figures = {name: _p50_us(values) for name, values in samples.items()}
    figures["invoke"] = _p50_us(invokes)
    figures["guest_per_step"] = round(
        (figures["invoke"] - 10 * (figures.get("bridge_do", 0.0) + figures.get("bridge_commit", 0.0))) / 10, 1
    )
    return figures


async def _cold(platform: Platform, count: int) -> dict[str, float]:
    await add_tenant(platform, TENANT, NO_STEP)
    await run_one(platform, TENANT)
    samples: Samples = collections.defaultdict(list)
    backend = platform.backends["wasm"]
    with (
        _timed(platform.artifacts, "read_bundle", samples, "read_bundle"),
        _timed(platform.artifacts, "get_derived", samples, "get_derived"),
        _timed(platform.artifacts, "put_derived", samples, "put_derived"),
        _timed(backend, "prepare", samples, "prepare"),
        _timed(backend, "load", samples, "load"),
    ):
        for i in range(count):
            source = f"# revision {i}\n{NO_STEP}"
            await platform.deploy(OPERATOR, TENANT, source.encode(), filename="main.py", workflow="flow")
            await run_one(platform, TENANT)
            await asyncio.sleep(0.005)
    return {name: _p50_us(values) for name, values in samples.items()}


async def _host_call(platform: Platform, instances: int) -> dict[str, float]:
    await add_tenant(platform, TENANT, REPLAY)
    samples: Samples = collections.defaultdict(list)
    calls: list[float] = []

    def bridge(call: str, seconds: float) -> None:
        if call == "step.do":
            calls.append(seconds)

    with (
        _timed(_bridge.StepBridge, "_step", samples, "on_loop"),
        _timed_sync(_bridge.StepBridge, "call", bridge),
    ):
        for _ in range(instances):
            calls.clear()
            samples.clear()
            await run_one(platform, TENANT)
    # the last REPLAY_STEPS step.do calls are the replay after the sleep (journal hits)
    replay, on_loop = calls[-REPLAY_STEPS:], samples["on_loop"][-REPLAY_STEPS - 1 : -1]
    return {"total": _p50_us(replay), "on_loop": _p50_us(on_loop)}


_WARM_STAGES = (
    ("created", "run", "to_run"),
    ("run", "load0", "run_to_load"),
    ("load0", "load1", "load_run"),
    ("load1", "exec0", "run_to_execute"),
    ("exec0", "acq0", "exec_to_acquire"),
    ("acq0", "acq1", "acquire"),
    ("acq1", "inv0", "to_invoke"),
    ("inv0", "inv1", "invoke"),
    ("inv1", "exec1", "invoke_to_return"),
    ("exec1", "fin0", "to_finish"),
    ("fin0", "fin1", "finish_run"),
    ("created", "fin1", "total"),
)


async def _warm_stages(platform: Platform, count: int, backend: str) -> dict[str, float]:
    await add_tenant(platform, TENANT, NO_STEP, backend=backend)
    for _ in range(20):
        await run_one(platform, TENANT)
    engine, store, executor, cache = platform.engine, platform.engine.store, platform.executor, platform.cache
    stamps: dict[str, float] = {}
    done: list[asyncio.Future[None]] = []

    def stamped(owner: Any, name: str, before: str, after: str | None = None) -> Callable[[], None]:
        original = getattr(owner, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            stamps[before] = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                if after is not None:
                    stamps[after] = time.perf_counter()
                if after == "fin1" and done and not done[0].done():
                    done[0].set_result(None)

        setattr(owner, name, wrapper)
        return lambda: setattr(owner, name, original)

    undo = [
        stamped(engine, "_execute", "run"),
        stamped(store, "load_run", "load0", "load1"),
        stamped(executor, "execute", "exec0", "exec1"),
        stamped(store, "finish_run", "fin0", "fin1"),
        stamped(cache, "acquire", "acq0", "acq1"),
    ]
    for held in [*cache._lru.values()]:  # the warm sandboxes' invoke
        for warm in held.idle:
            undo.append(stamped(warm, "invoke", "inv0", "inv1"))
    samples: Samples = collections.defaultdict(list)
    try:
        for _ in range(count):
            stamps.clear()
            done[:] = [asyncio.get_running_loop().create_future()]
            await platform.create_instance(OPERATOR, TENANT, "flow")
            stamps["created"] = time.perf_counter()
            await asyncio.wait_for(done[0], 60)
            if "load0" not in stamps:  # the fresh-instance fast path: no read
                stamps["load0"] = stamps["load1"] = stamps["run"]
            for start, end, label in _WARM_STAGES:
                if start in stamps and end in stamps:
                    samples[label].append(stamps[end] - stamps[start])
    finally:
        for restore in reversed(undo):
            restore()
    return {name: _p50_us(values) for name, values in samples.items()}


def _thread_round_trip(count: int) -> float:
    ping, pong = threading.Event(), threading.Event()

    def other() -> None:
        for _ in range(count):
            ping.wait()
            ping.clear()
            pong.set()

    thread = threading.Thread(target=other)
    thread.start()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        ping.set()
        pong.wait()
        pong.clear()
        samples.append(time.perf_counter() - started)
    thread.join()
    return _p50_us(samples)


async def _loop_hop(count: int) -> float:
    loop = asyncio.get_running_loop()

    def hops() -> float:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            future: concurrent.futures.Future[int] = concurrent.futures.Future()
            loop.call_soon_threadsafe(future.set_result, 1)
            future.result()
            samples.append(time.perf_counter() - started)
        return _p50_us(samples)

    return await asyncio.to_thread(hops)


def run(quick: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    count = 30 if quick else 300
    for sync in ("FULL", "OFF"):
        stages = in_platform(lambda p: _sequential(p, count), synchronous=sync)
        figures.update({f"seq_{sync}_{name}_us": value for name, value in stages.items()})
    for backend in ("wasm", "restricted"):
        warm = in_platform(lambda p, b=backend: _warm_stages(p, 50 if quick else 300, b), synchronous="OFF")
        figures.update({f"warm_{backend}_{name}_us": value for name, value in warm.items()})
    cold = in_platform(lambda p: _cold(p, 10 if quick else 40))
    figures.update({f"cold_{name}_us": value for name, value in cold.items()})
    host = in_platform(lambda p: _host_call(p, 2 if quick else 5), synchronous="OFF")
    figures.update({f"hostcall_{name}_us": value for name, value in host.items()})
    figures["machine_thread_round_trip_us"] = _thread_round_trip(5_000)
    figures["machine_loop_hop_us"] = asyncio.run(_loop_hop(5_000))
    return figures


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
