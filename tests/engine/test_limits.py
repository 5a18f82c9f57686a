"""Every size and count limit, configurable."""

from typing import Any

import pytest

from engine import EngineConfig, EngineValidationError, Journal, PayloadTooLargeError, Status

from .conftest import NS, Harness

SMALL = EngineConfig(
    max_params_bytes=64, max_result_bytes=64, max_event_bytes=64, max_steps=3, max_step_name_length=8
)


async def test_params_over_the_cap_are_rejected_at_creation(harness: Harness) -> None:
    await harness.start(SMALL)
    with pytest.raises(PayloadTooLargeError, match="params: is 72 bytes as JSON, over the limit of 64 bytes"):
        await harness.create("any", "x" * 70)


async def test_default_caps_are_one_mebibyte(harness: Harness) -> None:
    engine = await harness.start()
    with pytest.raises(PayloadTooLargeError):
        await harness.create("any", "x" * (1024 * 1024))
    instance = await harness.create("any", "x" * (1024 * 1024 - 2))
    with pytest.raises(PayloadTooLargeError, match="event payload"):
        await engine.send_event(NS, instance.id, "e", "x" * (1024 * 1024))


async def test_oversized_step_result_fails_the_step_without_retries(harness: Harness) -> None:
    @harness.workflow
    async def big(params: Any, step: Journal) -> Any:
        try:
            await step.do("big", lambda: harness.count("big") or "x" * 100)
        except Exception as exc:
            harness.calls["error"] = f"{type(exc).__name__}: {exc}"
        return "caught"

    await harness.start(SMALL)
    done = await harness.wait((await harness.create("big")).id)
    assert done.output == "caught"
    assert str(harness.calls["error"]).startswith(
        "StepFailedError: result of step 'big': is 102 bytes as JSON, over the limit of 64 bytes"
    )
    assert harness.calls["big"] == 1


async def test_oversized_output_errors_the_instance(harness: Harness) -> None:
    @harness.workflow
    async def big_output(params: Any, step: Journal) -> Any:
        return "y" * 100

    await harness.start(SMALL)
    done = await harness.wait((await harness.create("big_output")).id)
    assert done.status == Status.ERRORED
    assert done.error is not None and "workflow output: is 102 bytes" in done.error.message


async def test_step_count_limit_and_sleeps_do_not_count(harness: Harness) -> None:
    @harness.workflow
    async def many(params: Any, step: Journal) -> Any:
        await step.sleep("s1", 0)
        for i in range(params):
            await step.do(f"s{i}", lambda: 1)
        return "ok"

    await harness.start(SMALL)
    assert (await harness.wait((await harness.create("many", 3)).id)).output == "ok"
    done = await harness.wait((await harness.create("many", 4)).id)
    assert done.status == Status.ERRORED
    assert done.error is not None and "reached the limit of 3 steps" in done.error.message


async def test_step_name_limits(harness: Harness) -> None:
    @harness.workflow
    async def names(params: Any, step: Journal) -> Any:
        errors = []
        for name in ("123456789", "bad\nname", ""):
            try:
                await step.do(name, lambda: 1)
            except EngineValidationError as exc:
                errors.append(str(exc))
        return errors

    await harness.start(EngineConfig(max_step_name_length=8))
    done = await harness.wait((await harness.create("names")).id)
    assert done.output == [
        "step name: must be 1 to 8 characters, got 9",
        "step name: 'bad\\nname' contains control characters",
        "step name: must be 1 to 8 characters, got 0",
    ]


def test_engine_config_rejects_unbounded_limits() -> None:
    for bad in (0, -1, None, 1.5):
        with pytest.raises(ValueError, match="must be a positive integer"):
            EngineConfig(max_steps=bad)  # type: ignore[arg-type]
