"""list (filters, cursor pagination), describe, retention."""

from typing import Any

import pytest

from engine import EngineConfig, EngineValidationError, InstanceNotFoundError, Journal, Status

from .conftest import NS, Harness


async def test_list_filters_and_paginates(harness: Harness) -> None:
    @harness.workflow
    async def echo(params: Any, step: Journal) -> Any:
        if params == "fail":
            raise ValueError("no")
        return params

    engine = await harness.start()
    ids = []
    for i in range(7):
        harness.clock.advance(1000)
        params = "fail" if i % 3 == 0 else i
        ids.append((await harness.create("echo", params, id=f"i{i}")).id)
    for instance_id in ids:
        await harness.wait(instance_id)
    seen = []
    cursor = None
    while True:
        page = await engine.list(NS, limit=3, cursor=cursor)
        seen += [i.id for i in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == ids
    newest = await engine.list(NS, limit=2, descending=True)
    assert [i.id for i in newest.items] == ["i6", "i5"]
    errored = await engine.list(NS, status="errored")
    assert [i.id for i in errored.items] == ["i0", "i3", "i6"]
    start = (await engine.get(NS, "i2")).created_at
    window = await engine.list(NS, created_after=start, created_before=start + 2000)
    assert [i.id for i in window.items] == ["i2", "i3"]
    assert (await engine.list("other-namespace")).items == []
    with pytest.raises(EngineValidationError, match="cursor"):
        await engine.list(NS, cursor="garbage!")
    with pytest.raises(EngineValidationError, match="status"):
        await engine.list(NS, status="sleeping")
    with pytest.raises(EngineValidationError, match="limit"):
        await engine.list(NS, limit=0)


async def test_retention_purges_finished_instances(harness: Harness) -> None:
    @harness.workflow
    async def quick(params: Any, step: Journal) -> Any:
        await step.do("s", lambda: 1)
        if params == "wait":
            await step.sleep("long", "10 days")
        return params

    engine = await harness.start(EngineConfig(default_retention_ms=60_000))
    short = await harness.create("quick", "short", retention_ms=1_000)
    default = await harness.create("quick", "default")
    sleeping = await harness.create("quick", "wait")
    await harness.wait(short.id)
    await harness.wait(default.id)
    await harness.wait(sleeping.id, Status.WAITING)
    harness.clock.advance(1_000)
    assert await engine.purge_expired() == 1
    with pytest.raises(InstanceNotFoundError):
        await engine.get(NS, short.id)
    harness.clock.advance(59_000)
    assert await engine.purge_expired() == 1
    assert (await engine.get(NS, sleeping.id)).status == Status.WAITING


async def test_counts_by_status_and_steps_committed(harness: Harness) -> None:
    @harness.workflow
    async def two(params: Any, step: Journal) -> Any:
        await step.do("a", lambda: 1)
        await step.do("b", lambda: 2)
        if params == "fail":
            raise ValueError("no")
        return params

    engine = await harness.start()
    for params in ("ok", "ok", "fail"):
        await harness.wait((await harness.create("two", params)).id)
    await harness.create("two", "ok", namespace="elsewhere", id="x")
    await harness.wait("x", namespace="elsewhere")
    assert await engine.count(NS) == {"complete": 2, "errored": 1}
    assert await engine.count(NS, workflow="other") == {}
    assert await engine.count() == {"complete": 3, "errored": 1}
    assert engine.steps_committed == 8
