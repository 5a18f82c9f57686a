"""Durable timers and events."""

import asyncio
from typing import Any

import pytest

from engine import EventTimeoutError, InvalidTransitionError, Journal, Status, iso_ms

from .conftest import NS, Harness


async def _wait_waiting_until(harness: Harness, instance_id: str, wake_at: int) -> None:
    assert harness.engine is not None
    for _ in range(1000):
        instance = await harness.engine.get(NS, instance_id)
        if instance.status == Status.WAITING and instance.wake_at == wake_at:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"instance is {instance.status} with wake_at {instance.wake_at}, expected {wake_at}")


async def test_sleep_wakes_exactly_when_due(harness: Harness) -> None:
    @harness.workflow
    async def napper(params: Any, step: Journal) -> Any:
        await step.sleep("nap", "2 hours")
        return "rested"

    await harness.start()
    start = harness.clock.now_ms()
    instance = await harness.create("napper")
    await _wait_waiting_until(harness, instance.id, start + 7_200_000)
    await harness.advance(7_199_999)
    await asyncio.sleep(0.05)
    assert (await harness.engine.get(NS, instance.id)).status == Status.WAITING  # type: ignore[union-attr]
    await harness.advance(1)
    done = await harness.wait(instance.id)
    assert done.output == "rested"
    (sleep,) = await harness.steps(instance.id)
    assert sleep["type"] == "sleep" and sleep["finished"] is True


async def test_sleep_until_past_is_an_error_future_works(harness: Harness) -> None:
    @harness.workflow
    async def until(params: Any, step: Journal) -> Any:
        try:
            await step.sleep_until("past", params["past"])
        except ValueError as exc:
            past_error = str(exc)
        await step.sleep_until("future", params["future"])
        return past_error

    await harness.start()
    now = harness.clock.now_ms()
    instance = await harness.create("until", {"past": now - 1, "future": iso_ms(now + 60_000)})
    await _wait_waiting_until(harness, instance.id, now + 60_000)
    await harness.advance(60_000)
    done = await harness.wait(instance.id)
    assert "is in the past" in done.output


async def test_sleep_longer_than_a_year_is_rejected(harness: Harness) -> None:
    @harness.workflow
    async def too_long(params: Any, step: Journal) -> Any:
        await step.sleep("forever", "366 days")

    await harness.start()
    done = await harness.wait((await harness.create("too_long")).id)
    assert done.status == Status.ERRORED
    assert done.error is not None and "exceeds the maximum of 365 days" in done.error.message


async def test_event_sent_before_the_wait_is_consumed_when_it_starts(harness: Harness) -> None:
    @harness.workflow
    async def approval(params: Any, step: Journal) -> Any:
        await step.sleep("first", 1000)
        event = await step.wait_for_event("approve", "approved", timeout="1 hour")
        return event

    await harness.start()
    instance = await harness.create("approval")
    await harness.wait(instance.id, Status.WAITING)
    await harness.engine.send_event(NS, instance.id, "approved", {"by": "ada"})  # type: ignore[union-attr]
    await harness.advance(1000)
    done = await harness.wait(instance.id)
    assert done.output["payload"] == {"by": "ada"}
    assert done.output["type"] == "approved"
    assert done.output["timestamp"] == iso_ms(harness.clock.now_ms() - 1000)


async def test_event_wakes_a_waiting_instance(harness: Harness) -> None:
    @harness.workflow
    async def waiter(params: Any, step: Journal) -> Any:
        return (await step.wait_for_event("w", "go"))["payload"]

    await harness.start()
    instance = await harness.create("waiter")
    await harness.wait(instance.id, Status.WAITING)
    await harness.engine.send_event(NS, instance.id, "other", 1)  # type: ignore[union-attr]
    await harness.engine.send_event(NS, instance.id, "go", [1, 2])  # type: ignore[union-attr]
    done = await harness.wait(instance.id)
    assert done.output == [1, 2]


async def test_wait_timeout_is_catchable(harness: Harness) -> None:
    @harness.workflow
    async def timeout(params: Any, step: Journal) -> Any:
        try:
            await step.wait_for_event("approval", "approved", timeout="10 minutes")
        except EventTimeoutError as exc:
            return f"timed out: {exc}"
        return "approved"

    await harness.start()
    instance = await harness.create("timeout")
    await _wait_waiting_until(harness, instance.id, harness.clock.now_ms() + 600_000)
    await harness.advance(600_000)
    done = await harness.wait(instance.id)
    assert done.output == "timed out: step 'approval' timed out waiting for an event of type 'approved'"
    (wait,) = await harness.steps(instance.id)
    assert wait["error"]["name"] == "EventTimeoutError"


async def test_two_waits_for_one_type_consume_events_in_order(harness: Harness) -> None:
    @harness.workflow
    async def two(params: Any, step: Journal) -> Any:
        await step.sleep("gate", 1000)  # else it could finish before the third event is sent
        first = await step.wait_for_event("first", "vote")
        second = await step.wait_for_event("second", "vote")
        return [first["payload"], second["payload"]]

    await harness.start()
    instance = await harness.create("two")
    await harness.wait(instance.id, Status.WAITING)
    for payload in ("yes", "no", "extra"):
        await harness.engine.send_event(NS, instance.id, "vote", payload)  # type: ignore[union-attr]
    await harness.advance(1000)
    done = await harness.wait(instance.id)
    assert done.output == ["yes", "no"]


async def test_events_to_finished_or_missing_instances_are_refused(harness: Harness) -> None:
    @harness.workflow
    async def quick(params: Any, step: Journal) -> Any:
        return 1

    engine = await harness.start()
    done = await harness.wait((await harness.create("quick")).id)
    with pytest.raises(InvalidTransitionError, match=r"cannot send an event to instance .*: it is complete"):
        await engine.send_event(NS, done.id, "x")
    with pytest.raises(LookupError):
        await engine.send_event(NS, "missing", "x")
    with pytest.raises(ValueError, match="event type"):
        await engine.send_event(NS, done.id, "bad type!")
