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

Many workers. A ready instance runs only in the worker holding its lease (``lease_owner``,
``lease_until`` in the server's epoch ms, so workers' clocks never matter). ``claim_ready`` is one
short transaction serialized by an advisory lock: it reads the live leases per concurrency key and
the ready, unleased instances ranked per key (``row_number() OVER (PARTITION BY ckey)``), picks
fairly and within every key's limit in Python (``key_limit`` is a Python callable), then leases the
picks with ``UPDATE ... WHERE pk IN (SELECT ... FOR UPDATE SKIP LOCKED)``. Affinity grace: the
candidates leave out instances that became ready (``ready_at``, kept by a trigger) less than the grace
ago and whose affinity some other live worker (a ``workers`` row seen within the lease time) prefers
and this one does not; the same statement says when the first of them comes out of its grace.
Serializing claims is what makes per-key limits hold across workers (two claimers would otherwise
both see a free slot); a claim takes about a millisecond, and one claim leases a whole batch. Taking over an expired lease
bumps the generation, so the old holder's writes are refused like those of a restarted run.
``finish_run`` releases the lease; a generation bump (restart, terminate, delete) clears it.
Writes that make work ready or must reach a run in another worker send ``pg_notify`` inside their
transaction (delivered at COMMIT); ``listen`` hands them to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    Claim,
    Claims,
    FinishResult,
    LeaseState,
    NewInstance,
    RunFinish,
    SharedEngineStore,
    StaleRunError,
    StepEntry,
    StoredInstance,
)

log = logging.getLogger(__name__)

_SERVER_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
"""The server's clock in epoch ms: leases are judged by one clock, whatever the workers' clocks say."""
# Ranked candidates, then one more row (pk NULL) saying in how many ms the first of the instances
# left to other workers becomes claimable by anyone (NULL when none was left). $6: this worker,
# $7: the grace, $8: the lease time (a worker not seen for that long is not live).
_CANDIDATES = f"""
WITH others AS (
    SELECT DISTINCT label FROM workers, unnest(preferred) AS label
    WHERE id <> $6 AND seen_at >= {_SERVER_MS} - $8 AND label <> ''
), unleased AS (
    SELECT pk, ckey, affinity, ready_at, ready_at > {_SERVER_MS} - $7
        AND affinity IN (SELECT label FROM others) AND affinity <> ALL($4::text[]) AS held
    FROM instances
    WHERE wake_at = 0 AND (lease_owner IS NULL OR lease_until < {_SERVER_MS}) AND pk <> ALL($3::bigint[])
), ready AS (
    SELECT pk, ckey, affinity, row_number() OVER (PARTITION BY ckey ORDER BY pk) AS rn
    FROM unleased WHERE NOT held
)
(SELECT pk, ckey, affinity = ANY($4::text[]), NULL::bigint FROM ready
 WHERE rn <= $2 AND ($5 OR affinity = ANY($4::text[]))
 ORDER BY rn, pk LIMIT $1)
UNION ALL
SELECT NULL, NULL, NULL, MIN(ready_at) + $7 - {_SERVER_MS} FROM unleased WHERE held
"""
_PUBLISH = f"""
WITH gone AS (DELETE FROM workers WHERE seen_at < {_SERVER_MS} - 10 * $3)
INSERT INTO workers (id, seen_at, preferred) VALUES ($1, {_SERVER_MS}, $2::text[])
ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at, preferred = EXCLUDED.preferred
"""
_LIVE_LEASES = f"""
SELECT ckey, COUNT(*) FROM instances WHERE lease_owner IS NOT NULL AND lease_until >= {_SERVER_MS}
AND ckey = ANY($1::text[]) GROUP BY ckey
"""
_LEASE = f"""
UPDATE instances SET lease_owner = $1, lease_until = {_SERVER_MS} + $2,
    generation = generation + (lease_owner IS NOT NULL)::int
WHERE pk IN (SELECT pk FROM instances WHERE pk = ANY($3::bigint[]) AND wake_at = 0
             AND (lease_owner IS NULL OR lease_until < {_SERVER_MS}) FOR UPDATE SKIP LOCKED)
RETURNING pk, ckey, generation
"""
_PAUSE = f"""
WITH cur AS (
    SELECT pk, (lease_owner IS NOT NULL AND lease_until >= {_SERVER_MS}) AS leased
    FROM instances WHERE pk = $1 FOR UPDATE
)
UPDATE instances i SET
    status = CASE WHEN cur.leased THEN 'waitingForPause' ELSE 'paused' END,
    wake_at = CASE WHEN cur.leased THEN i.wake_at END,
    paused_wake_at = CASE WHEN cur.leased THEN i.paused_wake_at ELSE COALESCE(i.wake_at, 0) END,
    lease_owner = CASE WHEN cur.leased THEN i.lease_owner END,
    lease_until = CASE WHEN cur.leased THEN i.lease_until END,
    updated_at = $2
FROM cur WHERE i.pk = cur.pk AND i.status = ANY($3::text[])
RETURNING {", ".join("i." + c.strip() for c in _INSTANCE_COLUMNS.split(","))}
"""

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


def _channel(schema: str) -> str:
    return f"tenantflow_{schema}"[:63]  # pg_notify refuses longer channel names


class PostgresStore(SharedEngineStore):
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
        self.channel = _channel(self.schema)
        """The LISTEN/NOTIFY channel of this schema's workers."""
        self._listener: Any = None
        self._on_notify: Callable[[str], None] | None = None
        self._settings = {"search_path": self.schema, "jit": "off", "application_name": "tenantflow-engine"}

    async def open(self) -> None:
        if self._committer is not None:
            return
        try:
            import asyncpg
        except ImportError as exc:
            raise ImportError(
                'the PostgreSQL engine store needs asyncpg: pip install "tenantflow[postgres]"'
            ) from exc
        settings = self._settings
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
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)
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
        fields = (
            "namespace", "id", "workflow", "params", "concurrency_key", "created_at", "retention_ms", "affinity"
        )  # fmt: skip
        columns = [[getattr(r, name) for r in rows] for name in fields]
        sql = (
            "INSERT INTO instances (ns, id, workflow, status, params, ckey, created_at, updated_at, wake_at, "
            "retention_ms, affinity) SELECT ns, id, workflow, 'queued', params, ckey, created_at, created_at, 0, "
            "retention, affinity FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
            "$6::bigint[], $7::bigint[], $8::text[]) AS r(ns, id, workflow, params, ckey, created_at, retention, "
            "affinity) ON CONFLICT (ns, id) DO NOTHING RETURNING pk, ns, id"
        )

        async def op(conn: Any) -> list[int]:
            inserted = {(r[1], r[2]): r[0] for r in await conn.fetch(sql, *columns)}
            for r in rows:
                if (r.namespace, r.id) not in inserted:
                    raise InstanceExistsError(r.namespace, r.id)  # rolls back the rows before it
            await self._notify_in(conn, "r")
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
        if bump_generation:  # fences the run in flight, wherever it runs; its lease goes with it
            sets.extend(("generation = generation + 1", "lease_owner = NULL", "lease_until = NULL"))
        sql = (
            f"UPDATE instances SET {', '.join(sets)} WHERE pk = ${n + 2} "
            f"AND status = ANY(${n + 3}::text[]) RETURNING {_INSTANCE_COLUMNS}"
        )
        statuses = [str(s) for s in expect_status]

        async def op(conn: Any) -> StoredInstance | None:
            row = await conn.fetchrow(sql, *values, now, pk, statuses)
            if row is None:
                return None
            stored = _row_to_instance(row)
            if bump_generation:
                await self._notify_in(conn, f"a:{pk}:{stored.instance.generation}")
            if changes.get("wake_at") == 0:
                await self._notify_in(conn, "r")
            return stored

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
                    "ended_at = $5, updated_at = $5, wake_at = NULL, waiting_event = NULL, purge_at = $6, "
                    "lease_owner = NULL, lease_until = NULL WHERE pk = $7",
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
                    "waiting_event = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL WHERE pk = $4",
                    wake_at, finish.waiting_event, finish.now, pk,
                )  # fmt: skip
                return "paused"
            await conn.execute(
                "UPDATE instances SET status = $1, wake_at = $2, waiting_event = $3, updated_at = $4, "
                "lease_owner = NULL, lease_until = NULL WHERE pk = $5",
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
                await self._notify_in(conn, "r")
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
            if rows:
                await self._notify_in(conn, "r")
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

    # -- many workers: leases and notifications ----------------------------------------------------

    async def _notify_in(self, conn: Any, message: str) -> None:
        """Notify inside the caller's transaction: delivered at its COMMIT, dropped with a rollback."""
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, message)

    async def claim_ready(
        self,
        worker: str,
        limit: int,
        *,
        lease_ms: int,
        max_per_key: int,
        key_limit: Callable[[str], int] | None,
        preferred: Collection[str],
        exclude: Collection[int],
        affinity_grace_ms: int = 0,
    ) -> Claims:
        wanted = sorted(set(preferred))
        busy = list(exclude)
        grace = max(0, affinity_grace_ms)

        async def fn(conn: Any) -> Claims:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"tenantflow:claim:{self.schema}"
                )
                passes: list[list[Any]] = []
                deferred: int | None = None
                half = max(1, limit // 2)
                args = (max_per_key, busy, wanted)
                if wanted:  # preferred first, ranked per key like the rest, at most half the capacity
                    passes.append(await conn.fetch(_CANDIDATES, half, *args, False, worker, grace, lease_ms))
                passes.append(
                    await conn.fetch(_CANDIDATES, limit + half, *args, True, worker, grace, lease_ms)
                )
                for n, rows in enumerate(passes):  # the row without a pk tells about instances left to others
                    deferred = next((r[3] for r in rows if r[0] is None), deferred)
                    passes[n] = [r for r in rows if r[0] is not None]
                picked = await self._pick(conn, limit, max_per_key, key_limit, passes)
                leased = await conn.fetch(_LEASE, worker, lease_ms, list(picked)) if picked else []
            rank = {pk: n for n, pk in enumerate(picked)}  # start them in the order picked
            claims = [Claim(r[0], r[1], r[2], picked[r[0]]) for r in sorted(leased, key=lambda r: rank[r[0]])]
            return Claims(claims, None if deferred is None else max(1, deferred))

        result: Claims = await self._read(fn)
        return result

    @staticmethod
    async def _pick(
        conn: Any,
        limit: int,
        max_per_key: int,
        key_limit: Callable[[str], int] | None,
        passes: list[list[Any]],
    ) -> dict[int, bool]:
        """Under the claim lock: the candidates to lease, in order, each with whether it was preferred."""
        keys = sorted({r[1] for rows in passes for r in rows})
        if not keys:
            return {}
        live = {r[0]: r[1] for r in await conn.fetch(_LIVE_LEASES, keys)}
        picked: dict[int, bool] = {}
        for rows in passes:
            for pk, key, is_preferred, _ in rows:
                if len(picked) >= limit:
                    break
                cap = max_per_key if key_limit is None else min(max_per_key, max(1, key_limit(key)))
                if pk in picked or live.get(key, 0) >= cap:
                    continue
                live[key] = live.get(key, 0) + 1
                picked[pk] = is_preferred
        return picked

    async def publish_worker(self, worker: str, preferred: Collection[str], lease_ms: int) -> None:
        # Also forgets workers silent for ten leases (killed ones never say goodbye); liveness itself
        # is judged by claimers from seen_at, so this only keeps the table small.
        async def fn(conn: Any) -> None:
            await conn.execute(_PUBLISH, worker, sorted(set(preferred)), lease_ms)

        await self._read(fn)

    async def renew_leases(self, worker: str, pks: Collection[int], lease_ms: int) -> dict[int, LeaseState]:
        # SKIP LOCKED: a row this worker's own group commit holds right now is renewed next time
        # (waiting for it could deadlock with that batch, which locks rows in another order).
        async def fn(conn: Any) -> dict[int, LeaseState]:
            await conn.execute(
                f"UPDATE instances SET lease_until = {_SERVER_MS} + $2 WHERE pk IN (SELECT pk FROM instances "
                "WHERE pk = ANY($3::bigint[]) AND lease_owner = $1 FOR UPDATE SKIP LOCKED)",
                worker, lease_ms, list(pks),
            )  # fmt: skip
            rows = await conn.fetch(
                "SELECT pk, generation, status FROM instances WHERE pk = ANY($2::bigint[]) AND lease_owner = $1",
                worker, list(pks),
            )  # fmt: skip
            return {r[0]: LeaseState(r[1], r[2]) for r in rows}

        result: dict[int, LeaseState] = await self._read(fn)
        return result

    async def release_lease(self, worker: str, pk: int, generation: int) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute(
                "UPDATE instances SET lease_owner = NULL, lease_until = NULL WHERE pk = $1 AND lease_owner = $2 "
                "AND generation = $3",
                pk, worker, generation,
            )  # fmt: skip

        await self._read(fn)

    async def release_all(self, worker: str) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute("DELETE FROM workers WHERE id = $1", worker)
            status: str = await conn.execute(
                "UPDATE instances SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1", worker
            )
            if status != "UPDATE 0":
                await conn.execute("SELECT pg_notify($1, 'r')", self.channel)

        await self._read(fn)

    async def request_pause(self, pk: int, now: int) -> StoredInstance | None:
        async def op(conn: Any) -> StoredInstance | None:
            row = await conn.fetchrow(_PAUSE, pk, now, list(_LIVE))
            if row is None:
                return None
            stored = _row_to_instance(row)
            if stored.instance.status == "waitingForPause":
                await self._notify_in(conn, f"p:{pk}")
            return stored

        result: StoredInstance | None = await self._write(op)
        return result

    async def notify(self, message: str) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, message)

        await self._read(fn)

    async def listen(self, callback: Callable[[str], None]) -> bool:
        self._on_notify = callback
        if self._listener is not None and not self._listener.is_closed():
            return True
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn, server_settings=self._settings)
            await conn.add_listener(self.channel, self._deliver)
        except Exception as exc:  # polling covers for it; the engine calls again on its next poll
            log.warning("LISTEN %s failed (%s); polling until it works", self.channel, exc)
            return False
        self._listener = conn
        return True

    def _deliver(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if self._on_notify is not None:
            self._on_notify(payload)
