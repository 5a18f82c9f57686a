"""Engine test harness: a real store, in-process workflows, a manual clock.

Every test using ``harness`` runs twice: on SQLite (a file in tmp_path) and on PostgreSQL (a schema
of its own, see ``pg_schema`` in tests/conftest.py; skipped when the server is unreachable).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine import (
    FINISHED,
    CreateRequest,
    Engine,
    EngineConfig,
    EngineStore,
    FunctionExecutor,
    Instance,
    ManualClock,
    PostgresStore,
    SqliteStore,
    Status,
    WorkflowFunction,
)
from tests.conftest import PgSchema

NS = "ns-a"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

StoreFactory = Callable[[EngineConfig], EngineStore]


class Harness:
    def __init__(self, make_store: StoreFactory, pg: PgSchema | None = None) -> None:
        self.make_store = make_store
        self.pg = pg
        """Where the data is, on PostgreSQL (None on SQLite)."""
        self.clock = ManualClock()
        self.executor = FunctionExecutor()
        self.engine: Engine | None = None
        self.calls: dict[str, int] = {}

    def workflow(self, fn: WorkflowFunction) -> WorkflowFunction:
        return self.executor.register(fn.__name__, fn)  # type: ignore[attr-defined]

    def count(self, key: str) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1

    async def start(self, config: EngineConfig | None = None, *, real_clock: bool = False) -> Engine:
        config = config or EngineConfig()
        self.engine = Engine(
            self.make_store(config),
            self.executor,
            config=config,
            clock=None if real_clock else self.clock,
        )
        await self.engine.start()
        return self.engine

    async def create(self, workflow: str, params: Any = None, **kwargs: Any) -> Instance:
        assert self.engine is not None
        return await self.engine.create(
            kwargs.pop("namespace", NS), CreateRequest(workflow, params, **kwargs)
        )

    async def wait(
        self, instance_id: str, *statuses: Status, namespace: str = NS, timeout: float = 10
    ) -> Instance:
        assert self.engine is not None
        return await self.engine.wait(namespace, instance_id, statuses=statuses or FINISHED, timeout=timeout)

    async def steps(self, instance_id: str, namespace: str = NS) -> list[dict[str, Any]]:
        assert self.engine is not None
        record = await self.engine.describe(namespace, instance_id)
        steps: list[dict[str, Any]] = record["steps"]
        return steps

    async def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    async def aclose(self) -> None:
        if self.engine is not None:
            await self.engine.aclose()


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        h = Harness(lambda config: SqliteStore(tmp_path / "engine.db", config))
    else:
        pg: PgSchema = request.getfixturevalue("pg_schema")
        h = Harness(lambda config: PostgresStore(pg.dsn, config, schema=pg.name, max_read_connections=4), pg)
    yield h
    await h.aclose()


def always_fail(message: str = "boom") -> Callable[[], Any]:
    def fn() -> Any:
        raise RuntimeError(message)

    return fn
