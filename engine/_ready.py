"""Ready instances, handed out fairly between concurrency keys under global and per-key limits.

Round-robin over keys that have ready work and spare capacity: a key with 10,000 queued instances
gets one turn per round like a key with one, so it cannot starve it. All operations are O(1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class ReadyQueue:
    def __init__(
        self, max_running: int, max_running_per_key: int, key_limit: Callable[[str], int] | None = None
    ) -> None:
        self._max_running = max_running
        self._max_per_key = max_running_per_key
        self._key_limit = key_limit
        self._queues: dict[str, deque[int]] = {}
        self._ring: deque[str] = deque()
        self._in_ring: set[str] = set()
        self._queued: set[int] = set()
        self._running: dict[str, int] = {}
        self.running = 0
        """Instances handed out and not yet released."""

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, pk: int) -> bool:
        return pk in self._queued

    def push(self, pk: int, key: str) -> None:
        """Add a ready instance (no-op if it is already queued)."""
        if pk in self._queued:
            return
        self._queued.add(pk)
        self._queues.setdefault(key, deque()).append(pk)
        self._schedule_key(key)

    def pop(self) -> tuple[int, str] | None:
        """The next instance to run, or None when nothing is ready or every limit is reached."""
        if self.running >= self._max_running:
            return None
        while self._ring:
            key = self._ring.popleft()
            self._in_ring.discard(key)
            queue = self._queues.get(key)
            if not queue:
                self._queues.pop(key, None)
                continue
            if self._running.get(key, 0) >= self._limit(key):
                continue  # re-scheduled by release()
            pk = queue.popleft()
            self._queued.discard(pk)
            self._running[key] = self._running.get(key, 0) + 1
            self.running += 1
            if queue:
                self._schedule_key(key)
            else:
                del self._queues[key]
            return pk, key
        return None

    def release(self, key: str) -> None:
        """An instance of ``key`` handed out by ``pop`` finished its run."""
        self.running -= 1
        left = self._running[key] - 1
        if left:
            self._running[key] = left
        else:
            del self._running[key]
        if key in self._queues:
            self._schedule_key(key)

    def _schedule_key(self, key: str) -> None:
        if key not in self._in_ring and self._running.get(key, 0) < self._limit(key):
            self._ring.append(key)
            self._in_ring.add(key)

    def _limit(self, key: str) -> int:
        if self._key_limit is None:
            return self._max_per_key
        return min(self._max_per_key, max(1, self._key_limit(key)))
