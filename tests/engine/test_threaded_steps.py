"""Steps committed from a thread that is not the event loop's, as a sandboxed guest's thread does it.

``Journal.begin_step`` (no I/O) and ``Journal.finish_attempt_blocking`` (the store's
``save_step_blocking``: SQLite's writer thread directly, PostgreSQL through the loop) run on the
executor's own thread here, through the real engine and store on both backends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Complete,
    CreateRequest,
    Engine,
    EngineConfig,
    ErrorInfo,
    Failed,
    Journal,
    Outcome,
    RunContext,
    SqliteStore,
    Status,
    StepCached,
    StepFailure,
    StepRun,
)
from engine._sqlite import _StepWrite
from engine._store import NewInstance, StaleRunError, StepEntry

from .conftest import NS, Harness

Body = Callable[[Journal, Any], Any]


class ThreadExecutor:
    """Runs each workflow body on a thread of its own, steps through the low-level journal API."""

    def __init__(self, bodies: dict[str, Body]) -> None:
        self.bodies = bodies
        self.threads: set[int] = set()
        self.loop_thread = threading.get_ident()

    async def execute(self, run: RunContext) -> Outcome:
        body = self.bodies[run.instance.workflow]
        return await asyncio.to_thread(self._run, body, run)

    def _run(self, body: Body, run: RunContext) -> Outcome:
        self.threads.add(threading.get_ident())
        try:
            return Complete(body(run.journal, run.instance.params))
        except StepFailedOnThread as exc:
            return Failed(exc.info)


class StepFailedOnThread(Exception):
    def __init__(self, info: ErrorInfo) -> None:
        self.info = info


def do(journal: Journal, name: str, fn: Callable[[], Any], config: dict[str, Any] | None = None) -> Any:
    """``step.do`` as a guest does it: begin, run the callback here, report, follow the decision."""
    decision = journal.begin_step(name, config)
    while True:
        if isinstance(decision, StepCached):
            return decision.result
        if isinstance(decision, StepFailure):
            raise StepFailedOnThread(decision.error)
        assert isinstance(decision, StepRun)
        try:
            value = fn()
        except Exception as exc:
            decision = journal.finish_attempt_blocking(error=ErrorInfo(type(exc).__name__, str(exc)))
        else:
            decision = journal.finish_attempt_blocking(result=value)


async def _engine(harness: Harness, executor: ThreadExecutor, config: EngineConfig | None = None) -> Engine:
    config = config or EngineConfig()
    engine = Engine(harness.make_store(config), executor, config=config, clock=None)
    await engine.start()
    harness.engine = engine
    return engine


async def test_steps_commit_from_a_thread_and_replay(harness: Harness) -> None:
    runs: list[int] = []

    def body(journal: Journal, params: Any) -> Any:
        runs.append(1)
        total = sum(do(journal, f"s{i}", lambda i=i: i * params["k"]) for i in range(10))
        return {"total": total}

    executor = ThreadExecutor({"ten": body})
    engine = await _engine(harness, executor)
    instance = await engine.create(NS, CreateRequest("ten", {"k": 3}))
    done = await harness.wait(instance.id)
    assert done.status == Status.COMPLETE and done.output == {"total": 135}
    assert executor.loop_thread not in executor.threads
    steps = await harness.steps(instance.id)
    assert [s["output"] for s in steps] == [i * 3 for i in range(10)]
    assert all(len(s["attempts"]) == 1 for s in steps)


async def test_retries_and_final_failure_from_a_thread(harness: Harness) -> None:
    attempts: list[int] = []
    retry = {"retries": {"limit": 2, "delay": 0, "backoff": "constant"}}

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError(f"attempt {len(attempts)}")
        return "third time"

    def never() -> str:
        raise ValueError("no")

    def body(journal: Journal, params: Any) -> Any:
        do(journal, "flaky", flaky, retry)
        return do(journal, "never", never, retry)

    executor = ThreadExecutor({"flaky": body})
    await _engine(harness, executor)
    instance = await harness.create("flaky")
    done = await harness.wait(instance.id)
    assert len(attempts) == 3
    assert done.status == Status.ERRORED and done.error is not None
    assert done.error.name == "ValueError" and done.error.message == "no"
    steps = await harness.steps(instance.id)
    assert steps[0]["output"] == "third time" and len(steps[0]["attempts"]) == 3
    assert len(steps[1]["attempts"]) == 3 and not any(a["success"] for a in steps[1]["attempts"])


async def test_many_instances_at_once_commit_every_step_exactly_once(harness: Harness) -> None:
    calls: dict[tuple[str, int], int] = {}
    lock = threading.Lock()

    def step_fn(instance: str, i: int) -> int:
        with lock:
            calls[(instance, i)] = calls.get((instance, i), 0) + 1
        return i

    def body(journal: Journal, params: Any) -> Any:
        return sum(do(journal, f"s{i}", lambda i=i: step_fn(journal.instance_id, i)) for i in range(5))

    executor = ThreadExecutor({"five": body})
    await _engine(harness, executor)
    ids = [f"i{n}" for n in range(60)]
    for instance_id in ids:
        await harness.create("five", id=instance_id)
    for instance_id in ids:
        done = await harness.wait(instance_id, timeout=60)
        assert done.status == Status.COMPLETE and done.output == 10
    assert len(calls) == 60 * 5 and set(calls.values()) == {1}


async def test_terminate_while_a_thread_commits_abandons_the_run(harness: Harness) -> None:
    started, release = threading.Event(), threading.Event()
    after: list[str] = []

    def body(journal: Journal, params: Any) -> Any:
        do(journal, "first", lambda: 1)
        started.set()
        release.wait(10)
        do(journal, "second", lambda: 2)  # refused: the run's generation moved on
        after.append("reached")
        return "done"

    executor = ThreadExecutor({"slow": body})
    engine = await _engine(harness, executor)
    instance = await harness.create("slow")
    assert await asyncio.to_thread(started.wait, 10)
    await engine.terminate(NS, instance.id)
    release.set()
    done = await harness.wait(instance.id)
    await asyncio.sleep(0.2)
    assert done.status == Status.TERMINATED
    assert after == []
    steps = await harness.steps(instance.id)
    assert [s.get("name") for s in steps if s["type"] == "step"] == ["first"]


async def test_writes_from_threads_share_commits_and_a_closed_store_refuses(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "engine.db")
    await store.open()
    loop = asyncio.get_running_loop()
    [pk] = await store.insert_instances([NewInstance("ns", "i", "w", "null", "k", 1, None, "")])
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            for n in range(50):
                entry = StepEntry(
                    thread * 50 + n, "step", f"t{thread}", n + 1, "complete", start_at=1, output="1"
                )
                store.save_step_blocking(loop, pk, 0, entry)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    await asyncio.gather(*(asyncio.to_thread(writer, t) for t in range(8)))
    assert errors == []
    assert len(await store.journal(pk)) == 400
    with pytest.raises(StaleRunError):  # the generation check runs for thread writes too
        await asyncio.to_thread(
            store.save_step_blocking, loop, pk, 7, StepEntry(999, "step", "x", 1, "complete", 1)
        )
    await store.aclose()
    with pytest.raises(RuntimeError, match="not open"):
        store.save_step_blocking(loop, pk, 0, StepEntry(1000, "step", "x", 1, "complete", 1))


async def test_a_merged_run_of_step_writes_still_refuses_only_the_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged: list[tuple[int, bool]] = []
    original = _StepWrite.write_all.__func__  # type: ignore[attr-defined]

    def write_all(cls: type[_StepWrite], conn: Any, ops: Any) -> bool:
        applied: bool = original(cls, conn, ops)
        merged.append((len(ops), applied))
        return applied

    monkeypatch.setattr(_StepWrite, "write_all", classmethod(write_all))
    store = SqliteStore(tmp_path / "engine.db")
    await store.open()
    rows = [NewInstance("ns", f"i{n}", "w", "null", "k", 1, None, "") for n in range(3)]
    pks = await store.insert_instances(rows)
    loop = asyncio.get_running_loop()
    # Queue six writes while the writer is held up, so they land in one batch and are merged.
    gate = threading.Event()
    held = await _hold_writer(store, gate)
    futures = [
        asyncio.wrap_future(
            asyncio.get_running_loop().run_in_executor(
                None,
                store.save_step_blocking,
                loop,
                pk,
                generation,
                StepEntry(seq, "step", "s", seq + 1, "complete", 1, output=str(seq)),
            )
        )
        for seq in range(2)
        for pk, generation in zip(pks, (0, 5, 0), strict=True)  # the middle one is stale
    ]
    await _queued(store, 6)
    gate.set()
    await held
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [isinstance(o, StaleRunError) for o in outcomes] == [False, True, False] * 2
    assert [len(await store.journal(pk)) for pk in pks] == [2, 0, 2]
    assert merged == [(6, False)]  # tried as one statement, then one by one to find the stale write
    # Without a stale write the merged statement is all it takes.
    gate.clear()
    held = await _hold_writer(store, gate)
    futures = [
        asyncio.wrap_future(
            asyncio.get_running_loop().run_in_executor(
                None, store.save_step_blocking, loop, pks[0], 0, StepEntry(seq, "step", "t", 1, "complete", 1)
            )
        )
        for seq in range(2, 6)
    ]
    await _queued(store, 4)
    gate.set()
    await held
    assert await asyncio.gather(*futures) == [None] * 4
    assert merged[1:] == [(4, True)] and len(await store.journal(pks[0])) == 6
    await store.aclose()


async def _queued(store: SqliteStore, count: int) -> None:
    """Wait until ``count`` writes wait in the writer's queue (behind the one holding it up)."""
    for _ in range(500):
        if store._open_writer()._queue.qsize() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} writes never reached the writer's queue")


async def _hold_writer(store: SqliteStore, gate: threading.Event) -> asyncio.Future[Any]:
    """Occupy the writer thread until ``gate`` is set; returns once it is busy with that."""
    busy = threading.Event()

    def hold(conn: Any) -> None:
        busy.set()
        gate.wait(5)

    held = store._open_writer().submit(hold)
    assert await asyncio.to_thread(busy.wait, 5)
    return held
