"""Concurrent uploads get distinct consecutive numbers and no alias move is lost.

Run both with concurrent tasks on one store object and with two store objects on one database
(separate connections racing for SQLite's write lock, or for PostgreSQL's row locks).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest

from artifacts import AliasConflictError, AliasRecord, ArtifactStore, SqliteArtifactStore, StoreConfig
from tests.artifacts.conftest import OpenStore
from tests.artifacts.helpers import NS, files, make_zip, tgz_of


def bundle(n: int) -> bytes:
    content = files(v_py=f"N = {n}\n".encode())
    return make_zip(content) if n % 2 else tgz_of(content)


async def upload(store: ArtifactStore, n: int) -> int:
    name = "b.zip" if n % 2 else "b.tgz"
    result = await store.upload(NS, bundle(n), filename=name, uploader=f"u{n}", aliases=["tip"])
    assert result.created
    return result.version.number


async def assert_consistent(store: ArtifactStore, count: int, numbers: list[int]) -> None:
    assert sorted(numbers) == list(range(1, count + 1))  # distinct and consecutive
    assert (await store.resolve(NS, "orders", "latest")).number == count
    for alias in ("latest", "tip"):
        history = sorted(await store.alias_history(NS, "orders", alias), key=lambda e: e.generation)
        # every upload's move is recorded, in commit order, each one starting where the last ended
        assert [e.generation for e in history] == list(range(1, count + 1))
        assert [e.number for e in history] == list(range(1, count + 1))
        assert [e.previous for e in history] == [None, *range(1, count)]
    versions = await store.list_versions(NS, "orders")
    assert {v.uploader for v in versions} == {f"u{n}" for n in range(count)}


async def test_concurrent_uploads_on_one_store(store: ArtifactStore) -> None:
    numbers = await asyncio.gather(*(upload(store, n) for n in range(12)))
    await assert_consistent(store, 12, list(numbers))


async def test_concurrent_uploads_through_two_store_objects(open_store: OpenStore) -> None:
    async with await open_store() as a, await open_store() as b:
        numbers = await asyncio.gather(*(upload(a if n % 2 else b, n) for n in range(12)))
        await assert_consistent(a, 12, list(numbers))
        assert await b.list_versions(NS, "orders") == await a.list_versions(NS, "orders")


async def test_identical_concurrent_uploads_create_one_version(open_store: OpenStore) -> None:
    async with await open_store() as a, await open_store() as b:
        data = make_zip(files())
        results = await asyncio.gather(
            *(s.upload(NS, data, filename="b.zip", uploader="u") for s in (a, b, a, b, a, b))
        )
        assert sum(r.created for r in results) == 1
        assert {r.version.number for r in results} == {1}


async def test_compare_and_set_race_has_exactly_one_winner(open_store: OpenStore) -> None:
    async with await open_store() as a, await open_store() as b:
        for n in range(1, 9):
            await upload(a, n)
        start = await a.set_alias(NS, "orders", "production", 1, actor="setup")

        async def attempt(store: ArtifactStore, target: int) -> AliasRecord | None:
            try:
                return await store.set_alias(
                    NS,
                    "orders",
                    "production",
                    target,
                    actor=f"r{target}",
                    expected_generation=start.generation,
                )
            except AliasConflictError:
                return None

        outcomes = await asyncio.gather(*(attempt(a if t % 2 else b, t) for t in range(2, 9)))
        winners = [o for o in outcomes if o is not None]
        assert len(winners) == 1
        current = await b.get_alias(NS, "orders", "production")
        assert current == winners[0]
        assert current is not None and current.generation == start.generation + 1


async def test_unconditional_moves_are_all_recorded(open_store: OpenStore) -> None:
    async with await open_store() as a, await open_store() as b:
        for n in range(1, 5):
            await upload(a, n)
        targets = [1, 2, 3, 4] * 3
        await asyncio.gather(
            *(
                (a if i % 2 else b).set_alias(NS, "orders", "production", t, actor=f"m{i}")
                for i, t in enumerate(targets)
            )
        )
        history = sorted(await a.alias_history(NS, "orders", "production"), key=lambda e: e.generation)
        assert [e.generation for e in history] == list(range(1, len(history) + 1))
        # each recorded move starts where the previous one ended: nothing was overwritten unseen
        for before, after in itertools.pairwise(history):
            assert after.previous == before.number
        current = await a.get_alias(NS, "orders", "production")
        assert current is not None and current.number == history[-1].number


async def test_writer_waits_for_a_foreign_write_lock_up_to_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with (
        await SqliteArtifactStore.open(path) as patient,
        await SqliteArtifactStore.open(path, StoreConfig(busy_timeout_seconds=0.05)) as hasty,
    ):
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                await upload(hasty, 1)
            waiting = asyncio.ensure_future(upload(patient, 2))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # blocked on the lock, not failed
            other.execute("COMMIT")
            assert await waiting == 1
        finally:
            other.close()


async def test_concurrent_uploads_sharing_blobs_across_workflows(open_store: OpenStore) -> None:
    """Different workflows writing the same blobs at once neither deadlock nor duplicate them."""
    shared = {f"s{i}_py": f"S{i} = {i}\n".encode() for i in range(6)}
    async with await open_store() as a, await open_store() as b:
        results = await asyncio.gather(
            *(
                (a if k % 2 else b).upload(
                    f"tenant-{k % 3}", make_zip(files(f"wf{k}", **shared)), filename="b.zip", uploader="u"
                )
                for k in range(8)
            )
        )
        assert all(r.created and r.version.number == 1 for r in results)
        for result in results:
            bundle = await a.read_bundle(result.version.digest)
            assert bundle.files["s5.py"] == b"S5 = 5\n"
        gc = await b.collect_garbage()
        assert (gc.bundles, gc.blobs) == (0, 0)
