"""Spinning on an expected answer (``PoolConfig.spin_us``): bounded, never while idle, and no limit
is weakened by it (a worker stuck in a tenant CPU loop is still killed on time)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import LimitExceededError
from sandbox._restricted import PoolConfig, RestrictedBackend

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_SPIN = 10_000
"""The largest spin allowed (10 ms), so that any spinning where there should be none shows."""
STEPS = "for i in range(30):\n    step.do('s' + str(i), lambda: i)\nreturn 'done'"


def cpu_seconds(schedstat: str) -> float:
    """CPU time of a process or thread from its ``schedstat`` (nanoseconds, unlike ``stat``'s ticks)."""
    return int(Path(schedstat).read_text().split()[0]) / 1e9


def worker_cpu(backend: RestrictedBackend) -> float:
    return sum(cpu_seconds(f"/proc/{w['pid']}/schedstat") for w in backend.pool_snapshot()["workers"])


def readers_cpu(backend: RestrictedBackend) -> float:
    total = 0.0
    for entry in backend.pool_snapshot()["workers"]:
        worker = backend._worker(entry["id"])
        assert worker is not None
        total += cpu_seconds(f"/proc/self/task/{worker._thread.native_id}/schedstat")
    return total


async def test_spin_us_is_a_finite_knob() -> None:
    assert 0 < PoolConfig().spin_us <= MAX_SPIN
    for bad in (-1, MAX_SPIN + 1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"PoolConfig\.spin_us"):
            PoolConfig(spin_us=bad)  # type: ignore[arg-type]
    assert PoolConfig(spin_us=0).spin_us == 0


@pytest.mark.parametrize("spin_us", [0, MAX_SPIN])
async def test_results_are_the_same_with_and_without_spinning(spin_us: int) -> None:
    async with RestrictedBackend(pool_size=1, spin_us=spin_us) as backend:
        sandbox = await backend.load(make_bundle(STEPS), limits=FAST_LIMITS)
        host = FakeHost()
        result = await sandbox.invoke(event(), host)
        assert result.output == "done" and result.host_calls == 60  # do + commit per step
        host.replay()
        replayed = await sandbox.invoke(event(), host)
        assert replayed.output == "done" and replayed.host_calls == 30  # every step cached


async def test_nobody_spins_while_idle() -> None:
    async with RestrictedBackend(pool_size=2, spin_us=MAX_SPIN) as backend:
        await backend.wait_ready()
        sandbox = await backend.load(make_bundle(STEPS), limits=FAST_LIMITS)
        idle_workers = idle_readers = 0.0
        for _ in range(5):
            assert (await sandbox.invoke(event(), FakeHost())).output == "done"
            # Right after an outcome: a spin while waiting for the next request would show here.
            workers, readers = worker_cpu(backend), readers_cpu(backend)
            await asyncio.sleep(0.1)
            idle_workers += worker_cpu(backend) - workers
            idle_readers += readers_cpu(backend) - readers
        assert idle_workers < 0.003, f"idle workers used {idle_workers:.4f} s of CPU in 0.5 s"
        assert idle_readers < 0.003, f"idle readers used {idle_readers:.4f} s of CPU in 0.5 s"


async def test_slow_answers_turn_spinning_off() -> None:
    """A host slower than the bound: the worker spins at most once in a row, not on every call."""

    class SlowHost(FakeHost):
        def call(self, name: str, args: Any) -> Any:
            time.sleep(0.03)
            return super().call(name, args)

    async with RestrictedBackend(pool_size=1, spin_us=MAX_SPIN) as backend:
        sandbox = await backend.load(make_bundle(STEPS), limits=FAST_LIMITS)
        result = await sandbox.invoke(event(), SlowHost())
        assert result.output == "done"
        # 60 answers of 30 ms each: spinning 10 ms on every one would take 0.6 s of CPU.
        assert result.stats["cpu_ms"] < 250, result.stats


async def test_a_tenant_cpu_loop_after_host_calls_is_still_killed_on_its_cpu_budget() -> None:
    source = "for i in range(50):\n    step.do('s' + str(i), lambda: i)\nwhile True:\n    pass"
    limits = FAST_LIMITS.override(cpu_seconds=0.5, wall_seconds=10.0)
    async with RestrictedBackend(pool_size=1, spin_us=MAX_SPIN) as backend:
        sandbox = await backend.load(make_bundle(source), limits=limits)
        started = time.monotonic()
        with pytest.raises(LimitExceededError) as info:
            await sandbox.invoke(event(), FakeHost())
        assert info.value.limit == "cpu"
        assert time.monotonic() - started < 5.0
        again = await backend.load(make_bundle("return step.do('a', lambda: 2)"), limits=limits)
        assert (await again.invoke(event(), FakeHost())).output == 2


async def test_a_tenant_cpu_loop_after_host_calls_is_still_killed_on_the_wall_clock() -> None:
    source = "for i in range(50):\n    step.do('s' + str(i), lambda: i)\nwhile True:\n    pass"
    limits = FAST_LIMITS.override(cpu_seconds=30.0, wall_seconds=0.5)
    async with RestrictedBackend(pool_size=1, spin_us=MAX_SPIN) as backend:
        sandbox = await backend.load(make_bundle(source), limits=limits)
        pid = backend.pool_snapshot()["workers"][0]["pid"]
        started = time.monotonic()
        with pytest.raises(LimitExceededError) as info:
            await sandbox.invoke(event(), FakeHost())
        elapsed = time.monotonic() - started
        assert info.value.limit == "wall"
        assert elapsed < 2.5, f"killed after {elapsed:.2f} s for a 0.5 s wall-clock limit"
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                break
            await asyncio.sleep(0.01)
        assert not Path(f"/proc/{pid}").exists(), "the spinning worker outlived its wall-clock kill"
