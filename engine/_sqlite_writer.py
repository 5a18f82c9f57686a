"""Group commit for SQLite on a writer thread of its own, reachable from any thread.

Design note. Every write to the engine's SQLite file goes through one connection owned by one thread.
The thread takes everything queued so far (up to ``max_batch``), runs it in ONE transaction with a
SAVEPOINT per write (a refused write, e.g. a stale generation, does not undo the others), commits once
(one fsync) and answers every writer. While a batch is being written new writes queue up for the next
one, so throughput grows with concurrency and a lone writer still pays one fsync.

Tried first: the same batching as an asyncio task that ran each batch on aiosqlite's connection
thread. Every durable step of a sandboxed guest then crossed four threads (guest -> event loop ->
aiosqlite -> event loop -> guest), and those hand-offs, not the fsync, were most of a step's cost on
a small VM (a thread wake-up is 25-50 µs there). With the queue here a guest's thread submits its
write and blocks on a lock the writer releases after the COMMIT: two hand-offs. The event loop's own
writes get asyncio futures, resolved with one ``call_soon_threadsafe`` per batch.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

from ._batching import Result
from ._store import StaleRunError

log = logging.getLogger(__name__)

Op = Callable[[sqlite3.Connection], Any]


class Mergeable(abc.ABC):
    """A write that is ONE statement (it fully happens, or raises having changed nothing) and that
    consecutive writes of its kind can share.

    The batch runs such writes without the SAVEPOINT it puts around others, and a run of them of one
    kind with ``write_all``: one ``execute`` for the lot. That matters because every ``execute`` gives
    up and takes back the GIL, and with many guest threads running each take can wait a while.
    """

    __slots__ = ()

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.write(conn)

    @abc.abstractmethod
    def write(self, conn: sqlite3.Connection) -> None:
        """Write this one; raise (having changed nothing) if it is refused. Must be idempotent."""

    @classmethod
    @abc.abstractmethod
    def write_all(cls, conn: sqlite3.Connection, ops: Sequence[Mergeable]) -> bool:
        """Write all of ``ops`` (in order) in one statement; True if every one was applied.

        False sends the batch through ``write`` for each of them to learn which were refused (the
        ones already applied are written again, hence idempotent).
        """


MAX_MERGED = 500
"""Writes merged into one statement at most (SQLite allows 32,766 parameters per statement)."""


class _Blocking:
    """A waiter on a thread other than the loop's: a lock the writer releases when the result is in."""

    __slots__ = ("_lock", "result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.result: Result = (False, RuntimeError("the write was not run"))

    def set(self, result: Result) -> None:
        self.result = result
        self._lock.release()

    def wait(self) -> Any:
        self._lock.acquire()
        ok, value = self.result
        if not ok:
            raise value
        return value


Waiter = asyncio.Future[Any] | _Blocking | None
_CLOSE = object()


class SqliteWriter:
    """Runs queued writes on its own connection and thread, in shared transactions (see the module note)."""

    def __init__(self, conn: sqlite3.Connection, *, max_batch: int = 2_000) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Op, Waiter] | object] = queue.SimpleQueue()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="tenantflow-sqlite-writer", daemon=True)
        self._thread.start()

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op`` from the event loop's thread; the future resolves once it is committed."""
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((op, future))
        return future

    def submit_nowait(self, op: Op) -> None:
        """Queue ``op`` and do not wait for it (a failure is logged)."""
        if not self._closing:
            self._queue.put((op, None))

    def run_blocking(self, op: Op) -> Any:
        """Queue ``op`` from any thread that may block (not the event loop's) and wait for its commit."""
        self._check_open()
        waiter = _Blocking()
        self._queue.put((op, waiter))
        return waiter.wait()

    async def aclose(self) -> None:
        """Write what is queued, then stop the thread and close the connection."""
        if self._closing:
            return
        self._closing = True
        self._queue.put(_CLOSE)
        await asyncio.to_thread(self._thread.join)
        self._conn.close()
        # A write queued while we closed (it passed ``_check_open`` just before) must not wait forever.
        late: list[tuple[Op, Waiter]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _CLOSE:
                late.append(item)  # type: ignore[arg-type]
        if late:
            closed: Result = (False, RuntimeError("the engine store is closed"))
            _answer(late, [closed] * len(late))

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("the engine store is closed")

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            batch: list[tuple[Op, Waiter]] = []
            item = first
            while True:
                if item is _CLOSE:
                    closing = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Op, Waiter]]) -> None:
        try:
            results = self._write_batch([op for op, _ in batch])
        except Exception as exc:  # the connection or the COMMIT failed: every write failed
            log.error("group commit of %d writes failed: %s", len(batch), exc)
            results = [(False, exc)] * len(batch)
        _answer(batch, results)

    def _write_batch(self, ops: list[Op]) -> list[Result]:
        conn = self._conn
        results: list[Result] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(ops):
                op = ops[i]
                if isinstance(op, Mergeable):
                    end = i + 1
                    while end < len(ops) and end - i < MAX_MERGED and type(ops[end]) is type(op):
                        end += 1
                    group = cast(list[Mergeable], ops[i:end])
                    if len(group) > 1 and type(op).write_all(conn, group):
                        results.extend([(True, None)] * len(group))
                    else:
                        results.extend(_write_one(conn, write) for write in group)
                    i = end
                    continue
                conn.execute("SAVEPOINT w")
                try:
                    results.append((True, op(conn)))
                    conn.execute("RELEASE w")
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((False, exc))
                i += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results


def _answer(batch: list[tuple[Op, Waiter]], results: list[Result]) -> None:
    """Hand each write's result to whoever waits for it (any thread)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Result]]] = {}
    for (_, waiter), result in zip(batch, results, strict=True):
        if isinstance(waiter, _Blocking):
            waiter.set(result)
        elif waiter is None:
            if not result[0] and not isinstance(result[1], StaleRunError):
                log.warning("background write failed: %s", result[1])
        else:
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, result))
    for loop, resolved in by_loop.items():
        # A clean context: the writer thread's context is nobody's business on the loop. A closed
        # loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, resolved, context=contextvars.Context())


def _write_one(conn: sqlite3.Connection, write: Mergeable) -> Result:
    try:
        return True, write.write(conn)
    except Exception as exc:
        return False, exc


def _resolve(resolved: list[tuple[asyncio.Future[Any], Result]]) -> None:
    for future, (ok, value) in resolved:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
