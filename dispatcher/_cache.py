"""The warm sandbox cache: loaded tenant code kept ready, keyed by tenant and version.

An LRU (``cachetools.LRUCache``) of entries keyed by ``(tenant, digest, backend, limits)``; each entry
holds a small pool of idle sandboxes (one sandbox serves one invocation at a time). The cache is
bounded by entry count and by estimated memory, and entries idle for longer than ``idle_seconds``
are dropped by ``sweep()``. Eviction closes the sandboxes.

Preparation (fetching the bundle from the artifact store, verifying it, producing or loading the
backend's derived form) is single-flight: concurrent cold wakes of one version share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import cachetools

from sandbox import Bundle, Limits, Sandbox, SandboxBackend

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheKey:
    tenant: str
    digest: str
    backend: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class Prepared:
    """A bundle ready to load: its files and the backend's derived form."""

    bundle: Bundle
    derived: bytes | None


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    """Invocations that found an idle warm sandbox."""
    misses: int = 0
    """Invocations that had to load a sandbox."""
    evictions: int = 0
    """Entries dropped for space or idleness."""
    cold_starts: int = 0
    """Sandboxes loaded."""
    cold_start_seconds: float = 0.0
    """Total time spent loading sandboxes (preparation included)."""
    preparations: int = 0
    """Bundles fetched and prepared (shared by concurrent cold wakes)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "cold_starts": self.cold_starts,
            "cold_start_seconds": self.cold_start_seconds,
            "preparations": self.preparations,
        }


@dataclass(slots=True)
class _Entry:
    idle: list[Sandbox] = field(default_factory=list)
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)
    evicted: bool = False
    bytes_per_sandbox: int = 3 * MiB

    @property
    def size(self) -> int:
        return self.bytes_per_sandbox * max(1, len(self.idle) + self.in_use)


class _LRU(cachetools.LRUCache[CacheKey, _Entry]):
    def __init__(self, maxsize: int, on_evict: Callable[[CacheKey, _Entry], None]) -> None:
        super().__init__(maxsize, getsizeof=lambda entry: entry.size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[CacheKey, _Entry]:
        key, entry = super().popitem()
        self._on_evict(key, entry)
        return key, entry


Preparer = Callable[[CacheKey, SandboxBackend], Awaitable[Prepared]]


class WarmCache:
    """Sandboxes kept warm per (tenant, version). See the module docstring."""

    def __init__(
        self,
        backends: dict[str, SandboxBackend],
        prepare: Preparer,
        *,
        max_entries: int = 1_000,
        max_memory_bytes: int = 2_048 * MiB,
        pool_size: int = 2,
        idle_seconds: float = 600.0,
        bytes_per_sandbox: dict[str, int] | None = None,
    ) -> None:
        self._backends = backends
        self._prepare = prepare
        self._max_entries = max_entries
        self._pool_size = pool_size
        self._idle_seconds = idle_seconds
        self._bytes_per_sandbox = {"wasm": 3 * MiB, "restricted": 1 * MiB, "inprocess": 1 * MiB}
        self._bytes_per_sandbox.update(bytes_per_sandbox or {})
        self._lru = _LRU(max_memory_bytes, self._evicted)
        self._preparing: dict[CacheKey, asyncio.Future[Prepared]] = {}
        self._prepared: cachetools.LRUCache[CacheKey, Prepared] = cachetools.LRUCache(64)
        self._closing: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def sandboxes(self) -> int:
        """Sandboxes held (idle or in use)."""
        return sum(len(entry.idle) + entry.in_use for entry in self._lru.values())

    def warm_keys(self) -> list[CacheKey]:
        """The entries held, least recently used first."""
        return list(self._lru)

    async def acquire(self, key: CacheKey) -> Sandbox:
        """A sandbox for ``key``: a warm one if idle, else a freshly loaded one."""
        entry = self._lru.get(key)
        while entry is not None and entry.idle:
            sandbox = entry.idle.pop()
            if sandbox.alive:
                self.stats.hits += 1
                entry.in_use += 1
                entry.last_used = time.monotonic()
                return sandbox
            self._close(sandbox)
        self.stats.misses += 1
        started = time.perf_counter()
        backend = self._backends[key.backend]
        prepared = await self._prepared_for(key, backend)
        sandbox = await backend.load(prepared.bundle, limits=key.limits, derived=prepared.derived)
        self.stats.cold_starts += 1
        self.stats.cold_start_seconds += time.perf_counter() - started
        entry = self._lru.get(key)
        if entry is None or entry.evicted:
            entry = _Entry(bytes_per_sandbox=self._bytes_per_sandbox.get(key.backend, 3 * MiB))
        entry.in_use += 1
        entry.last_used = time.monotonic()
        self._store(key, entry)
        return sandbox

    def release(self, key: CacheKey, sandbox: Sandbox, *, reusable: bool = True) -> None:
        """Give a sandbox back after its invocation; dead, unusable or surplus sandboxes are closed."""
        entry = self._lru.get(key)  # also marks it most recently used
        if entry is None or entry.evicted:
            self._close(sandbox)
            return
        size = entry.size
        entry.in_use = max(0, entry.in_use - 1)
        entry.last_used = time.monotonic()
        if reusable and sandbox.alive and len(entry.idle) < self._pool_size:
            entry.idle.append(sandbox)
        else:
            self._close(sandbox)
        if entry.size != size:  # a warm sandbox back in its pool leaves the size as it was
            self._store(key, entry)

    def invalidate(self, tenant: str) -> None:
        """Drop every entry of ``tenant`` (its policy changed)."""
        for key in [k for k in self._lru if k.tenant == tenant]:
            entry = self._lru.pop(key)
            self._evicted(key, entry)

    def sweep(self) -> int:
        """Drop entries idle for longer than ``idle_seconds``; returns how many."""
        cutoff = time.monotonic() - self._idle_seconds
        stale = [k for k, e in self._lru.items() if e.in_use == 0 and e.last_used < cutoff]
        for key in stale:
            self._evicted(key, self._lru.pop(key))
        return len(stale)

    async def aclose(self) -> None:
        for key in list(self._lru):
            self._evicted(key, self._lru.pop(key))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- internals -----------------------------------------------------------------------------

    def _store(self, key: CacheKey, entry: _Entry) -> None:
        if key not in self._lru:
            while len(self._lru) >= self._max_entries:
                self._lru.popitem()
        with contextlib.suppress(ValueError):  # an entry larger than the whole budget is not kept
            self._lru[key] = entry

    async def _prepared_for(self, key: CacheKey, backend: SandboxBackend) -> Prepared:
        ready = self._prepared.get(key)
        if ready is not None:
            return ready
        pending = self._preparing.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Prepared] = asyncio.get_running_loop().create_future()
        self._preparing[key] = future
        try:
            prepared = await self._prepare(key, backend)
            self.stats.preparations += 1
            self._prepared[key] = prepared
            future.set_result(prepared)
            return prepared
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._preparing.pop(key, None)

    def _evicted(self, key: CacheKey, entry: _Entry) -> None:
        self.stats.evictions += 1
        entry.evicted = True
        for sandbox in entry.idle:
            self._close(sandbox)
        entry.idle.clear()
        self._prepared.pop(key, None)

    def _close(self, sandbox: Sandbox) -> None:
        task = asyncio.get_running_loop().create_task(sandbox.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
