"""Versions: idempotent upload, numbering, lookups, persistence, schema, lifecycle."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from artifacts import (
    ArtifactStore,
    InvalidNameError,
    SchemaVersionError,
    SqliteArtifactStore,
    StoreClosedError,
    VersionNotFoundError,
)
from tests.artifacts.conftest import OpenStore, RawSql
from tests.artifacts.helpers import NS, files, make_zip


def bundle(n: int, workflow: str = "orders") -> bytes:
    return make_zip(files(workflow, v_py=f"N = {n}\n".encode()))


async def test_identical_upload_returns_the_existing_version(store: ArtifactStore) -> None:
    first = await store.upload(NS, bundle(1), filename="b.zip", uploader="alice")
    again = await store.upload(NS, bundle(1), filename="b.zip", uploader="bob")
    assert first.created and not again.created
    assert again.version == first.version  # same number, digest, uploader, creation time
    assert again.version.uploader == "alice"
    assert [v.number for v in await store.list_versions(NS, "orders")] == [1]


async def test_numbers_increase_per_workflow_and_namespace(store: ArtifactStore) -> None:
    numbers = [
        (await store.upload(NS, bundle(i), filename="b.zip", uploader="u")).version.number for i in range(3)
    ]
    assert numbers == [1, 2, 3]
    assert (await store.upload(NS, bundle(0, "billing"), filename="b.zip", uploader="u")).version.number == 1
    other = await store.upload("tenant-b", bundle(0), filename="b.zip", uploader="u")
    assert other.created and other.version.number == 1
    assert other.version.digest == (await store.resolve(NS, "orders", 1)).digest  # same content, same digest
    # re-uploading an old version's content does not bump the counter
    assert not (await store.upload(NS, bundle(0), filename="b.zip", uploader="u")).created
    assert (await store.upload(NS, bundle(9), filename="b.zip", uploader="u")).version.number == 4


async def test_version_records_and_lookups(open_store: OpenStore) -> None:
    clock_at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with await open_store(clock=lambda: clock_at) as store:
        v1 = (await store.upload(NS, bundle(1), filename="b.zip", uploader="alice")).version
        v2 = (await store.upload(NS, bundle(2), filename="b.zip", uploader="bob", aliases=["beta"])).version
        assert v1.created_at == clock_at
        assert (v1.namespace, v1.workflow, v1.uploader) == (NS, "orders", "alice")
        assert v1.digest.startswith("sha256:") and len(v1.digest) == 71
        for ref in (2, "2", v2.digest, "latest", "beta"):
            assert await store.resolve(NS, "orders", ref) == v2
        assert await store.resolve(NS, "orders", v1.digest) == v1
        assert await store.get_version(NS, "orders", 3) is None
        assert await store.get_version(NS, "orders", "production") is None
        with pytest.raises(VersionNotFoundError, match="no version 3 of workflow 'orders' in namespace"):
            await store.resolve(NS, "orders", 3)
        with pytest.raises(VersionNotFoundError):
            await store.resolve("tenant-b", "orders", "latest")  # namespaces never see each other
        for bad in (0, -1, "sha256:abc", "no way", True):
            with pytest.raises(InvalidNameError):
                await store.resolve(NS, "orders", bad)
        assert [v.number for v in await store.list_versions(NS, "orders")] == [2, 1]
        assert [v.number for v in await store.list_versions(NS, "orders", limit=1, before=2)] == [1]
        workflows = await store.list_workflows(NS)
        assert [(w.workflow, w.versions, w.latest_number) for w in workflows] == [("orders", 2, 2)]
        assert await store.list_workflows("nobody") == []


async def test_store_persists_across_reopen_and_records_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with await SqliteArtifactStore.open(path) as store:
        version = (await store.upload(NS, bundle(1), filename="b.zip", uploader="u")).version
    async with await SqliteArtifactStore.open(path) as store:
        assert await store.resolve(NS, "orders", "latest") == version
        assert (await store.read_bundle(version.digest)).files["v.py"] == b"N = 1\n"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_schema_version_is_recorded_and_a_newer_one_refused(
    open_store: OpenStore, raw_sql: RawSql
) -> None:
    async with await open_store():
        pass
    assert await raw_sql("SELECT version FROM schema_version", ()) == [(1,)]
    async with await open_store():  # reopening applies nothing twice
        pass
    await raw_sql("INSERT INTO schema_version VALUES (99, CURRENT_TIMESTAMP)", ())
    with pytest.raises(SchemaVersionError, match="schema version 99 is newer than the supported 1"):
        await open_store()


async def test_close_is_idempotent_and_final(open_store: OpenStore) -> None:
    store = await open_store()
    await store.aclose()
    await store.aclose()
    assert store.closed
    with pytest.raises(StoreClosedError, match="closed; open a new one"):
        await store.resolve(NS, "orders", "latest")
    with pytest.raises(StoreClosedError):
        await store.upload(NS, bundle(1), filename="b.zip", uploader="u")


async def test_blobs_are_stored_once(store: ArtifactStore, raw_sql: RawSql) -> None:
    shared = b"# shared helper\n" * 100
    for i in range(3):
        data = make_zip(files(lib_py=shared, v_py=f"N = {i}\n".encode()))
        await store.upload(f"tenant-{i}", data, filename="b.zip", uploader="u")
    assert await raw_sql("SELECT COUNT(*) FROM blobs WHERE data = ?", (shared,)) == [(1,)]


async def test_resolve_is_one_indexed_lookup(sqlite_store: SqliteArtifactStore, tmp_path: Path) -> None:
    """Every resolve form is a single statement whose plan only searches keys: no table scans."""
    from artifacts._digest import parse_ref
    from artifacts._sqlite import SqliteBackend

    version = (await sqlite_store.upload(NS, bundle(1), filename="b.zip", uploader="u")).version
    db = sqlite3.connect(tmp_path / "artifacts.db")
    try:
        for ref in ("latest", 1, version.digest):
            sql, params = SqliteBackend._version_query(NS, "orders", parse_ref(ref))
            assert db.execute(sql, params).fetchall()  # the query finds the version
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert plan, ref
            assert all(step.startswith("SEARCH") for step in plan), (ref, plan)
            assert all("PRIMARY KEY" in step or "INDEX" in step for step in plan), (ref, plan)
    finally:
        db.close()


async def test_records_are_hashable_values(store: ArtifactStore) -> None:
    toml = b'workflow = "orders"\n[limits]\ncpu_seconds = 2\n'
    data = make_zip({"tenantflow.toml": toml, "main.py": files()["main.py"]})
    version = (await store.upload(NS, data, filename="b.zip", uploader="u")).version
    same = await store.resolve(NS, "orders", "latest")
    assert {version, same} == {version}
    assert dict(version.manifest.limits) == {"cpu_seconds": 2}
    with pytest.raises(TypeError):
        version.manifest.limits["cpu_seconds"] = 99  # type: ignore[index]
