"""The local artifact cache: verified on every read, refetched when corrupt, bounded in size."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from artifacts import BundleFiles, SqliteArtifactStore
from dispatcher import OPERATOR, Platform
from dispatcher._disk_cache import DiskArtifactCache, bundle_digest
from sandbox import create_backend
from tests.dispatcher.conftest import deploy, finish

from .conftest import PgPrefix

SOURCE = "def run(event, step):\n    return step.do('s', lambda: 'ok')\n"


async def _stored_bundle(tmp_path: Path, source: str = SOURCE) -> BundleFiles:
    tmp_path.mkdir(parents=True, exist_ok=True)
    async with await SqliteArtifactStore.open(tmp_path / "artifacts.db") as store:
        result = await store.upload(
            "acme", source.encode(), uploader="t", workflow="flow", filename="main.py"
        )
        return await store.read_bundle(result.version.digest)


class Fetcher:
    def __init__(self, files: BundleFiles) -> None:
        self.files = files
        self.calls = 0

    async def __call__(self) -> BundleFiles:
        self.calls += 1
        return self.files


async def test_the_digest_matches_the_artifact_store(tmp_path: Path) -> None:
    files = await _stored_bundle(tmp_path)
    assert bundle_digest(dict(files.files)) == files.digest


async def test_a_bundle_is_fetched_once_then_read_from_disk(tmp_path: Path) -> None:
    files = await _stored_bundle(tmp_path)
    fetch = Fetcher(files)
    cache = await DiskArtifactCache.open(tmp_path / "cache")
    assert await cache.bundle(files.digest, fetch) == files
    again = await cache.bundle(files.digest, fetch)
    assert dict(again.files) == dict(files.files) and again.manifest == files.manifest
    assert fetch.calls == 1 and cache.stats.hits == 1 and cache.stats.misses == 1
    # A new process (a restart) finds it on disk too.
    restarted = await DiskArtifactCache.open(tmp_path / "cache")
    assert len(restarted) == 1 and restarted.size == cache.size
    await restarted.bundle(files.digest, fetch)
    assert fetch.calls == 1 and restarted.stats.hits == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
async def test_a_corrupt_cache_file_is_refetched(tmp_path: Path, damage: str) -> None:
    files = await _stored_bundle(tmp_path)
    other = await _stored_bundle(tmp_path / "other", SOURCE.replace("'ok'", "'evil'"))
    fetch = Fetcher(files)
    cache = await DiskArtifactCache.open(tmp_path / "cache")
    await cache.bundle(files.digest, fetch)
    (path,) = (tmp_path / "cache" / "bundles").glob("*.json")
    if damage == "flip":  # well-formed, different code: only the digest check can tell
        record = json.loads(path.read_text())
        record["files"]["main.py"] = base64.b64encode(b"def run(event, step):\n    return 'evil'\n").decode()
        path.write_text(json.dumps(record))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    else:  # another (valid) bundle's file under this digest's name
        await cache.bundle(other.digest, Fetcher(other))
        path.write_bytes((tmp_path / "cache" / "bundles" / (other.digest[7:] + ".json")).read_bytes())
    loaded = await cache.bundle(files.digest, fetch)
    assert dict(loaded.files) == dict(files.files)
    assert fetch.calls == 2 and cache.stats.corrupt == 1
    await cache.bundle(files.digest, fetch)  # rewritten intact
    assert fetch.calls == 2


async def test_derived_forms_are_verified(tmp_path: Path) -> None:
    cache = await DiskArtifactCache.open(tmp_path)
    calls: list[int] = []

    async def fetch() -> bytes | None:
        calls.append(1)
        return b"compiled"

    assert await cache.derived("sha256:" + "0" * 64, "wasm", "1", fetch) == b"compiled"
    assert await cache.derived("sha256:" + "0" * 64, "wasm", "1", fetch) == b"compiled"
    assert len(calls) == 1
    (path,) = (tmp_path / "derived").glob("*.bin")
    path.write_bytes(path.read_bytes()[:-1] + b"X")
    assert await cache.derived("sha256:" + "0" * 64, "wasm", "1", fetch) == b"compiled"
    assert len(calls) == 2 and cache.stats.corrupt == 1

    async def nothing() -> bytes | None:
        return None

    assert await cache.derived("sha256:" + "1" * 64, "wasm", "1", nothing) is None
    assert len(cache) == 1  # a miss with nothing to cache leaves no file


async def test_the_size_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = await DiskArtifactCache.open(tmp_path, max_bytes=10_000)
    digests = ["sha256:" + hashlib.sha256(bytes([i])).hexdigest() for i in range(6)]
    for digest in digests:
        await cache.put_derived(digest, "wasm", "1", b"x" * 3_000)
        await cache.derived(digests[0], "wasm", "1", _never)  # keep the first one recent
    assert cache.size <= 10_000 and cache.stats.evictions >= 3
    assert len(list((tmp_path / "derived").glob("*.bin"))) == len(cache)
    assert await cache.derived(digests[0], "wasm", "1", _never) == b"x" * 3_000


async def _never() -> bytes | None:
    raise AssertionError("should have been a cache hit")


@pytest.mark.postgres
async def test_a_restarted_worker_cold_starts_from_local_disk(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    backend = create_backend("inprocess")
    backends = {"wasm": backend, "restricted": backend}
    for run in range(2):
        platform = await Platform.open(tmp_path / "worker", db=pg_prefix.dsn, schema=pg_prefix.prefix,
                                       backends=backends)  # fmt: skip
        try:
            if run == 0:
                await deploy(platform, "acme", SOURCE)
            await platform.create_instance(OPERATOR, "acme", "flow", None, instance_id=f"i{run}")
            assert (await finish(platform, "acme", f"i{run}")).output == "ok"
            disk = platform.metrics()["artifact_cache"]
        finally:
            await platform.aclose()
        if run == 0:  # fetched once from the database (deploy prepares it in the background)
            assert disk["misses"] >= 1
        else:
            assert disk["misses"] == 0 and disk["hits"] >= 1  # nothing fetched from the database
