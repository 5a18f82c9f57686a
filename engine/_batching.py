"""Group commit, independent of the database: a queue of writes run in shared transactions.

Writes are queued by ``submit`` (awaited) or ``submit_nowait`` (fire and forget). One task drains
the queue: everything queued so far (up to ``max_batch``) goes to ``_run_batch`` as one batch, which a
store-specific subclass runs in one transaction and answers with one ``(ok, value)`` per write. While a
batch is being written new writes queue up for the next one, so throughput grows with concurrency.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any, Generic, TypeVar

from ._store import StaleRunError

log = logging.getLogger(__name__)

OpT = TypeVar("OpT")
Result = tuple[bool, Any]
"""``(True, value)`` for a write that succeeded, ``(False, exception)`` for one that failed."""


class BatchCommitter(abc.ABC, Generic[OpT]):
    """The queue and the draining loop; subclasses say how one batch is written."""

    def __init__(self, *, max_batch: int, name: str) -> None:
        self._queue: list[tuple[OpT, asyncio.Future[Any] | None]] = []
        self._wakeup = asyncio.Event()
        self._max_batch = max_batch
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=name)

    def submit(self, op: OpT) -> asyncio.Future[Any]:
        if self._closing:
            raise RuntimeError("the engine store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._wakeup.set()
        return future

    def submit_nowait(self, op: OpT) -> None:
        if not self._closing:
            self._queue.append((op, None))
            self._wakeup.set()

    async def aclose(self) -> None:
        self._closing = True
        self._wakeup.set()
        await self._task

    @abc.abstractmethod
    async def _run_batch(self, ops: list[OpT]) -> list[Result]:
        """Write ``ops`` in one transaction; one result per write, in order."""

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                try:
                    results = await self._run_batch([op for op, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        if future is not None:
                            future.cancel()
                    raise
                except Exception as exc:  # the connection or the COMMIT failed: every write failed
                    log.error("group commit of %d writes failed: %s", len(batch), exc)
                    results = [(False, exc)] * len(batch)
                _resolve(batch, results)
            if self._closing:
                return


def _resolve(batch: list[tuple[Any, asyncio.Future[Any] | None]], results: list[Result]) -> None:
    for (_, future), (ok, value) in zip(batch, results, strict=True):
        if future is None:
            if not ok and not isinstance(value, StaleRunError):
                log.warning("background write failed: %s", value)
        elif not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
