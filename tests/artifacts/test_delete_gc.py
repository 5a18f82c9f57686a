"""Deleting versions (refused while referenced) and garbage collection of blobs."""

from __future__ import annotations

import pytest

from artifacts import ArtifactStore, VersionInUseError, VersionNotFoundError
from tests.artifacts.conftest import RawSql
from tests.artifacts.helpers import NS, files, make_zip


async def upload(store: ArtifactStore, n: int, ns: str = NS, **extra: bytes) -> str:
    data = make_zip(files(v_py=f"N = {n}\n".encode(), **extra))
    return (await store.upload(ns, data, filename="b.zip", uploader="ci")).version.digest


async def table_counts(raw_sql: RawSql) -> dict[str, int]:
    return {
        t: (await raw_sql(f"SELECT COUNT(*) FROM {t}", ()))[0][0] for t in ("blobs", "bundles", "derived")
    }


async def test_delete_refused_while_an_alias_points_at_it(store: ArtifactStore) -> None:
    await upload(store, 1)
    await upload(store, 2)
    await store.set_alias(NS, "orders", "production", 1, actor="a")
    with pytest.raises(VersionInUseError) as info:
        await store.delete_version(NS, "orders", 1, in_use=None)
    assert info.value.aliases == ("production",)
    assert not info.value.live_instances
    assert "alias 'production' points at it (move it first)" in str(info.value)
    with pytest.raises(VersionInUseError, match="alias 'latest' points at it"):
        await store.delete_version(NS, "orders", "latest", in_use=None)
    assert (await store.resolve(NS, "orders", 1)).number == 1  # still there


async def test_delete_refused_while_live_instances_use_it(store: ArtifactStore) -> None:
    d1 = await upload(store, 1)
    await upload(store, 2)
    asked: list[str] = []

    async def live(digest: str) -> bool:
        asked.append(digest)
        return True

    with pytest.raises(VersionInUseError, match="live instances are pinned to it") as info:
        await store.delete_version(NS, "orders", 1, in_use=live)
    assert info.value.live_instances and info.value.digest == d1
    assert asked == [d1]

    async def idle(digest: str) -> bool:
        return False

    deleted = await store.delete_version(NS, "orders", 1, in_use=idle)
    assert deleted.number == 1
    with pytest.raises(VersionNotFoundError):
        await store.resolve(NS, "orders", 1)
    with pytest.raises(VersionNotFoundError):
        await store.delete_version(NS, "orders", 1, in_use=idle)
    # numbers are never reused
    assert (
        await store.upload(NS, make_zip(files(v_py=b"N = 3\n")), filename="b.zip", uploader="u")
    ).version.number == 3


async def test_gc_deletes_only_unreferenced_blobs(store: ArtifactStore, raw_sql: RawSql) -> None:
    shared = b"SHARED = True\n"
    d1 = await upload(store, 1, lib_py=shared, only1_txt=b"only in v1")
    await upload(store, 2, lib_py=shared)
    d_other = await upload(store, 1, ns="tenant-b", lib_py=shared, only1_txt=b"only in v1")
    assert d_other == d1  # the same bundle, used by two namespaces
    await store.put_derived(d1, "wasm", "1", b"compiled")
    before = await table_counts(raw_sql)

    assert (await store.collect_garbage()).bundles == 0  # nothing unreferenced yet
    await store.delete_version(NS, "orders", 1, in_use=None)
    result = await store.collect_garbage()
    assert (result.bundles, result.blobs, result.derived) == (0, 0, 0)  # tenant-b still uses it
    assert (await store.read_bundle(d1)).files["only1.txt"] == b"only in v1"

    await store.set_alias("tenant-b", "orders", "latest", 1, actor="x")
    await store.delete_alias("tenant-b", "orders", "latest", actor="x")
    await store.delete_version("tenant-b", "orders", 1, in_use=None)
    result = await store.collect_garbage()
    # v1's own blobs are v.py ("N = 1") and only1.txt; main.py, the manifest and lib.py are shared with v2
    assert (result.bundles, result.blobs, result.derived) == (1, 2, 1)
    assert result.bytes_freed == len(b"N = 1\n") + len(b"only in v1") + len(b"compiled")
    after = await table_counts(raw_sql)
    assert after == {"blobs": before["blobs"] - 2, "bundles": before["bundles"] - 1, "derived": 0}
    with pytest.raises(VersionNotFoundError, match="no bundle with digest"):
        await store.read_bundle(d1)
    assert (await store.read_bundle((await store.resolve(NS, "orders", 2)).digest)).files["lib.py"] == shared
    assert await store.collect_garbage() == result.__class__(bundles=0, blobs=0, derived=0, bytes_freed=0)
