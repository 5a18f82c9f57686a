"""What only the PostgreSQL store has: migrations, batch isolation without savepoints, raw storage."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import InstanceExistsError, Journal, PostgresStore, SqliteStore, Status
from engine._postgres_schema import SCHEMA_VERSION
from engine._store import NewInstance, StaleRunError, StepEntry
from tests.conftest import PgSchema

from .conftest import NS, Harness

pytestmark = pytest.mark.postgres


async def _sql(pg: PgSchema, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


@pytest.fixture
async def store(pg_schema: PgSchema) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(pg_schema.dsn, schema=pg_schema.name)
    await opened.open()
    yield opened
    await opened.aclose()


@pytest.fixture
async def pg_harness(pg_schema: PgSchema) -> AsyncIterator[Harness]:
    h = Harness(lambda config: PostgresStore(pg_schema.dsn, config, schema=pg_schema.name), pg_schema)
    yield h
    await h.aclose()


def _row(instance_id: str) -> NewInstance:
    return NewInstance(NS, instance_id, "wf", None, "", 1_000, None)


async def test_concurrent_opens_migrate_once(pg_schema: PgSchema) -> None:
    stores = [PostgresStore(pg_schema.dsn, schema=pg_schema.name) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.aclose()
    rows = await _sql(pg_schema, "SELECT component, version FROM schema_version ORDER BY version")
    assert rows == [("engine", v) for v in range(1, SCHEMA_VERSION + 1)]
    tables = await _sql(
        pg_schema, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg_schema.name
    )
    assert {t for (t,) in tables} == {"instances", "steps", "events", "schema_version", "workers"}


async def test_a_newer_schema_is_refused_with_advice(pg_schema: PgSchema) -> None:
    first = PostgresStore(pg_schema.dsn, schema=pg_schema.name)
    await first.open()
    await first.aclose()
    await _sql(pg_schema, "INSERT INTO schema_version (component, version) VALUES ('engine', 999)")
    with pytest.raises(RuntimeError, match=r"newer than this tenantflow .*upgrade tenantflow"):
        await PostgresStore(pg_schema.dsn, schema=pg_schema.name).open()


def test_schema_names_must_be_plain_identifiers() -> None:
    for bad in ("", "Tenant", "a-b", 'x"; DROP', "1abc", "a" * 64):
        with pytest.raises(ValueError, match="schema name"):
            PostgresStore("postgresql://unused", schema=bad)


async def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ImportError, match=r'pip install "tenantflow\[postgres\]"'):
        await PostgresStore("postgresql://unused").open()


async def test_a_failing_write_does_not_undo_the_rest_of_its_batch(store: PostgresStore) -> None:
    (taken,) = await store.insert_instances([_row("taken")])
    entry = StepEntry(0, "step", "s", 1, "complete", start_at=1, end_at=2, output="1")
    results = await asyncio.gather(
        *(store.insert_instances([_row(f"ok-{i}")]) for i in range(5)),
        store.insert_instances([_row("fresh"), _row("taken")]),  # raises after inserting "fresh"
        store.save_step(taken, 7, entry),  # stale generation: refused
        store.save_step(taken, 0, entry),
        return_exceptions=True,
    )
    assert all(isinstance(r, list) for r in results[:5])
    assert isinstance(results[5], InstanceExistsError) and results[5].instance_id == "taken"
    assert isinstance(results[6], StaleRunError)
    assert results[7] is None
    assert await store.get_instance(NS, "fresh") is None  # the failing batch left nothing behind
    assert all([await store.get_instance(NS, f"ok-{i}") for i in range(5)])
    assert [e.name for e in await store.journal(taken)] == ["s"]


async def test_refusals_alone_need_no_second_pass(store: PostgresStore) -> None:
    (pk,) = await store.insert_instances([_row("one")])
    entry = StepEntry(0, "step", "s", 1, "complete", start_at=1, end_at=2, output="1")
    results = await asyncio.gather(
        *(store.save_step(pk, 1, entry) for _ in range(3)),
        store.add_event(pk + 1000, "go", None, 5, 10),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["StaleRunError"] * 3 + ["InvalidTransitionError"]


async def test_payloads_are_stored_as_the_exact_text(pg_harness: Harness) -> None:
    harness = pg_harness

    @harness.workflow
    async def echo(params: Any, step: Journal) -> Any:
        return await step.do("s", lambda: {"z": 1, "a": [1.5, "é ☃"], "n": None})

    await harness.start()
    instance = await harness.create("echo", {"b": 2, "a": "\u2028"}, id="exact")
    await harness.wait(instance.id)
    rows = await _sql(
        harness.pg,
        "SELECT i.params, i.output, s.output FROM instances i JOIN steps s ON s.instance_pk = i.pk",
    )
    expected = '{"z":1,"a":[1.5,"é ☃"],"n":null}'
    assert rows == [('{"b":2,"a":"\u2028"}', expected, expected)]


async def test_both_backends_record_the_same_history(pg_harness: Harness, tmp_path: Any) -> None:
    """The same workflow on the same manual clock: SQLite and PostgreSQL must describe it identically."""
    attempts = {"n": 0}

    async def flaky() -> int:
        attempts["n"] += 1
        if attempts["n"] % 2:
            raise RuntimeError(f"attempt {attempts['n']}")
        return attempts["n"]

    async def story(params: Any, step: Journal) -> Any:
        first = await step.do("flaky", flaky, config={"retries": {"limit": 2, "delay": 0}})
        await step.sleep("nap", 1000)
        event = await step.wait_for_event("approval", "approved", timeout="1 hour")
        return {"first": first, "event": event}

    records = []
    for make_store in (lambda config: SqliteStore(tmp_path / "compare.db", config), pg_harness.make_store):
        attempts["n"] = 0
        h = Harness(make_store)
        h.workflow(story)
        engine = await h.start()
        instance = await h.create("story", {"x": 1}, id="same")
        await h.wait(instance.id, Status.WAITING)  # asleep
        await engine.send_event(NS, instance.id, "approved", {"ok": True})
        await h.advance(1000)
        await h.wait(instance.id)
        records.append(await engine.describe(NS, instance.id))
        await h.aclose()
    assert records[0] == records[1]
    assert records[0]["status"] == "complete"


async def test_merged_journal_writes_are_refused_one_by_one(store: PostgresStore) -> None:
    a, b = await store.insert_instances([_row("a"), _row("b")])
    await store.update_instance(b, expect_status=["queued"], changes={}, now=2, bump_generation=True)

    def entry(seq: int, name: str) -> StepEntry:
        return StepEntry(seq, "step", name, 1, "complete", start_at=1, end_at=2, output=f'"{name}"')

    results = await asyncio.gather(
        store.save_step(a, 0, entry(0, "a0")),
        store.save_step(b, 0, entry(0, "b-stale")),  # the same instance and position as the next one
        store.save_step(b, 1, entry(0, "b-current")),
        store.save_step(a, 3, entry(1, "a-stale")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["NoneType", "StaleRunError", "NoneType", "StaleRunError"]
    assert [e.output for e in await store.journal(a)] == ['"a0"']
    assert [e.output for e in await store.journal(b)] == ['"b-current"']
