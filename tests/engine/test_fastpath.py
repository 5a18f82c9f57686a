"""The fresh-instance fast path: a first run of an instance this engine created skips ``load_run``.

Everything else must still read the store: later wake-ups, lifecycle operations before the first run,
a restart of the engine, the shared (PostgreSQL) scheduler. A real SQLite store counts its reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine import (
    FINISHED,
    CreateRequest,
    Engine,
    EngineConfig,
    FunctionExecutor,
    Journal,
    ManualClock,
    PostgresStore,
    RunContext,
    SqliteStore,
    Status,
    _engine,
)
from engine._store import NewInstance, StepEntry, StoredInstance
from tests.conftest import PgSchema

NS = "ns-fast"


class CountingStore(SqliteStore):
    """The real SQLite store, counting ``load_run`` per instance pk."""

    def __init__(self, path: Path, config: EngineConfig) -> None:
        super().__init__(path, config)
        self.loads: dict[int, int] = {}

    async def load_run(self, pk: int) -> tuple[StoredInstance, list[StepEntry]] | None:
        self.loads[pk] = self.loads.get(pk, 0) + 1
        return await super().load_run(pk)


class Recorder(FunctionExecutor):
    """Records the instance each run was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any, int, Status]] = []

    async def execute(self, run: RunContext) -> Any:
        i = run.instance
        self.seen.append((i.id, i.params, i.generation, i.status))
        return await super().execute(run)


class Rig:
    def __init__(self, tmp_path: Path, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig(max_concurrency_per_key=1)
        self.store = CountingStore(tmp_path / "engine.db", self.config)
        self.executor = Recorder()
        self.clock = ManualClock()
        self.engine = Engine(self.store, self.executor, config=self.config, clock=self.clock)
        self.gate = asyncio.Event()
        self.steps: dict[str, int] = {}

        async def blocker(params: Any, step: Journal) -> Any:
            await self.gate.wait()
            return "unblocked"

        async def simple(params: Any, step: Journal) -> Any:
            return await step.do("one", lambda: self._count("one"))

        async def napper(params: Any, step: Journal) -> Any:
            await step.do("before", lambda: self._count("before"))
            await step.sleep("nap", "1 second")
            return params

        self.executor.register("blocker", blocker)
        self.executor.register("simple", simple)
        self.executor.register("napper", napper)

    def _count(self, name: str) -> int:
        self.steps[name] = self.steps.get(name, 0) + 1
        return self.steps[name]

    async def create(self, workflow: str, params: Any = None, key: str = "k") -> Any:
        return await self.engine.create(NS, CreateRequest(workflow, params, concurrency_key=key))

    async def pk(self, instance_id: str) -> int:
        stored = await self.store.get_instance(NS, instance_id)
        assert stored is not None
        return stored.pk

    async def wait(self, instance_id: str, *statuses: Status) -> Any:
        return await self.engine.wait(NS, instance_id, statuses=statuses or FINISHED, timeout=10)


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    await r.engine.start()
    yield r
    r.gate.set()
    await r.engine.aclose()


async def test_fresh_record_is_what_load_run_returns(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "engine.db")
    await store.open()
    try:
        rows = [
            NewInstance(NS, "a", "wf", '{"x":[1,2,{"y":null}]}', "key", 1_234, None, ""),
            NewInstance(NS, "b", "wf", None, "other", 5_678, 60_000, "aff:1"),
        ]
        pks = await store.insert_instances(rows)
        for pk, row in zip(pks, rows, strict=True):
            loaded = await store.load_run(pk)
            assert loaded is not None
            assert loaded == (_engine._fresh_instance(pk, row), [])
    finally:
        await store.aclose()


async def test_first_run_skips_load_run_later_runs_read(rig: Rig) -> None:
    instance = await rig.create("napper", {"p": 1})
    pk = await rig.pk(instance.id)
    await rig.wait(instance.id, Status.WAITING)
    assert rig.store.loads.get(pk, 0) == 0
    assert rig.executor.seen == [(instance.id, {"p": 1}, 0, Status.QUEUED)]
    rig.clock.advance(1_000)
    done = await rig.wait(instance.id)
    assert done.status == Status.COMPLETE and done.output == {"p": 1}
    assert rig.store.loads[pk] == 1  # the wake-up read the journal: "before" was not run again
    assert rig.steps == {"before": 1}
    assert done.started_at is not None
    assert not rig.engine._fresh and rig.engine._fresh_bytes == 0


async def test_terminate_before_first_run(rig: Rig) -> None:
    first = await rig.create("blocker")
    await rig.wait(first.id, Status.RUNNING)
    queued = await rig.create("simple")  # same key, limit 1: waits in the ready queue
    pk = await rig.pk(queued.id)
    assert pk in rig.engine._fresh
    terminated = await rig.engine.terminate(NS, queued.id)
    assert terminated.status == Status.TERMINATED
    assert pk not in rig.engine._fresh
    rig.gate.set()
    await rig.wait(first.id)
    await asyncio.sleep(0.05)
    assert (await rig.engine.get(NS, queued.id)).status == Status.TERMINATED
    assert [seen[0] for seen in rig.executor.seen] == [first.id]  # never ran
    assert rig.steps == {}
    assert rig.store.loads.get(pk, 0) <= 1  # if the queued run started, it read the store and stopped


async def test_pause_then_resume_before_first_run_reads(rig: Rig) -> None:
    first = await rig.create("blocker")
    await rig.wait(first.id, Status.RUNNING)
    queued = await rig.create("simple")
    pk = await rig.pk(queued.id)
    assert (await rig.engine.pause(NS, queued.id)).status == Status.PAUSED
    assert pk not in rig.engine._fresh
    rig.gate.set()
    await rig.wait(first.id)
    await asyncio.sleep(0.05)
    assert (await rig.engine.get(NS, queued.id)).status == Status.PAUSED
    await rig.engine.resume(NS, queued.id)
    done = await rig.wait(queued.id)
    assert done.status == Status.COMPLETE and done.output == 1
    assert rig.store.loads[pk] >= 1


async def test_restart_and_replace_params_before_first_run(rig: Rig) -> None:
    first = await rig.create("blocker")
    await rig.wait(first.id, Status.RUNNING)
    restarted = await rig.create("napper", {"v": "old"})
    replaced = await rig.create("napper", {"v": "old"})
    await rig.engine.restart(NS, restarted.id)
    await rig.engine.replace_params(NS, replaced.id, {"v": "new"})
    assert not rig.engine._fresh
    rig.gate.set()
    await rig.wait(restarted.id, Status.WAITING)
    await rig.wait(replaced.id, Status.WAITING)
    seen = {s[0]: s for s in rig.executor.seen}
    assert seen[restarted.id][2] == 1  # the bumped generation, read from the store
    assert seen[replaced.id][1] == {"v": "new"}
    for instance in (restarted, replaced):
        assert rig.store.loads[await rig.pk(instance.id)] == 1


async def test_event_sent_before_first_run_keeps_the_fast_path(rig: Rig) -> None:
    first = await rig.create("blocker")
    await rig.wait(first.id, Status.RUNNING)
    queued = await rig.create("simple")
    pk = await rig.pk(queued.id)
    await rig.engine.send_event(NS, queued.id, "later", {"x": 1})  # buffered; the row is unchanged
    rig.gate.set()
    done = await rig.wait(queued.id)
    assert done.status == Status.COMPLETE
    assert rig.store.loads.get(pk, 0) == 0


async def test_engine_restart_reads_what_it_created(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.engine.start()
    first = await rig.create("blocker")
    await rig.wait(first.id, Status.RUNNING)
    queued = await rig.create("napper", "q")
    pk = await rig.pk(queued.id)
    assert pk in rig.engine._fresh
    await rig.engine.aclose()  # the blocker's run is cancelled: it resumes on the next start
    assert not rig.engine._fresh
    rig.gate.set()
    await rig.engine.start()
    try:
        await rig.wait(queued.id, Status.WAITING)
        assert rig.store.loads[pk] == 1
        assert rig.store.loads[await rig.pk(first.id)] == 1  # recovered: read from the store
        assert (await rig.wait(first.id)).output == "unblocked"
    finally:
        await rig.engine.aclose()


async def test_recovered_instance_reads_its_journal(tmp_path: Path) -> None:
    """A run cut short after a committed step: the next engine on the file replays, not reruns."""
    rig = Rig(tmp_path)
    await rig.engine.start()

    async def halfway(params: Any, step: Journal) -> Any:
        await step.do("committed", lambda: rig._count("committed"))
        await rig.gate.wait()
        return await step.do("after", lambda: rig._count("after"))

    rig.executor.register("halfway", halfway)
    instance = await rig.create("halfway")
    for _ in range(200):
        if rig.steps.get("committed"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the step's commit returned before the callback count was read back
    await rig.engine.aclose()

    second = Rig(tmp_path)
    second.executor.register("halfway", halfway)
    second.gate.set()
    rig.gate.set()
    await second.engine.start()
    try:
        done = await second.wait(instance.id)
        assert done.status == Status.COMPLETE and done.output == 1
        assert second.store.loads[await second.pk(instance.id)] == 1
        assert rig.steps == {"committed": 1, "after": 1}  # "committed" replayed from the journal
    finally:
        await second.engine.aclose()


async def test_records_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "FRESH_MAX_INSTANCES", 2)
    rig = Rig(tmp_path)
    await rig.engine.start()
    try:
        first = await rig.create("blocker")
        await rig.wait(first.id, Status.RUNNING)
        queued = [await rig.create("simple") for _ in range(5)]
        assert len(rig.engine._fresh) == 2
        rig.gate.set()
        for instance in queued:
            assert (await rig.wait(instance.id)).status == Status.COMPLETE
        loads = [rig.store.loads.get(await rig.pk(i.id), 0) for i in queued]
        assert loads == [1, 1, 1, 0, 0]  # the oldest records were dropped: those read the store
    finally:
        await rig.engine.aclose()


async def test_byte_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "FRESH_MAX_BYTES", 100)
    rig = Rig(tmp_path)
    await rig.engine.start()
    try:
        first = await rig.create("blocker")
        await rig.wait(first.id, Status.RUNNING)
        for _ in range(3):
            await rig.create("simple", "x" * 40)
        assert len(rig.engine._fresh) == 2 and rig.engine._fresh_bytes == 84
    finally:
        rig.gate.set()
        await rig.engine.aclose()


@pytest.mark.postgres
async def test_shared_store_workers_always_read(pg_schema: PgSchema) -> None:
    config = EngineConfig()
    executor = FunctionExecutor()

    async def simple(params: Any, step: Journal) -> Any:
        return params

    executor.register("simple", simple)
    store = PostgresStore(pg_schema.dsn, config, schema=pg_schema.name, max_read_connections=2)
    engine = Engine(store, executor, config=config)
    await engine.start()
    try:
        instance = await engine.create(NS, CreateRequest("simple", 7))
        assert not engine._fresh
        done = await engine.wait(NS, instance.id, timeout=20)
        assert done.output == 7
    finally:
        await engine.aclose()


async def test_short_run_marks_running_with_its_end(tmp_path: Path) -> None:
    """A run shorter than MARK_RUNNING_DELAY_S queues mark_running right before finish_run (one batch)."""
    rig = Rig(tmp_path)
    calls: list[str] = []
    mark, finish = rig.store.mark_running, rig.store.finish_run

    def mark_running(pk: int, generation: int, now: int) -> None:
        calls.append("mark")
        mark(pk, generation, now)

    async def finish_run(*args: Any) -> Any:
        calls.append("finish")
        return await finish(*args)

    rig.store.mark_running = mark_running  # type: ignore[method-assign]
    rig.store.finish_run = finish_run  # type: ignore[method-assign]
    await rig.engine.start()
    try:
        started = rig.clock.now_ms()
        done = await rig.wait((await rig.create("simple")).id)
        assert done.status == Status.COMPLETE and done.started_at == started
        assert calls == ["mark", "finish"]
        calls.clear()
        long = await rig.create("blocker")  # longer than the delay: marked running while it runs
        await rig.wait(long.id, Status.RUNNING)
        assert calls == ["mark"]
        rig.gate.set()
        assert (await rig.wait(long.id)).started_at == started
        assert calls == ["mark", "finish"]
    finally:
        rig.gate.set()
        await rig.engine.aclose()
