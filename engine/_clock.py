"""Time for the engine: real, or a manual clock that tests advance without waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Milliseconds since the epoch, and a way to wait for a deadline or an earlier wake-up."""

    def now_ms(self) -> int: ...

    async def wait(self, deadline_ms: int | None, wakeup: asyncio.Event) -> None:
        """Return when ``deadline_ms`` is reached (None: never) or ``wakeup`` is set, whichever is first."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def wait(self, deadline_ms: int | None, wakeup: asyncio.Event) -> None:
        timeout = None if deadline_ms is None else max(0.0, (deadline_ms - self.now_ms()) / 1000)
        if timeout == 0.0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)


class ManualClock:
    """A clock that only moves when ``advance`` or ``set`` is called (for tests: no real waiting)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._moved = asyncio.Event()

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self.set(self._now + ms)

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a ManualClock cannot go backwards")
        self._now = now_ms
        self._moved.set()
        self._moved = asyncio.Event()

    async def wait(self, deadline_ms: int | None, wakeup: asyncio.Event) -> None:
        if deadline_ms is not None and deadline_ms <= self._now:
            return
        moved = asyncio.ensure_future(self._moved.wait())
        woken = asyncio.ensure_future(wakeup.wait())
        try:
            await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            woken.cancel()
