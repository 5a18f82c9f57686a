"""Engine test harness: a real SQLite store in tmp_path, in-process workflows, a manual clock."""

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
    FunctionExecutor,
    Instance,
    ManualClock,
    SqliteStore,
    Status,
    WorkflowFunction,
)

NS = "ns-a"


class Harness:
    def __init__(self, path: Path) -> None:
        self.path = path / "engine.db"
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
            SqliteStore(self.path, config),
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


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    yield h
    await h.aclose()


def always_fail(message: str = "boom") -> Callable[[], Any]:
    def fn() -> Any:
        raise RuntimeError(message)

    return fn
