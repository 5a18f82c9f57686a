"""step.do: memoization across replays, context, results, non-determinism."""

from typing import Any

from engine import Journal, NonDeterminismError, Status

from .conftest import NS, Harness


async def test_completed_steps_are_not_rerun_on_replay(harness: Harness) -> None:
    @harness.workflow
    async def two_steps(params: Any, step: Journal) -> Any:
        def first() -> int:
            harness.count("first")
            return params["x"] * 2

        a = await step.do("first", first)
        await step.sleep("pause", 1000)
        b = await step.do("second", lambda: harness.count("second") or a + 1)
        return {"a": a, "b": b}

    await harness.start()
    instance = await harness.create("two_steps", {"x": 21})
    await harness.wait(instance.id, Status.WAITING)
    await harness.advance(1000)
    done = await harness.wait(instance.id)
    assert done.status == Status.COMPLETE
    assert done.output == {"a": 42, "b": 43}
    assert harness.calls == {"first": 1, "second": 1}


async def test_step_context_and_counts_for_repeated_names(harness: Harness) -> None:
    seen: list[dict[str, Any]] = []

    @harness.workflow
    async def repeated(params: Any, step: Journal) -> Any:
        for _ in range(3):
            await step.do("same", lambda ctx: seen.append(ctx) or ctx["step"]["count"])
        return await step.do("async one", _async_value)

    await harness.start()
    instance = await harness.create("repeated")
    done = await harness.wait(instance.id)
    assert done.output == "async"
    assert [ctx["step"] for ctx in seen] == [{"name": "same", "count": n} for n in (1, 2, 3)]
    assert seen[0]["attempt"] == 1
    assert seen[0]["config"]["retries"] == {"limit": 5, "delay": 10_000, "backoff": "exponential"}
    steps = await harness.steps(instance.id)
    assert [(s["name"], s["count"], s["output"]) for s in steps] == [
        ("same", 1, 1),
        ("same", 2, 2),
        ("same", 3, 3),
        ("async one", 1, "async"),
    ]


async def _async_value() -> str:
    return "async"


async def test_results_come_back_as_json_even_on_first_run(harness: Harness) -> None:
    @harness.workflow
    async def tuples(params: Any, step: Journal) -> Any:
        value = await step.do("t", lambda: (1, 2))
        return {"type": type(value).__name__, "value": value}

    await harness.start()
    done = await harness.wait((await harness.create("tuples")).id)
    assert done.output == {"type": "list", "value": [1, 2]}


async def test_non_determinism_names_both_steps(harness: Harness) -> None:
    flip = {"first_run": True}

    @harness.workflow
    async def changing(params: Any, step: Journal) -> Any:
        name = "charge" if flip["first_run"] else "refund"
        flip["first_run"] = False
        await step.do(name, lambda: 1)
        await step.sleep("nap", 10)
        return "unreachable"

    await harness.start()
    instance = await harness.create("changing")
    await harness.wait(instance.id, Status.WAITING)
    await harness.advance(10)
    done = await harness.wait(instance.id)
    assert done.status == Status.ERRORED
    assert done.error is not None
    assert done.error.name == "NonDeterminismError"
    assert "step #1 was recorded as step 'charge'" in done.error.message
    assert "this run reached step 'refund'" in done.error.message


async def test_non_determinism_is_fatal_even_when_caught(harness: Harness) -> None:
    runs = {"n": 0}

    @harness.workflow
    async def sneaky(params: Any, step: Journal) -> Any:
        runs["n"] += 1
        try:
            if runs["n"] == 1:
                await step.sleep("a", 10)
            else:
                await step.do("b", lambda: 1)
        except NonDeterminismError:
            return "swallowed"
        return "done"

    await harness.start()
    instance = await harness.create("sneaky")
    await harness.wait(instance.id, Status.WAITING)
    await harness.advance(10)
    done = await harness.wait(instance.id)
    assert done.status == Status.ERRORED
    assert done.error is not None and done.error.name == "NonDeterminismError"


async def test_unknown_workflow_errors_clearly(harness: Harness) -> None:
    await harness.start()
    done = await harness.wait((await harness.create("nope")).id)
    assert done.status == Status.ERRORED
    assert done.error is not None
    assert done.error.name == "UnknownWorkflowError"


async def test_uncaught_workflow_exception_errors_the_instance(harness: Harness) -> None:
    @harness.workflow
    async def raises(params: Any, step: Journal) -> Any:
        raise KeyError("missing")

    await harness.start()
    done = await harness.wait((await harness.create("raises")).id)
    assert done.status == Status.ERRORED
    assert done.error is not None
    assert (done.error.name, done.error.message) == ("KeyError", "'missing'")
    status = await harness.engine.status(NS, done.id)  # type: ignore[union-attr]
    assert status.to_json() == {"status": "errored", "error": {"name": "KeyError", "message": "'missing'"},
                                "output": None}  # fmt: skip


def test_which_callbacks_receive_the_step_context() -> None:
    from functools import partial

    from engine._journal import _accepts_context

    class Callable:
        def __call__(self, ctx: Any) -> None: ...

        def method(self) -> None: ...

    assert _accepts_context(lambda ctx: ctx)
    assert _accepts_context(lambda *args: args)
    assert not _accepts_context(lambda: 1)
    assert not _accepts_context(lambda i=1: i)
    assert _accepts_context(Callable())
    assert not _accepts_context(Callable().method)
    assert _accepts_context(partial(lambda a, b: b, 1))
    assert not _accepts_context(partial(lambda a: a, 1))
