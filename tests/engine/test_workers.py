"""Many workers on one PostgreSQL schema: leases, per-key limits across workers, notifications,
lifecycle operations on runs held by another worker, takeover of expired leases.

Several ``Engine`` objects in one process stand for several workers (each has its own store, its
own connections and its own worker id, exactly as separate processes would); tests that need a real
process death live in test_failover.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from engine import CreateRequest, Engine, EngineConfig, FunctionExecutor, Journal, PostgresStore, Status
from tests.conftest import PgSchema

pytestmark = pytest.mark.postgres

NS = "ns-w"
FAST = EngineConfig(lease_ms=1_000, heartbeat_ms=200, poll_interval_ms=200)


async def _sql(pg: PgSchema, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


class Cluster:
    """Engines sharing one schema; each records which steps it executed."""

    def __init__(self, pg: PgSchema) -> None:
        self.pg = pg
        self.engines: list[Engine] = []
        self.executed: list[tuple[str, str, int]] = []
        """(instance id, step name, engine index) per execution of a step function."""

    async def add(
        self,
        workflows: dict[str, Callable[[int], Callable[[Any, Journal], Awaitable[Any]]]],
        config: EngineConfig = FAST,
        **kwargs: Any,
    ) -> Engine:
        index = len(self.engines)
        executor = FunctionExecutor({name: make(index) for name, make in workflows.items()})
        store = PostgresStore(self.pg.dsn, config, schema=self.pg.name, max_read_connections=4)
        engine = Engine(store, executor, config=config, **kwargs)
        self.engines.append(engine)
        await engine.start()
        return engine

    async def aclose(self) -> None:
        await asyncio.gather(*(engine.aclose() for engine in self.engines))


@pytest.fixture
async def cluster(pg_schema: PgSchema) -> AsyncIterator[Cluster]:
    c = Cluster(pg_schema)
    yield c
    await c.aclose()


def steps_workflow(cluster: Cluster, steps: int = 5, pause_s: float = 0.0) -> Callable[[int], Any]:
    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            total = 0
            for n in range(steps):

                async def body(n: int = n) -> int:
                    cluster.executed.append((step.instance_id, f"s{n}", index))
                    if pause_s:
                        await asyncio.sleep(pause_s)
                    return n

                total += await step.do(f"s{n}", body)
            return total

        return wf

    return make


async def _wait_all(engine: Engine, ids: list[str], timeout: float = 60) -> list[Any]:
    return [(await engine.wait(NS, i, timeout=timeout)) for i in ids]


async def test_three_workers_never_run_a_step_twice_and_share_the_work(cluster: Cluster) -> None:
    config = EngineConfig(max_concurrency=20, lease_ms=2_000, heartbeat_ms=300, poll_interval_ms=200)
    engines = [await cluster.add({"five": steps_workflow(cluster, pause_s=0.002)}, config) for _ in range(3)]
    ids = [f"i{n}" for n in range(300)]
    for start in range(0, len(ids), 100):
        await engines[0].create_batch(NS, [CreateRequest("five", id=i) for i in ids[start : start + 100]])
    done = await _wait_all(engines[1], ids)
    assert all(d.status == Status.COMPLETE and d.output == 10 for d in done)
    counts = Counter((i, s) for i, s, _ in cluster.executed)
    assert len(counts) == 300 * 5 and set(counts.values()) == {1}, "a step ran twice"
    by_engine = Counter(index for _, _, index in cluster.executed)
    assert len(by_engine) == 3, f"the work was not shared: {by_engine}"
    assert sum(e.claims for e in engines) >= 300
    leased = await _sql(cluster.pg, "SELECT COUNT(*) FROM instances WHERE lease_owner IS NOT NULL")
    assert leased == [(0,)]


async def test_per_key_limits_hold_across_workers_and_keys_interleave(cluster: Cluster) -> None:
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    finished: list[str] = []

    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            key = params["key"]

            async def body() -> int:
                running[key] += 1
                peak[key] = max(peak[key], running[key])
                await asyncio.sleep(0.01)
                running[key] -= 1
                return 1

            await step.do("work", body)
            finished.append(key)
            return key

        return wf

    config = EngineConfig(max_concurrency=10, max_concurrency_per_key=3, lease_ms=2_000, heartbeat_ms=300)
    engines = [
        await cluster.add({"w": make}, config, key_limit=lambda key: 1 if key == "tiny" else 100)
        for _ in range(3)
    ]
    big = [CreateRequest("w", {"key": "big"}, id=f"big{n}", concurrency_key="big") for n in range(100)]
    for start in range(0, 100, 50):
        await engines[0].create_batch(NS, big[start : start + 50])
    await engines[0].create_batch(
        NS,
        [CreateRequest("w", {"key": "tiny"}, id=f"tiny{n}", concurrency_key="tiny") for n in range(5)]
        + [CreateRequest("w", {"key": "one"}, id="one", concurrency_key="one")],
    )
    await _wait_all(engines[2], [f"big{n}" for n in range(100)] + [f"tiny{n}" for n in range(5)] + ["one"])
    assert peak["big"] <= 3, f"per-key limit exceeded across workers: {peak}"
    assert peak["tiny"] == 1, f"key_limit exceeded across workers: {peak}"
    # Fair interleaving: the key with one instance does not wait behind the key with a hundred.
    assert finished.index("one") < 50, finished.index("one")


async def test_an_event_wakes_an_instance_waiting_in_another_worker_within_250_ms(cluster: Cluster) -> None:
    woke: dict[str, float] = {}

    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            event = await step.wait_for_event("ping", "go", timeout="1 hour")
            woke[step.instance_id] = time.monotonic()
            return event["payload"]

        return wf

    # A poll far longer than the bound: only a notification can be that prompt.
    slow_poll = EngineConfig(lease_ms=30_000, heartbeat_ms=5_000, poll_interval_ms=20_000)
    await cluster.add({"waiter": make}, slow_poll)
    api = await cluster.add({}, slow_poll, worker=False)
    latencies = []
    for n in range(5):
        instance = await api.create(NS, CreateRequest("waiter", id=f"w{n}"))
        await api.wait(NS, instance.id, statuses={Status.WAITING}, timeout=5)
        sent = time.monotonic()
        await api.send_event(NS, instance.id, "go", {"n": n})
        done = await api.wait(NS, instance.id, timeout=5)
        assert done.output == {"n": n}
        latencies.append(woke[instance.id] - sent)
    print(f"event -> woken in another worker: {[round(x * 1000) for x in latencies]} ms")
    assert max(latencies) < 0.25, latencies


async def test_pause_resume_and_terminate_a_run_held_by_another_worker(cluster: Cluster) -> None:
    gates: dict[str, asyncio.Event] = {}
    ran: list[str] = []

    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            async def blocked(name: str) -> str:
                ran.append(f"{step.instance_id}:{name}")
                await gates.setdefault(f"{step.instance_id}:{name}", asyncio.Event()).wait()
                return name

            a = await step.do("first", lambda: blocked("first"))
            b = await step.do("second", lambda: blocked("second"))
            return [a, b]

        return wf

    slow_poll = EngineConfig(lease_ms=30_000, heartbeat_ms=5_000, poll_interval_ms=20_000)
    worker = await cluster.add({"busy": make}, slow_poll)
    api = await cluster.add({}, slow_poll, worker=False)

    await api.create(NS, CreateRequest("busy", id="p"))
    await api.wait(NS, "p", statuses={Status.RUNNING}, timeout=5)
    assert (await api.pause(NS, "p")).status == Status.WAITING_FOR_PAUSE
    gates.setdefault("p:first", asyncio.Event()).set()
    await api.wait(NS, "p", statuses={Status.PAUSED}, timeout=5)
    assert "p:second" not in ran
    await api.resume(NS, "p")
    await api.wait(NS, "p", statuses={Status.RUNNING}, timeout=5)
    gates.setdefault("p:second", asyncio.Event()).set()
    assert (await api.wait(NS, "p", timeout=5)).output == ["first", "second"]

    await api.create(NS, CreateRequest("busy", id="t"))
    await api.wait(NS, "t", statuses={Status.RUNNING}, timeout=5)
    started = time.monotonic()
    assert (await api.terminate(NS, "t")).status == Status.TERMINATED
    while worker._active.get((await api.store.get_instance(NS, "t")).pk) is not None:  # type: ignore[union-attr]
        assert time.monotonic() - started < 1, "the remote run was not stopped promptly"
        await asyncio.sleep(0.01)
    gates.setdefault("t:first", asyncio.Event()).set()
    await asyncio.sleep(0.2)
    assert "t:second" not in ran
    assert (await api.get(NS, "t")).status == Status.TERMINATED
    assert worker.claims == 3  # p, p after resume, t


async def test_an_expired_lease_is_taken_over_and_the_old_run_is_fenced(cluster: Cluster) -> None:
    gate = asyncio.Event()
    refused: list[int] = []

    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            async def first() -> str:
                cluster.executed.append((step.instance_id, "first", index))
                if index == 0:
                    await gate.wait()  # the first worker stalls past its lease
                return f"by {index}"

            try:
                return await step.do("first", first)
            finally:
                if step.aborted:
                    refused.append(index)

        return wf

    stalled = await cluster.add({"x": make}, EngineConfig(lease_ms=1_000, heartbeat_ms=200))
    await stalled.create(NS, CreateRequest("x", id="x"))
    await stalled.wait(NS, "x", statuses={Status.RUNNING}, timeout=5)
    # Simulate a worker that stopped heartbeating (a long GC pause, a frozen VM): expire its lease.
    stalled._worker._heartbeat_loop = None  # type: ignore[union-attr,assignment]
    for task in stalled._loops:
        if task.get_name() == "tenantflow-heartbeat":
            task.cancel()
    await _sql(cluster.pg, "UPDATE instances SET lease_until = 0 WHERE id = 'x'")
    other = await cluster.add({"x": make}, FAST)
    done = await other.wait(NS, "x", timeout=10)
    assert done.output == "by 1" and done.generation == 1
    gate.set()  # the stalled run resumes; its write must be refused
    for _ in range(100):
        if refused:
            break
        await asyncio.sleep(0.02)
    assert refused == [0]
    steps = await _sql(cluster.pg, "SELECT s.output FROM steps s JOIN instances i ON i.pk = s.instance_pk")
    assert steps == [('"by 1"',)]


async def test_preferred_affinities_are_claimed_first_and_counted(cluster: Cluster) -> None:
    order: list[str] = []

    def make(index: int) -> Callable[[Any, Journal], Awaitable[Any]]:
        async def wf(params: Any, step: Journal) -> Any:
            order.append(params)
            return params

        return wf

    api = await cluster.add({}, FAST, worker=False)
    requests = [CreateRequest("a", f"cold{n}", affinity="cold") for n in range(10)]
    requests += [CreateRequest("a", f"warm{n}", affinity="warm") for n in range(10)]
    created = await api.create_batch(NS, requests)
    assert created[-1].affinity == "warm"
    assert (await api.get(NS, created[0].id)).affinity == "cold"
    config = EngineConfig(max_concurrency=4, lease_ms=2_000, heartbeat_ms=300, poll_interval_ms=200)
    worker = await cluster.add({"a": make}, config, preferred_affinity=lambda: {"warm"})
    for instance in created:
        await api.wait(NS, instance.id, timeout=10)
    assert worker.claims == 20 and worker.claims_preferred == 10
    # Preferred first (up to half of each claim), without starving the rest.
    assert set(order[:4]) == {"warm0", "warm1", "cold0", "cold1"}, order
    assert order.index("warm9") < order.index("cold9")
