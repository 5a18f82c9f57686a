"""The warm cache: hits, single-flight preparation, bounds, idle expiry, eviction under pressure."""

import asyncio
import os
from pathlib import Path

from dispatcher import OPERATOR, CacheKey, WarmCache
from dispatcher._cache import Prepared
from sandbox import Bundle, Limits, SandboxBackend, create_backend

from .conftest import deploy, open_platform

SOURCE = b"def run(event, step):\n    return event['payload']\n"


def _cache(backend: SandboxBackend, prepared_calls: list[str], **options: object) -> WarmCache:
    async def prepare(key: CacheKey, backend: SandboxBackend) -> Prepared:
        prepared_calls.append(key.tenant)
        await asyncio.sleep(0.01)
        bundle = Bundle(key.digest, {"main.py": SOURCE})
        return Prepared(bundle, await backend.prepare(bundle))

    return WarmCache({"inprocess": backend}, prepare, **options)  # type: ignore[arg-type]


def _key(tenant: str) -> CacheKey:
    return CacheKey(tenant, "sha256:" + "0" * 64, "inprocess", Limits())


async def test_hits_misses_and_single_flight_preparation() -> None:
    calls: list[str] = []
    cache = _cache(create_backend("inprocess"), calls, pool_size=2)
    sandboxes = await asyncio.gather(*(cache.acquire(_key("t")) for _ in range(5)))
    assert calls == ["t"]  # five concurrent cold wakes, one preparation
    assert cache.stats.misses == 5 and cache.stats.cold_starts == 5
    for sandbox in sandboxes:
        cache.release(_key("t"), sandbox)
    assert cache.sandboxes == 2  # the pool keeps two; the rest were closed
    await asyncio.sleep(0)
    assert sum(not s.alive for s in sandboxes) == 3
    again = await cache.acquire(_key("t"))
    assert again in sandboxes and cache.stats.hits == 1
    cache.release(_key("t"), again, reusable=False)
    await asyncio.sleep(0)
    assert not again.alive
    await cache.aclose()


async def test_bounded_by_entries_and_memory_and_idle_time() -> None:
    calls: list[str] = []
    cache = _cache(create_backend("inprocess"), calls, max_entries=3, pool_size=1)
    for i in range(6):
        sandbox = await cache.acquire(_key(f"t{i}"))
        cache.release(_key(f"t{i}"), sandbox)
    assert len(cache) == 3 and cache.stats.evictions == 3
    small = _cache(create_backend("inprocess"), calls, max_memory_bytes=2 * 1024 * 1024, pool_size=1,
                   bytes_per_sandbox={"inprocess": 1024 * 1024})  # fmt: skip
    for i in range(4):
        sandbox = await small.acquire(_key(f"m{i}"))
        small.release(_key(f"m{i}"), sandbox)
    assert len(small) == 2
    idle = _cache(create_backend("inprocess"), calls, idle_seconds=0.0)
    sandbox = await idle.acquire(_key("x"))
    idle.release(_key("x"), sandbox)
    assert idle.sweep() == 1 and len(idle) == 0
    await asyncio.sleep(0)
    assert not sandbox.alive
    for c in (cache, small, idle):
        await c.aclose()


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_eviction_under_pressure_with_a_thousand_tenants(tmp_path: Path) -> None:
    platform = await open_platform(tmp_path / "data", cache_options={"max_entries": 40, "pool_size": 1})
    try:
        tenants = [f"t{i:04d}" for i in range(1000)]
        source = "def run(event, step):\n    return step.do('double', lambda: event['payload'] * 2)\n"
        for tenant in tenants:
            await deploy(platform, tenant, source)
        rss_samples = []
        for round_ in range(2):
            created = []
            for index, tenant in enumerate(tenants):
                created.append(
                    await platform.create_instance(OPERATOR, tenant, "flow", index, instance_id=f"r{round_}")
                )
            for index, tenant in enumerate(tenants):
                done = await platform.engine.wait(tenant, f"r{round_}", timeout=120)
                assert (await platform.get_instance(OPERATOR, tenant, "flow", done.id)).output == index * 2
                assert platform.cache.sandboxes <= 40 + platform.engine.config.max_concurrency
            rss_samples.append(_rss_bytes())
        assert len(platform.cache) <= 40
        assert platform.cache.stats.evictions >= 1900
        # The second round loaded as many sandboxes as the first, yet memory did not keep growing.
        assert rss_samples[1] - rss_samples[0] < 150 * 1024 * 1024, rss_samples
    finally:
        await platform.aclose()


async def test_memory_accounting_follows_every_acquire_and_release() -> None:
    calls: list[str] = []
    cache = _cache(create_backend("inprocess"), calls, pool_size=2, bytes_per_sandbox={"inprocess": 1000})

    def accounted() -> None:
        """The sizes the LRU charged are the entries' sizes now (what its memory bound relies on)."""
        entries = dict(cache._lru.items())
        charged = cache._lru._Cache__size  # type: ignore[attr-defined]
        assert {key: charged[key] for key in entries} == {key: e.size for key, e in entries.items()}
        assert cache._lru.currsize == sum(entry.size for entry in entries.values())

    first, second, third = [await cache.acquire(_key("t")) for _ in range(3)]
    accounted()  # three loaded and in use
    cache.release(_key("t"), first)
    cache.release(_key("t"), second)
    accounted()
    cache.release(_key("t"), third)  # the pool is full: closed, the entry shrinks
    accounted()
    assert cache._lru.currsize == 2000
    warm = await cache.acquire(_key("t"))
    cache.release(_key("t"), warm)  # warm round trip: unchanged size, no re-insert needed
    accounted()
    dead = await cache.acquire(_key("t"))
    cache.release(_key("t"), dead, reusable=False)
    accounted()
    assert cache._lru.currsize == 1000 and cache.sandboxes == 1
    await cache.aclose()
