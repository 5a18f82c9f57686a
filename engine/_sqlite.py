"""The SQLite engine store (WAL, ``synchronous=FULL`` by default) with group commit.

Design note. A durable step costs one fsync of the WAL. Committing each step in its own transaction
would cap throughput at the disk's fsync rate no matter how many instances run. Instead every write
goes to ``SqliteWriter`` (engine/_sqlite_writer.py), a thread that runs everything queued so far in
ONE transaction and commits once; a sandbox's thread can hand it a step's write directly, without
the event loop. Reads use a second connection (aiosqlite) so they never wait behind a batch's fsync
(WAL lets them run concurrently). aiosqlite has no public call to run a function on its connection
thread; a read must be one hop there, so we use ``Connection._execute`` (present and stable since
aiosqlite 0.17).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, cast

import aiosqlite

from ._errors import InstanceExistsError, InvalidTransitionError
from ._model import EngineConfig, ErrorInfo, Instance, Status, iso_ms
from ._sqlite_writer import Mergeable, Op, SqliteWriter
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

SCHEMA_VERSION = 2
# Applied in order to databases at an older version (index 0 takes version 1 to 2).
_MIGRATIONS = ("ALTER TABLE instances ADD COLUMN affinity TEXT NOT NULL DEFAULT ''",)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    pk INTEGER PRIMARY KEY,
    ns TEXT NOT NULL,
    id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT,
    output TEXT,
    error_name TEXT,
    error_message TEXT,
    ckey TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    updated_at INTEGER NOT NULL,
    wake_at INTEGER,
    paused_wake_at INTEGER,
    waiting_event TEXT,
    retention_ms INTEGER,
    purge_at INTEGER,
    generation INTEGER NOT NULL DEFAULT 0,
    UNIQUE (ns, id)
);
CREATE INDEX IF NOT EXISTS ix_instances_wake ON instances (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS ix_instances_list ON instances (ns, created_at, pk);
CREATE INDEX IF NOT EXISTS ix_instances_purge ON instances (purge_at) WHERE purge_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    instance_pk INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,
    start_at INTEGER NOT NULL,
    end_at INTEGER,
    output TEXT,
    error_name TEXT,
    error_message TEXT,
    wake_at INTEGER,
    event_type TEXT,
    config TEXT,
    attempts TEXT NOT NULL,
    PRIMARY KEY (instance_pk, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    pk INTEGER PRIMARY KEY,
    instance_pk INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload TEXT,
    received_at INTEGER NOT NULL,
    consumed_seq INTEGER
);
CREATE INDEX IF NOT EXISTS ix_events_pending ON events (instance_pk, type, pk) WHERE consumed_seq IS NULL;
CREATE INDEX IF NOT EXISTS ix_events_instance ON events (instance_pk, consumed_seq);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
"""
_INSTANCE_COLUMNS = (
    "pk, ns, id, workflow, status, params, output, error_name, error_message, ckey, created_at, started_at, "
    "ended_at, updated_at, wake_at, paused_wake_at, waiting_event, retention_ms, generation, affinity"
)
_STEP_COLUMNS = (
    "seq, type, name, count, state, start_at, end_at, output, error_name, error_message, wake_at, "
    "event_type, config, attempts"
)
_UPDATABLE = frozenset(
    {"status", "output", "error_name", "error_message", "started_at", "ended_at", "wake_at",
     "paused_wake_at", "waiting_event", "purge_at", "params"}
)  # fmt: skip
_LIVE = ("queued", "running", "waiting", "waitingForPause")


async def on_db_thread(db: aiosqlite.Connection, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the connection's own thread, in one hop (see the module note)."""
    return await db._execute(fn)  # type: ignore[no-untyped-call]


def _row_to_instance(row: Sequence[Any]) -> StoredInstance:
    error = ErrorInfo(row[7], row[8] or "") if row[7] is not None else None
    instance = Instance(
        namespace=row[1],
        id=row[2],
        workflow=row[3],
        status=Status(row[4]),
        params=None if row[5] is None else json.loads(row[5]),
        output=None if row[6] is None else json.loads(row[6]),
        error=error,
        concurrency_key=row[9],
        created_at=row[10],
        started_at=row[11],
        ended_at=row[12],
        updated_at=row[13],
        wake_at=row[14] if row[14] else None,
        retention_ms=row[17],
        generation=row[18],
        affinity=row[19],
    )
    return StoredInstance(row[0], instance, row[15], row[16], row[14])


def _row_to_step(row: Sequence[Any]) -> StepEntry:
    return StepEntry(
        seq=row[0], type=row[1], name=row[2], count=row[3], state=row[4], start_at=row[5], end_at=row[6],
        output=row[7], error_name=row[8], error_message=row[9], wake_at=row[10], event_type=row[11],
        config=row[12], attempts=json.loads(row[13]),
    )  # fmt: skip


def _write_step(conn: sqlite3.Connection, pk: int, e: StepEntry) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO steps (instance_pk, {_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (pk, e.seq, e.type, e.name, e.count, e.state, e.start_at, e.end_at, e.output, e.error_name,
         e.error_message, e.wake_at, e.event_type, e.config, json.dumps(e.attempts, separators=(",", ":"))),
    )  # fmt: skip


class _StepWrite(Mergeable):
    """``save_step``: one statement that writes only while the run's generation holds (a refused
    write changes nothing), so a batch merges consecutive ones (see ``Mergeable``)."""

    __slots__ = ("entry", "generation", "pk")

    def __init__(self, pk: int, generation: int, entry: StepEntry) -> None:
        self.pk, self.generation, self.entry = pk, generation, entry

    def _row(self) -> tuple[Any, ...]:
        e = self.entry
        return (self.pk, e.seq, e.type, e.name, e.count, e.state, e.start_at, e.end_at, e.output, e.error_name,
                e.error_message, e.wake_at, e.event_type, e.config, json.dumps(e.attempts, separators=(",", ":")),
                self.generation)  # fmt: skip

    def write(self, conn: sqlite3.Connection) -> None:
        if conn.execute(_STEP_WRITE_SQL.format(rows=_STEP_ROW), self._row()).rowcount != 1:
            raise StaleRunError(self.pk)

    @classmethod
    def write_all(cls, conn: sqlite3.Connection, ops: Sequence[Mergeable]) -> bool:
        params = [value for op in ops for value in cast(_StepWrite, op)._row()]
        sql = _STEP_WRITE_SQL.format(rows=",".join([_STEP_ROW] * len(ops)))
        return bool(conn.execute(sql, params).rowcount == len(ops))


_STEP_ROW = "(" + ",".join("?" * 16) + ")"
_STEP_WRITE_SQL = (
    f"INSERT OR REPLACE INTO steps (instance_pk, {_STEP_COLUMNS}) "
    "SELECT " + ", ".join(f"column{i}" for i in range(1, 16)) + " FROM (VALUES {rows}) "
    "WHERE EXISTS (SELECT 1 FROM instances WHERE pk = column1 AND generation = column16)"
)


def _namespace_filter(namespace: str | None, workflow: str | None) -> tuple[str, list[Any]]:
    """A WHERE clause (and its arguments) selecting a namespace and workflow when given."""
    clauses, args = [], []
    for column, value in (("ns", namespace), ("workflow", workflow)):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ?")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _check_generation(conn: sqlite3.Connection, pk: int, generation: int) -> str:
    row = conn.execute("SELECT status, generation FROM instances WHERE pk = ?", (pk,)).fetchone()
    if row is None or row[1] != generation:
        raise StaleRunError(pk)
    status: str = row[0]
    return status


class SqliteStore(EngineStore):
    """The embedded default store: one SQLite file."""

    def __init__(self, path: str | Path, config: EngineConfig | None = None) -> None:
        self.path = Path(path)
        self._config = config or EngineConfig()
        self._reader_db: aiosqlite.Connection | None = None
        self._writer: SqliteWriter | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(self._open_writer_connection)
        self._writer = SqliteWriter(conn)
        self._reader_db = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (*self._pragmas(), "PRAGMA query_only = ON"):
            await self._reader_db.execute(pragma)

    def _pragmas(self) -> tuple[str, ...]:
        return (
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {self._config.synchronous}",
            f"PRAGMA busy_timeout = {int(self._config.busy_timeout_ms)}",
        )

    def _open_writer_connection(self) -> sqlite3.Connection:
        """The writer's connection, with the schema created or migrated (runs on a worker thread)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas():
                conn.execute(pragma)
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:  # a new file: the script created version 1
                conn.execute("INSERT INTO schema_version (version) VALUES (1)")
            found: int = 1 if row is None else row[0]
            if found > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has engine schema version {found}, newer than this tenantflow "
                    f"({SCHEMA_VERSION}); upgrade tenantflow"
                )
            for version in range(found + 1, SCHEMA_VERSION + 1):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_MIGRATIONS[version - 2])
                conn.execute("UPDATE schema_version SET version = ?", (version,))
                conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.aclose()
        reader, self._reader_db = self._reader_db, None
        if reader is not None:
            await reader.close()

    def _write(self, op: Op) -> asyncio.Future[Any]:
        return self._open_writer().submit(op)

    def _open_writer(self) -> SqliteWriter:
        if self._writer is None:
            raise RuntimeError(
                "the engine store is not open (call open() or use it as an async context manager)"
            )
        return self._writer

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        db = self._reader_db
        if db is None:
            raise RuntimeError("the engine store is not open")
        return await on_db_thread(db, lambda: fn(db._conn))

    # -- instances -----------------------------------------------------------------------------

    async def insert_instances(self, rows: Sequence[NewInstance]) -> list[int]:
        def op(conn: sqlite3.Connection) -> list[int]:
            pks = []
            for r in rows:
                try:
                    cur = conn.execute(
                        "INSERT INTO instances (ns, id, workflow, status, params, ckey, created_at, updated_at, "
                        "wake_at, retention_ms, affinity) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, 0, ?, ?)",
                        (r.namespace, r.id, r.workflow, r.params, r.concurrency_key, r.created_at, r.created_at,
                         r.retention_ms, r.affinity),
                    )  # fmt: skip
                except sqlite3.IntegrityError:
                    raise InstanceExistsError(r.namespace, r.id) from None
                pks.append(int(cur.lastrowid or 0))
            return pks

        result: list[int] = await self._write(op)
        return result

    async def get_instance(self, namespace: str, instance_id: str) -> StoredInstance | None:
        def fn(conn: sqlite3.Connection) -> StoredInstance | None:
            row = conn.execute(
                f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE ns = ? AND id = ?", (namespace, instance_id)
            ).fetchone()
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
        where = ["ns = ?"]
        args: list[Any] = [namespace]
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if created_after is not None:
            where.append("created_at >= ?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at < ?")
            args.append(created_before)
        if after is not None:
            where.append("(created_at, pk) < (?, ?)" if descending else "(created_at, pk) > (?, ?)")
            args.extend(after)
        order = "DESC" if descending else "ASC"
        sql = (
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {order}, pk {order} LIMIT ?"
        )
        args.append(limit)

        def fn(conn: sqlite3.Connection) -> list[StoredInstance]:
            return [_row_to_instance(r) for r in conn.execute(sql, args).fetchall()]

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
        sets = [f"{column} = ?" for column in changes]
        sets.append("updated_at = ?")
        if bump_generation:
            sets.append("generation = generation + 1")
        values = [*changes.values(), now]
        sql = (
            f"UPDATE instances SET {', '.join(sets)} WHERE pk = ? "
            f"AND status IN ({','.join('?' * len(expect_status))}) RETURNING {_INSTANCE_COLUMNS}"
        )

        def op(conn: sqlite3.Connection) -> StoredInstance | None:
            row = conn.execute(sql, (*values, pk, *expect_status)).fetchone()
            return None if row is None else _row_to_instance(row)

        result: StoredInstance | None = await self._write(op)
        return result

    async def delete_instance(self, pk: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM steps WHERE instance_pk = ?", (pk,))
            conn.execute("DELETE FROM events WHERE instance_pk = ?", (pk,))
            conn.execute("DELETE FROM instances WHERE pk = ?", (pk,))

        await self._write(op)

    # -- runs ----------------------------------------------------------------------------------

    async def load_run(self, pk: int) -> tuple[StoredInstance, list[StepEntry]] | None:
        def fn(conn: sqlite3.Connection) -> tuple[StoredInstance, list[StepEntry]] | None:
            row = conn.execute(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE pk = ?", (pk,)).fetchone()
            if row is None:
                return None
            steps = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE instance_pk = ? ORDER BY seq", (pk,)
            ).fetchall()
            return _row_to_instance(row), [_row_to_step(s) for s in steps]

        result: tuple[StoredInstance, list[StepEntry]] | None = await self._read(fn)
        return result

    def mark_running(self, pk: int, generation: int, now: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE instances SET status = 'running', started_at = COALESCE(started_at, ?), updated_at = ? "
                "WHERE pk = ? AND generation = ? AND status IN ('queued', 'waiting', 'running')",
                (now, now, pk, generation),
            )

        if self._writer is not None:
            self._writer.submit_nowait(op)

    async def save_step(self, pk: int, generation: int, entry: StepEntry) -> None:
        await self._write(_StepWrite(pk, generation, entry))

    def save_step_blocking(
        self, loop: asyncio.AbstractEventLoop, pk: int, generation: int, entry: StepEntry
    ) -> None:
        # Straight to the writer thread: no hop through the event loop (see engine/_sqlite_writer.py).
        self._open_writer().run_blocking(_StepWrite(pk, generation, entry))

    async def take_event(
        self, pk: int, generation: int, entry: StepEntry, now: int, save_waiting: bool
    ) -> tuple[str, int] | None:
        def op(conn: sqlite3.Connection) -> tuple[str, int] | None:
            _check_generation(conn, pk, generation)
            row = conn.execute(
                "SELECT pk, payload, received_at FROM events WHERE instance_pk = ? AND type = ? "
                "AND consumed_seq IS NULL ORDER BY pk LIMIT 1",
                (pk, entry.event_type),
            ).fetchone()
            if row is None:
                if save_waiting:
                    _write_step(conn, pk, entry)
                return None
            conn.execute("UPDATE events SET consumed_seq = ? WHERE pk = ?", (entry.seq, row[0]))
            payload = row[1] if row[1] is not None else "null"
            entry.state, entry.end_at = "complete", now
            entry.output = f'{{"payload":{payload},"timestamp":"{iso_ms(row[2])}","type":{json.dumps(entry.event_type)}}}'
            _write_step(conn, pk, entry)
            return payload, row[2]

        result: tuple[str, int] | None = await self._write(op)
        return result

    async def finish_run(self, pk: int, generation: int, finish: RunFinish) -> FinishResult:
        def op(conn: sqlite3.Connection) -> FinishResult:
            try:
                status = _check_generation(conn, pk, generation)
            except StaleRunError:
                return "stale"
            if status not in ("running", "waitingForPause", "queued", "waiting"):
                return "stale"
            if finish.kind != "suspended":
                conn.execute(
                    "UPDATE instances SET status = ?, output = ?, error_name = ?, error_message = ?, ended_at = ?, "
                    "updated_at = ?, wake_at = NULL, waiting_event = NULL, purge_at = ? WHERE pk = ?",
                    ("complete" if finish.kind == "complete" else "errored", finish.output, finish.error_name,
                     finish.error_message, finish.now, finish.now, finish.purge_at, pk),
                )  # fmt: skip
                return "finished"
            wake_at = finish.wake_at
            if finish.waiting_event is not None:
                pending = conn.execute(
                    "SELECT 1 FROM events WHERE instance_pk = ? AND type = ? AND consumed_seq IS NULL LIMIT 1",
                    (pk, finish.waiting_event),
                ).fetchone()
                if pending is not None:
                    wake_at = 0
            if status == "waitingForPause":
                conn.execute(
                    "UPDATE instances SET status = 'paused', wake_at = NULL, paused_wake_at = ?, waiting_event = ?, "
                    "updated_at = ? WHERE pk = ?",
                    (wake_at, finish.waiting_event, finish.now, pk),
                )
                return "paused"
            conn.execute(
                "UPDATE instances SET status = ?, wake_at = ?, waiting_event = ?, updated_at = ? WHERE pk = ?",
                ("queued" if wake_at == 0 else "waiting", wake_at, finish.waiting_event, finish.now, pk),
            )
            return "requeue" if wake_at == 0 else "waiting"

        result: FinishResult = await self._write(op)
        return result

    async def truncate_journal(self, pk: int, keep_before: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE events SET consumed_seq = NULL WHERE instance_pk = ? AND consumed_seq >= ?",
                (pk, keep_before),
            )
            conn.execute("DELETE FROM steps WHERE instance_pk = ? AND seq >= ?", (pk, keep_before))

        await self._write(op)

    # -- events --------------------------------------------------------------------------------

    async def add_event(
        self, pk: int, event_type: str, payload: str | None, now: int, max_buffered: int
    ) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status, waiting_event, wake_at FROM instances WHERE pk = ?", (pk,)
            ).fetchone()
            if row is None or row[0] not in (*_LIVE, "paused"):
                raise InvalidTransitionError(str(pk), "send an event to", row[0] if row else "deleted")
            (buffered,) = conn.execute(
                "SELECT COUNT(*) FROM events WHERE instance_pk = ? AND consumed_seq IS NULL", (pk,)
            ).fetchone()
            if buffered >= max_buffered:
                raise InvalidTransitionError(
                    str(pk),
                    f"buffer another event ({buffered} unconsumed, the limit is {max_buffered}) for",
                    row[0],
                )
            conn.execute(
                "INSERT INTO events (instance_pk, type, payload, received_at) VALUES (?, ?, ?, ?)",
                (pk, event_type, payload, now),
            )
            if row[0] == "waiting" and row[1] == event_type and row[2]:
                conn.execute("UPDATE instances SET wake_at = 0, updated_at = ? WHERE pk = ?", (now, pk))
                return True
            return False

        result: bool = await self._write(op)
        return result

    # -- scheduling ----------------------------------------------------------------------------

    async def claim_due(self, now: int, limit: int) -> list[tuple[int, str]]:
        def op(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                "UPDATE instances SET wake_at = 0 WHERE pk IN (SELECT pk FROM instances WHERE wake_at > 0 "
                "AND wake_at <= ? ORDER BY wake_at LIMIT ?) RETURNING pk, ckey",
                (now, limit),
            ).fetchall()
            return [(r[0], r[1]) for r in rows]

        result: list[tuple[int, str]] = await self._write(op)
        return result

    async def next_wake(self) -> int | None:
        def fn(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT MIN(wake_at) FROM instances WHERE wake_at > 0").fetchone()
            return None if row is None else row[0]

        result: int | None = await self._read(fn)
        return result

    async def ready_instances(self) -> list[tuple[int, str]]:
        def fn(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute("SELECT pk, ckey FROM instances WHERE wake_at = 0 ORDER BY pk").fetchall()
            return [(r[0], r[1]) for r in rows]

        result: list[tuple[int, str]] = await self._read(fn)
        return result

    async def purge_finished(self, now: int, limit: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            pks = [
                r[0]
                for r in conn.execute(
                    "SELECT pk FROM instances WHERE purge_at IS NOT NULL AND purge_at <= ? LIMIT ?",
                    (now, limit),
                )
            ]
            for pk in pks:
                conn.execute("DELETE FROM steps WHERE instance_pk = ?", (pk,))
                conn.execute("DELETE FROM events WHERE instance_pk = ?", (pk,))
                conn.execute("DELETE FROM instances WHERE pk = ?", (pk,))
            return len(pks)

        result: int = await self._write(op)
        return result

    async def count_instances(self, namespace: str | None, workflow: str | None) -> dict[str, int]:
        where, args = _namespace_filter(namespace, workflow)

        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                f"SELECT status, COUNT(*) FROM instances{where} GROUP BY status", args
            ).fetchall()
            return {str(status): int(count) for status, count in rows}

        result: dict[str, int] = await self._read(fn)
        return result

    async def journal(self, pk: int) -> list[StepEntry]:
        def fn(conn: sqlite3.Connection) -> list[StepEntry]:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE instance_pk = ? ORDER BY seq", (pk,)
            ).fetchall()
            return [_row_to_step(r) for r in rows]

        result: list[StepEntry] = await self._read(fn)
        return result
