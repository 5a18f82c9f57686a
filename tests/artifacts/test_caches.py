"""The in-memory caches: resolved versions (SQLite) and verified bundles / derived forms (every backend).

A cache is only allowed to make things faster: an alias moved, rolled back or deleted, or a version
deleted, by another store object or another process must be seen on the very next resolve.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from artifacts import (
    ArtifactStore,
    CorruptBlobError,
    SqliteArtifactStore,
    StoreConfig,
    VersionNotFoundError,
)
from artifacts._cache import LRU
from artifacts._sqlite import SqliteBackend
from tests.artifacts.conftest import OpenStore, RawSql
from tests.artifacts.helpers import NS, files, make_zip

ROOT = Path(__file__).resolve().parents[2]


def content(n: int) -> bytes:
    return f"N = {n}  # version-{n}-marker\n".encode()


async def upload(store: ArtifactStore, n: int, **kwargs: object) -> str:
    data = make_zip(files(v_py=content(n)))
    result = await store.upload(NS, data, filename="b.zip", uploader="ci", **kwargs)  # type: ignore[arg-type]
    return result.version.digest


# -- resolve: another store object, another process ---------------------------------------------


async def test_alias_moves_by_another_store_object_are_seen_on_the_next_resolve(
    open_store: OpenStore,
) -> None:
    a, b = await open_store(), await open_store()
    await upload(a, 1)
    await upload(a, 2)
    await a.set_alias(NS, "orders", "production", 1, actor="ops")
    for _ in range(3):  # warm whatever a keeps in memory
        assert (await a.resolve(NS, "orders", "production")).number == 1
        assert (await a.resolve(NS, "orders", "latest")).number == 2

    await b.set_alias(NS, "orders", "production", 2, actor="ops")
    assert (await a.resolve(NS, "orders", "production")).number == 2
    await b.rollback_alias(NS, "orders", "production", actor="oncall")
    assert (await a.resolve(NS, "orders", "production")).number == 1
    await upload(b, 3)  # an upload moves latest
    assert (await a.resolve(NS, "orders", "latest")).number == 3
    await b.delete_alias(NS, "orders", "production", actor="ops")
    assert await a.get_version(NS, "orders", "production") is None
    with pytest.raises(VersionNotFoundError):
        await a.resolve(NS, "orders", "production")


async def test_a_version_deleted_by_another_store_object_no_longer_resolves(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    d1 = await upload(a, 1)
    await upload(a, 2)
    assert (await a.resolve(NS, "orders", 1)).digest == d1
    assert (await a.resolve(NS, "orders", d1)).number == 1
    await b.delete_version(NS, "orders", 1, in_use=None)
    with pytest.raises(VersionNotFoundError):
        await a.resolve(NS, "orders", 1)
    assert await a.get_version(NS, "orders", d1) is None


async def test_every_move_of_a_busy_alias_is_seen_by_the_next_resolve(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    for n in (1, 2, 3):
        await upload(a, n)
    targets = [1 + (i * 7) % 3 for i in range(40)]  # 2, 3, 1, 2, ... never the same twice in a row
    for target in targets:
        mover = b if target % 2 else a  # moves by this store object and by the other one
        await mover.set_alias(NS, "orders", "production", target, actor="ops")
        assert (await a.resolve(NS, "orders", "production")).number == target
        assert (await a.resolve(NS, "orders", "production")).number == target  # and again, from memory
        assert (await a.resolve(NS, "orders", "latest")).number == 3


async def test_own_alias_moves_are_seen(store: ArtifactStore) -> None:
    await upload(store, 1)
    await upload(store, 2)
    assert (await store.resolve(NS, "orders", "latest")).number == 2
    await store.set_alias(NS, "orders", "latest", 1, actor="ops")
    assert (await store.resolve(NS, "orders", "latest")).number == 1
    await store.rollback_alias(NS, "orders", "latest", actor="ops")
    assert (await store.resolve(NS, "orders", "latest")).number == 2


async def test_alias_moved_by_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "artifacts.db"
    async with await SqliteArtifactStore.open(path) as store:
        await upload(store, 1)
        await upload(store, 2)
        assert (await store.resolve(NS, "orders", "latest")).number == 2
        script = textwrap.dedent(
            f"""
            import asyncio
            from artifacts import SqliteArtifactStore

            async def main():
                async with await SqliteArtifactStore.open({str(path)!r}) as other:
                    await other.set_alias({NS!r}, "orders", "latest", 1, actor="cli")

            asyncio.run(main())
            """
        )
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
        assert (await store.resolve(NS, "orders", "latest")).number == 1


# -- resolve: the cache itself (SQLite) ---------------------------------------------------------


def _backend(store: ArtifactStore) -> SqliteBackend:
    backend = store._backend
    assert isinstance(backend, SqliteBackend)
    return backend


async def test_a_repeated_resolve_reads_only_the_data_version(sqlite_store: SqliteArtifactStore) -> None:
    await upload(sqlite_store, 1)
    first = await sqlite_store.resolve(NS, "orders", "latest")
    statements: list[str] = []
    _backend(sqlite_store)._sync.set_trace_callback(statements.append)
    again = await sqlite_store.resolve(NS, "orders", "latest")
    assert again == first
    assert statements == ["PRAGMA data_version"]
    statements.clear()
    await sqlite_store.set_alias(NS, "orders", "production", 1, actor="ops")  # any commit clears the cache
    assert (await sqlite_store.resolve(NS, "orders", "latest")) == first
    assert len(statements) == 2 and "FROM aliases" in statements[1]


async def test_the_resolve_cache_is_bounded(tmp_path: Path) -> None:
    config = StoreConfig(resolve_cache_entries=3)
    async with await SqliteArtifactStore.open(tmp_path / "a.db", config) as store:
        for n in range(1, 7):
            await upload(store, n)
        for _ in range(2):
            for n in range(1, 7):
                assert (await store.resolve(NS, "orders", n)).number == n
                assert len(_backend(store)._resolved) <= 3
        assert (await store.resolve(NS, "orders", "latest")).number == 6


async def test_resolve_without_a_cache_still_sees_moves(tmp_path: Path) -> None:
    config = StoreConfig(resolve_cache_entries=0)
    async with (
        await SqliteArtifactStore.open(tmp_path / "a.db", config) as a,
        await SqliteArtifactStore.open(tmp_path / "a.db") as b,
    ):
        await upload(a, 1)
        await upload(a, 2)
        assert (await a.resolve(NS, "orders", "latest")).number == 2
        assert len(_backend(a)._resolved) == 0
        await b.set_alias(NS, "orders", "latest", 1, actor="ops")
        assert (await a.resolve(NS, "orders", "latest")).number == 1


class _LockedConnection:
    """Answers like a sqlite3 connection that finds the file locked (WAL recovery, an exclusive lock):
    a state another process can only put a live file in by crashing, so it is simulated here."""

    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("database is locked")


async def test_a_locked_file_makes_resolve_fall_back_to_the_reader_thread(
    sqlite_store: SqliteArtifactStore,
) -> None:
    await upload(sqlite_store, 1)
    backend = _backend(sqlite_store)
    real, backend._sync = backend._sync, _LockedConnection()  # type: ignore[assignment]
    try:
        assert (await sqlite_store.resolve(NS, "orders", "latest")).number == 1
        assert await sqlite_store.get_version(NS, "orders", "production") is None
    finally:
        backend._sync = real
    assert (await sqlite_store.resolve(NS, "orders", "latest")).number == 1


# -- bundles and derived forms in memory (every backend) ----------------------------------------


async def test_bundles_are_served_from_memory_within_the_byte_bound(
    open_store: OpenStore, raw_sql: RawSql
) -> None:
    probe = await open_store()
    d1 = await upload(probe, 1)
    d2 = await upload(probe, 2)
    await probe.read_bundle(d1)
    one = probe._memory.cost  # what one bundle costs in memory
    assert one > 0

    store = await open_store(StoreConfig(memory_cache_bytes=one + one // 2))  # room for one bundle
    assert (await store.read_bundle(d1)).files["v.py"].startswith(b"N = 1")
    await raw_sql("UPDATE blobs SET data = ? WHERE data = ?", (b"tampered\n", content(1)))
    assert await raw_sql("SELECT COUNT(*) FROM blobs WHERE data = ?", (b"tampered\n",)) == [(1,)]
    # still the verified copy from memory: the store did not read again
    assert (await store.read_bundle(d1)).files["v.py"].startswith(b"N = 1")
    assert (await store.read_bundle(d2)).files["v.py"].startswith(b"N = 2")  # evicts d1
    assert store._memory.cost <= one + one // 2
    with pytest.raises(CorruptBlobError):  # read from storage again, and verified
        await store.read_bundle(d1)
    # a store without the memory cache reads (and verifies) every time
    uncached = await open_store(StoreConfig(memory_cache_bytes=0))
    with pytest.raises(CorruptBlobError):
        await uncached.read_bundle(d1)
    assert uncached._memory.cost == 0


async def test_derived_forms_in_memory_follow_put_derived(store: ArtifactStore, raw_sql: RawSql) -> None:
    digest = await upload(store, 1)
    await store.put_derived(digest, "wasm", "1", b"compiled-1")
    assert await store.get_derived(digest, "wasm", "1") == b"compiled-1"
    await raw_sql("UPDATE derived SET data = ? WHERE backend = 'wasm'", (b"tampered",))
    assert await store.get_derived(digest, "wasm", "1") == b"compiled-1"  # from memory
    await store.put_derived(digest, "wasm", "1", b"compiled-2")  # replaces it: memory follows
    assert await store.get_derived(digest, "wasm", "1") == b"compiled-2"
    assert await store.get_derived(digest, "wasm", "2") is None  # misses are not remembered
    await store.put_derived(digest, "wasm", "2", b"other")
    assert await store.get_derived(digest, "wasm", "2") == b"other"


async def test_collect_garbage_empties_the_memory_cache(store: ArtifactStore) -> None:
    d1 = await upload(store, 1)
    await upload(store, 2)
    await store.read_bundle(d1)
    await store.delete_version(NS, "orders", 1, in_use=None)
    await store.collect_garbage()
    with pytest.raises(VersionNotFoundError):
        await store.read_bundle(d1)


async def test_closed_store_serves_nothing_from_memory(store: ArtifactStore) -> None:
    from artifacts import StoreClosedError

    d1 = await upload(store, 1)
    await store.read_bundle(d1)
    await store.resolve(NS, "orders", "latest")
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.read_bundle(d1)
    with pytest.raises(StoreClosedError):
        await store.resolve(NS, "orders", "latest")


# -- the pieces --------------------------------------------------------------------------------


def test_lru_bound_order_and_oversized_entries() -> None:
    lru: LRU[str, str] = LRU(10)
    lru.put("a", "A", 4)
    lru.put("b", "B", 4)
    assert lru.get("a") == "A"  # a is now the most recently used
    lru.put("c", "C", 4)  # evicts b
    assert ("a" in lru, "b" in lru, "c" in lru) == (True, False, True)
    assert lru.cost == 8
    lru.put("big", "X", 11)  # larger than the whole bound: not kept, nothing evicted for it
    assert "big" not in lru and lru.cost == 8
    lru.put("a", "A2", 6)  # replacing re-counts the cost
    assert lru.cost == 10 and lru.get("a") == "A2"
    lru.discard("a")
    assert lru.cost == 4 and len(lru) == 1
    lru.clear()
    assert lru.cost == 0 and len(lru) == 0
    assert len(LRU[str, str](0)) == 0


@pytest.mark.parametrize("field", ["memory_cache_bytes", "resolve_cache_entries"])
@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_cache_options_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"StoreConfig.{field} must be an integer >= 0"):
        StoreConfig(**{field: value})  # type: ignore[arg-type]
