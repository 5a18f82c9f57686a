"""The PostgreSQL engine store (asyncpg): the backend for scaling out.

Design note. The shape is the SQLite store's: every write goes through a group committer
(``_postgres_commit``) that shares one transaction and one COMMIT between all writes queued while the
previous batch ran; reads go through a separate pool and never wait behind a batch. Schema changes
are versioned migrations (``_postgres_schema``), all objects live in one configurable schema.

Each write is one transaction's worth of work, as in SQLite, and is written so that SQLite's
answers come out byte for byte (payloads are TEXT; rows decode with the SQLite store's helpers).
What PostgreSQL adds is concurrency between processes, so writes made for a run lock the instance
row while they check its generation (FOR SHARE / FOR UPDATE): a restart or terminate committed by
another process cannot slip between the check and the write. ``take_event``, ``claim_due`` and
``purge_finished`` skip rows another transaction holds (FOR UPDATE SKIP LOCKED). Expected refusals
(stale generation, not live) are returned as ``Refused`` before anything is written, so batches
need no savepoints in the common case; journal writes and run starts are ``Mergeable`` (one
statement for all of a batch's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from ._errors import InstanceExistsError, InvalidTransitionError
from ._model import EngineConfig, iso_ms
from ._postgres_commit import GroupCommitter, Mergeable, Op, Refused
from ._postgres_schema import check_schema_name, migrate
from ._sqlite import (
    _INSTANCE_COLUMNS,
    _LIVE,
    _STEP_COLUMNS,
    _UPDATABLE,
    _row_to_instance,
    _row_to_step,
)
from ._store import (
    EngineStore,
    FinishResult,
    NewInstance,
    RunFinish,
    StaleRunError,
    StepEntry,
    StoredInstance,
)

log = logging.getLogger(__name__)

_STEP_UPSERT = """
ON CONFLICT (instance_pk, seq) DO UPDATE SET
    type = EXCLUDED.type, name = EXCLUDED.name, count = EXCLUDED.count, state = EXCLUDED.state,
    start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, output = EXCLUDED.output,
    error_name = EXCLUDED.error_name, error_message = EXCLUDED.error_message, wake_at = EXCLUDED.wake_at,
    event_type = EXCLUDED.event_type, config = EXCLUDED.config, attempts = EXCLUDED.attempts
"""
# One statement for many entries: each is written only if its run's generation is still current,
# with the instance rows locked (in pk order) so a generation bump cannot commit in between.
# Returns the positions (1-based) of the entries written.
_STEP_VALUES = ", ".join("w." + column.strip() for column in _STEP_COLUMNS.split(","))
_WRITE_STEPS = f"""
WITH w AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::int[],
                         $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[],
                         $13::bigint[], $14::text[], $15::text[], $16::text[])
        WITH ORDINALITY AS w(pk, generation, {_STEP_COLUMNS}, n)
), live AS (
    SELECT pk, generation FROM instances WHERE pk = ANY($1::bigint[]) ORDER BY pk FOR SHARE
), written AS (
    SELECT w.* FROM w JOIN live ON live.pk = w.pk AND live.generation = w.generation
), ins AS (
    INSERT INTO steps (instance_pk, {_STEP_COLUMNS}) SELECT pk, {_STEP_VALUES} FROM written w
    {_STEP_UPSERT}
)
SELECT n FROM written
"""


def _step_args(entry: StepEntry) -> tuple[Any, ...]:
    """The entry's columns, taken when the write is queued (the caller may change the entry later)."""
    e = entry
    return (e.seq, e.type, e.name, e.count, e.state, e.start_at, e.end_at, e.output, e.error_name,
            e.error_message, e.wake_at, e.event_type, e.config,
            json.dumps(e.attempts, separators=(",", ":")))  # fmt: skip


class _StepWrite(Mergeable):
    """Upsert one journal entry if its run's generation is current (else ``Refused``: stale)."""

    __slots__ = ("args", "generation", "pk")

    def __init__(self, pk: int, generation: int, entry: StepEntry) -> None:
        self.pk, self.generation, self.args = pk, generation, _step_args(entry)

    @classmethod
    async def run_many(cls, conn: Any, writes: list[Any]) -> list[Any]:
        rows = [(w.pk, w.generation, *w.args) for w in writes]
        columns = [list(column) for column in zip(*rows, strict=True)]
        written = {r[0] for r in await conn.fetch(_WRITE_STEPS, *columns)}
        return [None if n in written else Refused(StaleRunError(w.pk)) for n, w in enumerate(writes, 1)]


class _MarkRunning(Mergeable):
    """Record that a run started (informational; skipped if the run is stale or the instance moved on)."""

    __slots__ = ("generation", "now", "pk")

    def __init__(self, pk: int, generation: int, now: int) -> None:
        self.pk, self.generation, self.now = pk, generation, now

    @classmethod
    async def run_many(cls, conn: Any, writes: list[Any]) -> list[Any]:
        await conn.execute(
            "UPDATE instances i SET status = 'running', started_at = COALESCE(i.started_at, m.now), "
            "updated_at = m.now FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS m(pk, generation, now) "
            "WHERE i.pk = m.pk AND i.generation = m.generation AND i.status IN ('queued', 'waiting', 'running')",
            [w.pk for w in writes], [w.generation for w in writes], [w.now for w in writes],
        )  # fmt: skip
        return [None] * len(writes)


async def _lock_current(conn: Any, pk: int, generation: int, mode: str = "SHARE") -> str | None:
    """Lock the instance row and return its status, or None when the run's generation is stale."""
    row = await conn.fetchrow(f"SELECT status, generation FROM instances WHERE pk = $1 FOR {mode}", pk)
    if row is None or row[1] != generation:
        return None
    status: str = row[0]
    return status


async def _keep_session(conn: Any) -> None:
    """Pool reset: nothing to undo (no session state is changed), so skip asyncpg's RESET ALL round trip."""


class PostgresStore(EngineStore):
    """The scale-out store: tables in one schema of a PostgreSQL database (asyncpg).

    ``config`` is accepted for symmetry with ``SqliteStore``; durability follows the server's
    ``synchronous_commit``. ``max_read_connections`` bounds the pool used for reads.
    """

    def __init__(
        self,
        dsn: str,
        config: EngineConfig | None = None,
        *,
        schema: str = "tenantflow",
        max_read_connections: int = 10,
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self._config = config or EngineConfig()
        self._max_read_connections = max_read_connections
        self._read_pool: Any = None
        self._write_pool: Any = None
        self._committer: GroupCommitter | None = None

    async def open(self) -> None:
        if self._committer is not None:
            return
        try:
            import asyncpg
        except ImportError as exc:
            raise ImportError(
                'the PostgreSQL engine store needs asyncpg: pip install "tenantflow[postgres]"'
            ) from exc
        settings = {"search_path": self.schema, "jit": "off", "application_name": "tenantflow-engine"}
        conn = await asyncpg.connect(self.dsn, server_settings=settings)
        try:
            await migrate(conn, self.schema)
        finally:
            await conn.close()
        pools: list[Any] = []
        try:
            for size in (1, self._max_read_connections):
                pools.append(
                    await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=size, server_settings=settings, reset=_keep_session
                    )
                )
        except BaseException:
            for pool in pools:
                await pool.close()
            raise
        self._write_pool, self._read_pool = pools
        self._committer = GroupCommitter(self._write_pool)

    async def aclose(self) -> None:
        committer, self._committer = self._committer, None
        if committer is not None:
            await committer.aclose()
        for pool in (self._read_pool, self._write_pool):
            if pool is not None:
                await pool.close()
        self._read_pool = self._write_pool = None

    def _write(self, op: Op) -> asyncio.Future[Any]:
        if self._committer is None:
            raise RuntimeError(
                "the engine store is not open (call open() or use it as an async context manager)"
            )
        return self._committer.submit(op)

    async def _read(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        if self._read_pool is None:
            raise RuntimeError("the engine store is not open")
        async with self._read_pool.acquire() as conn:
            return await fn(conn)

    # -- instances -----------------------------------------------------------------------------

    async def insert_instances(self, rows: Sequence[NewInstance]) -> list[int]:
        fields = ("namespace", "id", "workflow", "params", "concurrency_key", "created_at", "retention_ms")
        columns = [[getattr(r, name) for r in rows] for name in fields]
        sql = (
            "INSERT INTO instances (ns, id, workflow, status, params, ckey, created_at, updated_at, wake_at, "
            "retention_ms) SELECT ns, id, workflow, 'queued', params, ckey, created_at, created_at, 0, retention "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) "
            "AS r(ns, id, workflow, params, ckey, created_at, retention) "
            "ON CONFLICT (ns, id) DO NOTHING RETURNING pk, ns, id"
        )

        async def op(conn: Any) -> list[int]:
            inserted = {(r[1], r[2]): r[0] for r in await conn.fetch(sql, *columns)}
            for r in rows:
                if (r.namespace, r.id) not in inserted:
                    raise InstanceExistsError(r.namespace, r.id)  # rolls back the rows before it
            return [inserted[(r.namespace, r.id)] for r in rows]

        result: list[int] = await self._write(op)
        return result

    async def get_instance(self, namespace: str, instance_id: str) -> StoredInstance | None:
        async def fn(conn: Any) -> StoredInstance | None:
            row = await conn.fetchrow(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE ns = $1 AND id = $2", namespace, instance_id
            )
            return None if row is None else _row_to_instance(row)

        result: StoredInstance | None = await self._read(fn)
        return result

    async def list_instances(
        self,
        namespace: str,
        *,
        workflow: str | None,
        statuses: Collection[str] | None,
        created_after: int | None,
        created_before: int | None,
        after: tuple[int, int] | None,
        limit: int,
        descending: bool,
    ) -> list[StoredInstance]:
        args: list[Any] = [namespace]
        where = ["ns = $1"]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if workflow is not None:
            where.append(f"workflow = {arg(workflow)}")
        if statuses:
            where.append(f"status = ANY({arg([str(s) for s in statuses])}::text[])")
        if created_after is not None:
            where.append(f"created_at >= {arg(created_after)}")
        if created_before is not None:
            where.append(f"created_at < {arg(created_before)}")
        if after is not None:
            where.append(f"(created_at, pk) {'<' if descending else '>'} ({arg(after[0])}, {arg(after[1])})")
        order = "DESC" if descending else "ASC"
        sql = (
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, pk {order} LIMIT {arg(limit)}"
        )

        async def fn(conn: Any) -> list[StoredInstance]:
            return [_row_to_instance(r) for r in await conn.fetch(sql, *args)]

        result: list[StoredInstance] = await self._read(fn)
        return result

    async def update_instance(
        self,
        pk: int,
        *,
        expect_status: Collection[str],
        changes: dict[str, Any],
        now: int,
        bump_generation: bool = False,
    ) -> StoredInstance | None:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update instance columns {sorted(unknown)}")
        values = [str(v) if column == "status" else v for column, v in changes.items()]
        sets = [f"{column} = ${n}" for n, column in enumerate(changes, start=1)]
        n = len(values)
        sets.append(f"updated_at = ${n + 1}")
        if bump_generation:
            sets.append("generation = generation + 1")
        sql = (
            f"UPDATE instances SET {', '.join(sets)} WHERE pk = ${n + 2} "
            f"AND status = ANY(${n + 3}::text[]) RETURNING {_INSTANCE_COLUMNS}"
        )
        statuses = [str(s) for s in expect_status]

        async def op(conn: Any) -> StoredInstance | None:
            row = await conn.fetchrow(sql, *values, now, pk, statuses)
            return None if row is None else _row_to_instance(row)

        result: StoredInstance | None = await self._write(op)
        return result

    async def delete_instance(self, pk: int) -> None:
        async def op(conn: Any) -> None:
            await conn.execute(
                "WITH s AS (DELETE FROM steps WHERE instance_pk = $1), e AS (DELETE FROM events "
                "WHERE instance_pk = $1) DELETE FROM instances WHERE pk = $1",
                pk,
            )

        await self._write(op)

    # -- runs ----------------------------------------------------------------------------------

    async def load_run(self, pk: int) -> tuple[StoredInstance, list[StepEntry]] | None:
        async def fn(conn: Any) -> tuple[StoredInstance, list[StepEntry]] | None:
            row = await conn.fetchrow(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE pk = $1", pk)
            if row is None:
                return None
            steps = await conn.fetch(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE instance_pk = $1 ORDER BY seq", pk
            )
            return _row_to_instance(row), [_row_to_step(s) for s in steps]

        result: tuple[StoredInstance, list[StepEntry]] | None = await self._read(fn)
        return result

    def mark_running(self, pk: int, generation: int, now: int) -> None:
        if self._committer is not None:
            self._committer.submit_nowait(_MarkRunning(pk, generation, now))

    async def save_step(self, pk: int, generation: int, entry: StepEntry) -> None:
        await self._write(_StepWrite(pk, generation, entry))

    async def take_event(
        self, pk: int, generation: int, entry: StepEntry, now: int, save_waiting: bool
    ) -> tuple[str, int] | None:
        waiting = _StepWrite(pk, generation, entry)

        async def op(conn: Any) -> Refused | tuple[str, int, str] | None:
            if await _lock_current(conn, pk, generation) is None:
                return Refused(StaleRunError(pk))
            row = await conn.fetchrow(
                "UPDATE events SET consumed_seq = $3 WHERE pk = (SELECT pk FROM events WHERE instance_pk = $1 "
                "AND type = $2 AND consumed_seq IS NULL ORDER BY pk LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING payload, received_at",
                pk, entry.event_type, entry.seq,
            )  # fmt: skip
            if row is None:
                if save_waiting:
                    await waiting(conn)
                return None
            payload: str = row[0] if row[0] is not None else "null"
            # The same text as SqliteStore writes.
            output = f'{{"payload":{payload},"timestamp":"{iso_ms(row[1])}","type":{json.dumps(entry.event_type)}}}'
            done = dataclasses.replace(entry, state="complete", end_at=now, output=output)
            await _StepWrite(pk, generation, done)(conn)
            return payload, row[1], output

        taken: tuple[str, int, str] | None = await self._write(op)
        if taken is None:
            return None
        # Only now, once committed: a batch that is run again must not see a half-updated entry.
        entry.state, entry.end_at, entry.output = "complete", now, taken[2]
        return taken[0], taken[1]

    async def finish_run(self, pk: int, generation: int, finish: RunFinish) -> FinishResult:
        async def op(conn: Any) -> FinishResult:
            status = await _lock_current(conn, pk, generation, "UPDATE")
            if status not in ("running", "waitingForPause", "queued", "waiting"):
                return "stale"
            if finish.kind != "suspended":
                await conn.execute(
                    "UPDATE instances SET status = $1, output = $2, error_name = $3, error_message = $4, "
                    "ended_at = $5, updated_at = $5, wake_at = NULL, waiting_event = NULL, purge_at = $6 "
                    "WHERE pk = $7",
                    "complete" if finish.kind == "complete" else "errored", finish.output, finish.error_name,
                    finish.error_message, finish.now, finish.purge_at, pk,
                )  # fmt: skip
                return "finished"
            wake_at = finish.wake_at
            if finish.waiting_event is not None:
                pending = await conn.fetchval(
                    "SELECT 1 FROM events WHERE instance_pk = $1 AND type = $2 AND consumed_seq IS NULL LIMIT 1",
                    pk, finish.waiting_event,
                )  # fmt: skip
                if pending is not None:
                    wake_at = 0
            if status == "waitingForPause":
                await conn.execute(
                    "UPDATE instances SET status = 'paused', wake_at = NULL, paused_wake_at = $1, "
                    "waiting_event = $2, updated_at = $3 WHERE pk = $4",
                    wake_at, finish.waiting_event, finish.now, pk,
                )  # fmt: skip
                return "paused"
            await conn.execute(
                "UPDATE instances SET status = $1, wake_at = $2, waiting_event = $3, updated_at = $4 WHERE pk = $5",
                "queued" if wake_at == 0 else "waiting", wake_at, finish.waiting_event, finish.now, pk,
            )  # fmt: skip
            return "requeue" if wake_at == 0 else "waiting"

        result: FinishResult = await self._write(op)
        return result

    async def truncate_journal(self, pk: int, keep_before: int) -> None:
        async def op(conn: Any) -> None:
            await conn.execute(
                "WITH e AS (UPDATE events SET consumed_seq = NULL WHERE instance_pk = $1 AND consumed_seq >= $2) "
                "DELETE FROM steps WHERE instance_pk = $1 AND seq >= $2",
                pk, keep_before,
            )  # fmt: skip

        await self._write(op)

    # -- events --------------------------------------------------------------------------------

    async def add_event(
        self, pk: int, event_type: str, payload: str | None, now: int, max_buffered: int
    ) -> bool:
        async def op(conn: Any) -> Refused | bool:
            row = await conn.fetchrow(
                "SELECT status, waiting_event, wake_at FROM instances WHERE pk = $1 FOR UPDATE", pk
            )
            if row is None or row[0] not in (*_LIVE, "paused"):
                return Refused(
                    InvalidTransitionError(str(pk), "send an event to", row[0] if row else "deleted")
                )
            buffered = await conn.fetchval(
                "SELECT COUNT(*) FROM events WHERE instance_pk = $1 AND consumed_seq IS NULL", pk
            )
            if buffered >= max_buffered:
                return Refused(
                    InvalidTransitionError(
                        str(pk),
                        f"buffer another event ({buffered} unconsumed, the limit is {max_buffered}) for",
                        row[0],
                    )
                )
            await conn.execute(
                "INSERT INTO events (instance_pk, type, payload, received_at) VALUES ($1, $2, $3, $4)",
                pk, event_type, payload, now,
            )  # fmt: skip
            if row[0] == "waiting" and row[1] == event_type and row[2]:
                await conn.execute("UPDATE instances SET wake_at = 0, updated_at = $1 WHERE pk = $2", now, pk)
                return True
            return False

        result: bool = await self._write(op)
        return result

    # -- scheduling ----------------------------------------------------------------------------

    async def claim_due(self, now: int, limit: int) -> list[tuple[int, str]]:
        async def op(conn: Any) -> list[tuple[int, str]]:
            rows = await conn.fetch(
                "WITH due AS (UPDATE instances SET wake_at = 0 WHERE pk IN (SELECT pk FROM instances "
                "WHERE wake_at > 0 AND wake_at <= $1 ORDER BY wake_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "RETURNING pk, ckey) SELECT pk, ckey FROM due ORDER BY pk",
                now, limit,
            )  # fmt: skip
            return [(r[0], r[1]) for r in rows]

        result: list[tuple[int, str]] = await self._write(op)
        return result

    async def next_wake(self) -> int | None:
        async def fn(conn: Any) -> int | None:
            value: int | None = await conn.fetchval("SELECT MIN(wake_at) FROM instances WHERE wake_at > 0")
            return value

        result: int | None = await self._read(fn)
        return result

    async def ready_instances(self) -> list[tuple[int, str]]:
        async def fn(conn: Any) -> list[tuple[int, str]]:
            rows = await conn.fetch("SELECT pk, ckey FROM instances WHERE wake_at = 0 ORDER BY pk")
            return [(r[0], r[1]) for r in rows]

        result: list[tuple[int, str]] = await self._read(fn)
        return result

    async def purge_finished(self, now: int, limit: int) -> int:
        async def op(conn: Any) -> int:
            status: str = await conn.execute(
                "WITH doomed AS (SELECT pk FROM instances WHERE purge_at IS NOT NULL AND purge_at <= $1 "
                "LIMIT $2 FOR UPDATE SKIP LOCKED), "
                "s AS (DELETE FROM steps WHERE instance_pk IN (SELECT pk FROM doomed)), "
                "e AS (DELETE FROM events WHERE instance_pk IN (SELECT pk FROM doomed)) "
                "DELETE FROM instances WHERE pk IN (SELECT pk FROM doomed)",
                now, limit,
            )  # fmt: skip
            return int(status.split()[-1])

        result: int = await self._write(op)
        return result

    async def count_instances(self, namespace: str | None, workflow: str | None) -> dict[str, int]:
        """Instances by status, optionally of one namespace and workflow."""

        async def fn(conn: Any) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT status, COUNT(*) FROM instances WHERE ($1::text IS NULL OR ns = $1) "
                "AND ($2::text IS NULL OR workflow = $2) GROUP BY status",
                namespace, workflow,
            )  # fmt: skip
            return {str(status): int(count) for status, count in rows}

        result: dict[str, int] = await self._read(fn)
        return result

    async def journal(self, pk: int) -> list[StepEntry]:
        async def fn(conn: Any) -> list[StepEntry]:
            rows = await conn.fetch(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE instance_pk = $1 ORDER BY seq", pk
            )
            return [_row_to_step(r) for r in rows]

        result: list[StepEntry] = await self._read(fn)
        return result
