"""Scheduling: fairness between concurrency keys, limits, 1,000 x 10 concurrently."""

import asyncio
import contextlib
import time
from typing import Any

from engine import CreateRequest, EngineConfig, Journal, Status
from engine._ready import ReadyQueue

from .conftest import NS, Harness


def test_ready_queue_round_robin_and_limits() -> None:
    queue = ReadyQueue(max_running=3, max_running_per_key=2)
    for pk in range(10):
        queue.push(pk, "big")
    queue.push(100, "small")
    queue.push(100, "small")  # duplicates are ignored
    assert len(queue) == 11
    first = [queue.pop(), queue.pop(), queue.pop()]
    assert first == [(0, "big"), (100, "small"), (1, "big")]
    assert queue.pop() is None  # global limit
    queue.release("small")
    assert queue.pop() is None  # "big" is at its per-key limit and "small" is empty
    queue.release("big")
    assert queue.pop() == (2, "big")


async def test_a_flooding_key_cannot_starve_another(harness: Harness) -> None:
    @harness.workflow
    async def work(params: Any, step: Journal) -> Any:
        return await step.do("w", _short_io)

    engine = await harness.start(EngineConfig(max_concurrency=8, max_concurrency_per_key=8), real_clock=True)
    for _ in range(20):
        await engine.create_batch(
            "flood", [CreateRequest("work", concurrency_key="flood") for _ in range(100)]
        )
    lone = await engine.create("lone", CreateRequest("work", concurrency_key="lone"))
    await harness.wait(lone.id, namespace="lone")
    flood_done = len((await engine.list("flood", status="complete", limit=1000)).items)
    assert flood_done < 200, f"the lone instance waited for {flood_done} flood instances"


async def _short_io() -> int:
    await asyncio.sleep(0.002)
    return 1


async def test_per_key_concurrency_limit_holds(harness: Harness) -> None:
    running = {"now": 0, "max": 0}

    async def tracked() -> int:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        # Stay until the limit is reached (or long enough), so that reaching it does not depend on timing.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                while running["now"] < 3:
                    await asyncio.sleep(0.002)
        await asyncio.sleep(0.002)
        running["now"] -= 1
        return 1

    @harness.workflow
    async def limited(params: Any, step: Journal) -> Any:
        return await step.do("t", tracked)

    engine = await harness.start(EngineConfig(max_concurrency=50, max_concurrency_per_key=3), real_clock=True)
    created = await engine.create_batch(
        NS, [CreateRequest("limited", concurrency_key="k") for _ in range(30)]
    )
    for instance in created:
        await harness.wait(instance.id)
    assert running["max"] == 3


async def test_thousand_instances_of_ten_steps_complete_correctly(harness: Harness) -> None:
    @harness.workflow
    async def ten(params: Any, step: Journal) -> Any:
        total = 0
        for i in range(10):
            total += await step.do(f"step-{i}", lambda i=i: params * 100 + i)
        return total

    engine = await harness.start(real_clock=True)
    started = time.perf_counter()
    created = []
    for batch in range(10):
        created += await engine.create_batch(NS, [CreateRequest("ten", batch * 100 + i) for i in range(100)])
    for instance in created:
        done = await harness.wait(instance.id, timeout=60)
        assert done.status == Status.COMPLETE
        assert done.output == instance.params * 1000 + 45
    elapsed = time.perf_counter() - started
    page = await engine.list(NS, status="complete", limit=1000)
    assert len(page.items) == 1000
    steps = await harness.steps(created[-1].id)
    assert [s["name"] for s in steps] == [f"step-{i}" for i in range(10)]
    print(f"1,000 x 10 steps in {elapsed:.2f} s")


def test_ready_queue_per_key_limit_function() -> None:
    queue = ReadyQueue(
        max_running=10, max_running_per_key=5, key_limit=lambda key: 1 if key == "slow" else 99
    )
    for pk in range(3):
        queue.push(pk, "slow")
        queue.push(10 + pk, "fast")
    handed = [queue.pop() for _ in range(7)]
    assert [item for item in handed if item and item[1] == "slow"] == [(0, "slow")]
    assert len([item for item in handed if item and item[1] == "fast"]) == 3
