"""pause, resume, terminate, restart, delete, namespaces, batch atomicity."""

import asyncio
from typing import Any

import pytest

from engine import (
    CreateRequest,
    EngineConfig,
    EngineValidationError,
    InstanceExistsError,
    InstanceNotFoundError,
    InvalidTransitionError,
    Journal,
    RestartFrom,
    Status,
)

from .conftest import NS, Harness


async def test_pause_and_resume_during_a_sleep(harness: Harness) -> None:
    @harness.workflow
    async def sleeper(params: Any, step: Journal) -> Any:
        await step.sleep("nap", 1000)
        return await step.do("after", lambda: harness.count("after") or "done")

    engine = await harness.start()
    instance = await harness.create("sleeper")
    await harness.wait(instance.id, Status.WAITING)
    paused = await engine.pause(NS, instance.id)
    assert paused.status == Status.PAUSED
    await harness.advance(5000)
    await asyncio.sleep(0.1)
    assert (await engine.get(NS, instance.id)).status == Status.PAUSED
    assert "after" not in harness.calls
    await engine.resume(NS, instance.id)
    done = await harness.wait(instance.id)
    assert done.output == "done"
    assert harness.calls["after"] == 1


async def test_pause_while_running_takes_effect_at_the_next_step(harness: Harness) -> None:
    gate = asyncio.Event()

    async def blocked() -> str:
        await gate.wait()
        return "first"

    @harness.workflow
    async def busy(params: Any, step: Journal) -> Any:
        a = await step.do("first", blocked)
        b = await step.do("second", lambda: harness.count("second") or "second")
        return [a, b]

    engine = await harness.start()
    instance = await harness.create("busy")
    await harness.wait(instance.id, Status.RUNNING)
    assert (await engine.pause(NS, instance.id)).status == Status.WAITING_FOR_PAUSE
    gate.set()
    await harness.wait(instance.id, Status.PAUSED)
    assert "second" not in harness.calls
    await engine.resume(NS, instance.id)
    done = await harness.wait(instance.id)
    assert done.output == ["first", "second"]


async def test_terminate_stops_a_running_instance_and_its_commits(harness: Harness) -> None:
    gate = asyncio.Event()

    async def long_step() -> str:
        await gate.wait()
        harness.count("long finished")
        return "late"

    @harness.workflow
    async def doomed(params: Any, step: Journal) -> Any:
        await step.do("long", long_step)
        harness.count("after")
        return "never"

    engine = await harness.start()
    instance = await harness.create("doomed")
    await harness.wait(instance.id, Status.RUNNING)
    terminated = await engine.terminate(NS, instance.id)
    assert terminated.status == Status.TERMINATED
    gate.set()
    await asyncio.sleep(0.05)
    final = await engine.get(NS, instance.id)
    assert final.status == Status.TERMINATED and final.output is None
    assert "after" not in harness.calls
    steps = await harness.steps(instance.id)
    assert steps == [{"type": "termination", "trigger": {"source": "api"}}]
    with pytest.raises(InvalidTransitionError, match=r"cannot terminate instance .*: it is terminated"):
        await engine.terminate(NS, instance.id)
    with pytest.raises(InvalidTransitionError):
        await engine.resume(NS, instance.id)


async def test_restart_from_a_step_keeps_earlier_results(harness: Harness) -> None:
    @harness.workflow
    async def pipeline(params: Any, step: Journal) -> Any:
        a = await step.do("a", lambda: harness.count("a") or 1)
        b = await step.do("b", lambda: harness.count("b") or 2)
        c = await step.do("c", lambda: harness.count("c") or 3)
        return a + b + c

    engine = await harness.start()
    instance = await harness.create("pipeline")
    assert (await harness.wait(instance.id)).output == 6
    await engine.restart(NS, instance.id, RestartFrom("b"))
    assert (await harness.wait(instance.id)).output == 6
    assert harness.calls == {"a": 1, "b": 2, "c": 2}
    await engine.restart(NS, instance.id)
    assert (await harness.wait(instance.id)).output == 6
    assert harness.calls == {"a": 2, "b": 3, "c": 3}
    with pytest.raises(EngineValidationError, match="no step named 'zzz'"):
        await engine.restart(NS, instance.id, RestartFrom("zzz"))


async def test_restart_unconsumes_events_of_dropped_waits(harness: Harness) -> None:
    @harness.workflow
    async def waits(params: Any, step: Journal) -> Any:
        event = await step.wait_for_event("w", "go")
        return event["payload"]

    engine = await harness.start()
    instance = await harness.create("waits")
    await engine.send_event(NS, instance.id, "go", "once")
    assert (await harness.wait(instance.id)).output == "once"
    await engine.restart(NS, instance.id)
    assert (await harness.wait(instance.id)).output == "once"


async def test_namespaces_isolate_ids(harness: Harness) -> None:
    @harness.workflow
    async def echo(params: Any, step: Journal) -> Any:
        return params

    engine = await harness.start()
    await harness.create("echo", "a", id="order-1", namespace="tenant-a")
    await harness.create("echo", "b", id="order-1", namespace="tenant-b")
    assert (await harness.wait("order-1", namespace="tenant-a")).output == "a"
    assert (await harness.wait("order-1", namespace="tenant-b")).output == "b"
    with pytest.raises(InstanceExistsError, match="'order-1' already exists"):
        await harness.create("echo", "again", id="order-1", namespace="tenant-a")
    with pytest.raises(InstanceNotFoundError):
        await engine.get("tenant-c", "order-1")


async def test_create_batch_is_all_or_nothing(harness: Harness) -> None:
    @harness.workflow
    async def echo(params: Any, step: Journal) -> Any:
        return params

    engine = await harness.start()
    await harness.create("echo", id="taken")
    batch = [CreateRequest("echo", i, id=f"new-{i}") for i in range(5)] + [CreateRequest("echo", id="taken")]
    with pytest.raises(InstanceExistsError):
        await engine.create_batch(NS, batch)
    assert (await engine.list(NS)).items[0].id == "taken"
    assert len((await engine.list(NS)).items) == 1
    with pytest.raises(EngineValidationError, match="101 in one batch; the limit is 100"):
        await engine.create_batch(NS, [CreateRequest("echo") for _ in range(101)])
    with pytest.raises(EngineValidationError, match=r"instances\[2\].id"):
        await engine.create_batch(
            NS, [CreateRequest("echo"), CreateRequest("echo"), CreateRequest("echo", id="-bad")]
        )
    created = await engine.create_batch(NS, [CreateRequest("echo", i) for i in range(100)])
    assert len(created) == 100
    for instance in created:
        assert (await harness.wait(instance.id)).output == instance.params


async def test_delete_removes_everything(harness: Harness) -> None:
    @harness.workflow
    async def sleepy(params: Any, step: Journal) -> Any:
        await step.sleep("s", 1000)

    engine = await harness.start()
    instance = await harness.create("sleepy")
    await harness.wait(instance.id, Status.WAITING)
    await engine.delete(NS, instance.id)
    with pytest.raises(InstanceNotFoundError):
        await engine.get(NS, instance.id)
    await harness.advance(2000)
    await asyncio.sleep(0.05)
    with pytest.raises(InstanceNotFoundError):
        await engine.describe(NS, instance.id)


async def test_a_run_can_pause_its_own_instance_and_params_can_be_replaced(harness: Harness) -> None:
    @harness.workflow
    async def self_pausing(params: Any, step: Journal) -> Any:
        await step.do("first", lambda: 1)
        if params == "pause":
            step.pause_now()
        return params

    engine = await harness.start()
    instance = await harness.create("self_pausing", "pause")
    await harness.wait(instance.id, Status.PAUSED)
    await engine.replace_params(NS, instance.id, "go on")
    await engine.resume(NS, instance.id)
    done = await harness.wait(instance.id)
    assert done.output == "go on"
    with pytest.raises(InvalidTransitionError, match="cannot change the params of"):
        await engine.replace_params(NS, instance.id, "too late")


async def test_a_storage_error_during_a_run_is_retried_not_fatal(harness: Harness) -> None:
    @harness.workflow
    async def two(params: Any, step: Journal) -> Any:
        a = await step.do("a", lambda: harness.count("a") or 1)
        b = await step.do("b", lambda: harness.count("b") or 2)
        return a + b

    engine = await harness.start(EngineConfig(storage_retry_ms=20), real_clock=True)
    save_step = engine.store.save_step
    failures = {"left": 1}

    async def flaky_save(pk: int, generation: int, entry: Any) -> None:
        if entry.name == "b" and failures["left"]:
            failures["left"] -= 1
            raise OSError("database or disk is full")
        await save_step(pk, generation, entry)

    engine.store.save_step = flaky_save  # type: ignore[method-assign]
    done = await harness.wait((await harness.create("two")).id)
    assert done.status == Status.COMPLETE and done.output == 3
    assert harness.calls == {"a": 1, "b": 2}  # "a" was committed before the failure and never ran again
