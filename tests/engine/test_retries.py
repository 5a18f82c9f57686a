"""Retries: exact backoff (manual clock), per-attempt timeouts, NonRetryableError, attempts recorded."""

import asyncio
import math
from typing import Any

import pytest

from engine import FINISHED, Journal, NonRetryableError, Status, StepFailedError

from .conftest import NS, Harness, always_fail

T0 = 1_700_000_000_000


async def _pending_wake(harness: Harness, instance_id: str) -> int | None:
    """The instance's next timer, once it has one in the future (or None once it finished)."""
    assert harness.engine is not None
    for _ in range(1000):
        instance = await harness.engine.get(NS, instance_id)
        if instance.status in FINISHED:
            return None
        if instance.status == Status.WAITING and (instance.wake_at or 0) > harness.clock.now_ms():
            return instance.wake_at
        await asyncio.sleep(0.005)
    raise AssertionError("the instance never set a future timer")


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        ("constant", [1000, 1000, 1000]),
        ("linear", [1000, 2000, 3000]),
        ("exponential", [1000, 2000, 4000]),
    ],
)
async def test_backoff_is_exact(harness: Harness, backoff: str, delays: list[int]) -> None:
    @harness.workflow
    async def flaky(params: Any, step: Journal) -> Any:
        config = {"retries": {"limit": 3, "delay": "1 second", "backoff": backoff}}
        return await step.do("call", always_fail("down"), config=config)

    await harness.start()
    instance = await harness.create("flaky")
    for delay in delays:
        now = harness.clock.now_ms()
        assert await _pending_wake(harness, instance.id) == now + delay
        await harness.advance(delay)
    done = await harness.wait(instance.id)
    assert done.status == Status.ERRORED
    assert done.error is not None
    assert (done.error.name, done.error.message) == ("RuntimeError", "down")
    (step,) = await harness.steps(instance.id)
    assert len(step["attempts"]) == 4
    assert all(a["success"] is False and a["error"] == {"name": "RuntimeError", "message": "down"}
               for a in step["attempts"])  # fmt: skip
    assert step["success"] is False


async def test_default_retry_policy_is_five_retries_exponential_from_ten_seconds(harness: Harness) -> None:
    @harness.workflow
    async def defaults(params: Any, step: Journal) -> Any:
        return await step.do("call", always_fail())

    await harness.start()
    instance = await harness.create("defaults")
    for delay in (10_000, 20_000, 40_000, 80_000, 160_000):
        assert await _pending_wake(harness, instance.id) == harness.clock.now_ms() + delay
        await harness.advance(delay)
    assert (await harness.wait(instance.id)).status == Status.ERRORED
    assert len((await harness.steps(instance.id))[0]["attempts"]) == 6


async def test_unlimited_retries_and_zero_delay_retry_in_the_same_run(harness: Harness) -> None:
    attempts: list[int] = []

    def eventually(ctx: dict[str, Any]) -> str:
        attempts.append(ctx["attempt"])
        if ctx["attempt"] < 25:
            raise ValueError("not yet")
        return "ok"

    @harness.workflow
    async def patient(params: Any, step: Journal) -> Any:
        config = {"retries": {"limit": math.inf, "delay": 0, "backoff": "constant"}}
        return await step.do("call", eventually, config=config)

    await harness.start()
    done = await harness.wait((await harness.create("patient")).id)
    assert done.output == "ok"
    assert attempts == list(range(1, 26))


async def test_retry_succeeds_after_delay_and_result_is_kept(harness: Harness) -> None:
    @harness.workflow
    async def second_time(params: Any, step: Journal) -> Any:
        def fn(ctx: dict[str, Any]) -> int:
            harness.count("attempt")
            if ctx["attempt"] == 1:
                raise ConnectionError("flaky")
            return 7

        return await step.do(
            "call", fn, config={"retries": {"limit": 2, "delay": 500, "backoff": "constant"}}
        )

    await harness.start()
    instance = await harness.create("second_time")
    await _pending_wake(harness, instance.id)
    await harness.advance(500)
    done = await harness.wait(instance.id)
    assert done.output == 7
    assert harness.calls["attempt"] == 2
    (step,) = await harness.steps(instance.id)
    assert [a["success"] for a in step["attempts"]] == [False, True]
    assert step["attempts"][0]["error"] == {"name": "ConnectionError", "message": "flaky"}


async def test_non_retryable_error_stops_retries_and_can_be_caught(harness: Harness) -> None:
    def declined() -> Any:
        harness.count("charge")
        raise NonRetryableError("card declined")

    @harness.workflow
    async def charge(params: Any, step: Journal) -> Any:
        try:
            await step.do("charge", declined)
        except StepFailedError as exc:
            return {"caught": exc.error_name, "message": exc.message}
        return "no"

    await harness.start()
    done = await harness.wait((await harness.create("charge")).id)
    assert done.output == {"caught": "NonRetryableError", "message": "card declined"}
    assert harness.calls["charge"] == 1


async def test_per_attempt_timeout(harness: Harness) -> None:
    async def slow(ctx: dict[str, Any]) -> str:
        if ctx["attempt"] == 1:
            await asyncio.sleep(30)
        return "fast enough"

    @harness.workflow
    async def timed(params: Any, step: Journal) -> Any:
        config = {"retries": {"limit": 1, "delay": 0, "backoff": "constant"}, "timeout": 50}
        return await step.do("slow", slow, config=config)

    await harness.start()
    done = await harness.wait((await harness.create("timed")).id)
    assert done.output == "fast enough"
    (step,) = await harness.steps(instance_id=done.id)
    assert step["attempts"][0]["error"]["name"] == "StepTimeoutError"
    assert "exceeded its timeout of 50 ms" in step["attempts"][0]["error"]["message"]


async def test_invalid_step_config_is_a_clear_error(harness: Harness) -> None:
    @harness.workflow
    async def bad_config(params: Any, step: Journal) -> Any:
        return await step.do("x", lambda: 1, config={"retries": {"limit": 2, "backoff": "fibonacci"}})

    await harness.start()
    done = await harness.wait((await harness.create("bad_config")).id)
    assert done.status == Status.ERRORED
    assert done.error is not None
    assert "config.retries.backoff: must be constant, linear or exponential" in done.error.message
