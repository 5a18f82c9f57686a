"""Artifact store (SQLite): resolve with 1,000 vs 1,000,000 namespaces, and bundle reads hot and cold.

    python -m benchmarks.bench_artifacts [--quick]

One real upload creates the schema and a reference version; the other namespaces' metadata rows
(counter, version, bundle, two aliases) are bulk-inserted directly with ``sqlite3`` for speed,
each namespace with its own bundle digest so lookups do not all hit one hot row. Then
``store.resolve`` is timed for namespaces drawn at random, interleaving the sizes:

* ``alias_hot``: the default store, 100 namespaces over and over after a warm-up: the cache hit
  (``PRAGMA data_version`` and a dict), what a tenant creating instances repeatedly sees.
* ``alias``, ``number``, ``digest``: a store with ``resolve_cache_entries=0``, so every call is the
  miss path: the indexed read on the caller's thread (what a first resolve, or any resolve after a
  write to the artifact database, costs).
* ``alias_hop``: the same query through the aiosqlite reader thread, as every resolve did before
  the cache (issue 9), measured in the same run for a fair before/after ratio.
* ``alias_sql``: that query alone on a plain ``sqlite3`` connection (the index cost).

Bundle reads use a real example bundle (``tenants_example/inventory``) and a 64 KiB derived form:
``cold`` is a store with ``memory_cache_bytes=0`` (every read goes to the file and is verified: the
path before the in-memory cache existed), ``hot`` the default store after a first read.
Reports p50/p99 in microseconds; asserts nothing (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from artifacts import SqliteArtifactStore, StoreConfig, Version
from artifacts._digest import Ref, check_namespace, parse_ref
from artifacts._sqlite import SqliteBackend, _version

WORKFLOW = "orders"
CHUNK = 100_000
HOT = 100
EXAMPLE = Path(__file__).resolve().parents[1] / "tenants_example" / "inventory"


def _bundle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tenantflow.toml", f'workflow = "{WORKFLOW}"\n')
        zf.writestr("main.py", "def run(event, step):\n    return event\n")
    return buf.getvalue()


def _namespace(i: int) -> str:
    return f"tenant-{i:08d}"


def _digest(i: int) -> str:
    return "sha256:" + hashlib.sha256(_namespace(i).encode()).hexdigest()


def _bulk_insert(path: Path, count: int, manifest: str, created_at: int) -> int:
    """Insert namespaces 1..count-1 directly; returns the database size in bytes.

    No journal and no syncs while loading (a benchmark fixture, rebuilt on failure), keys in
    index order, then back to WAL as the store expects.
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB while loading
        db.execute("PRAGMA foreign_keys = OFF")  # only bundles rows are inserted, not their files

        def chunks() -> Iterator[range]:
            for start in range(1, count, CHUNK):
                yield range(start, min(start + CHUNK, count))

        digests = sorted(_digest(i) for i in range(1, count))
        db.execute("BEGIN")
        for start in range(0, len(digests), CHUNK):
            db.executemany(
                "INSERT INTO bundles (digest, manifest, size, file_count, created_at) VALUES (?, ?, 64, 2, ?)",
                ((d, manifest, created_at) for d in digests[start : start + CHUNK]),
            )
        for block in chunks():
            db.executemany(
                "INSERT INTO workflows (namespace, workflow, last_number) VALUES (?, ?, 1)",
                ((_namespace(i), WORKFLOW) for i in block),
            )
            db.executemany(
                "INSERT INTO versions (namespace, workflow, number, digest, created_at, uploader) "
                "VALUES (?, ?, 1, ?, ?, 'bench')",
                ((_namespace(i), WORKFLOW, _digest(i), created_at) for i in block),
            )
            db.executemany(
                "INSERT INTO aliases (namespace, workflow, alias, number, generation, updated_at, updated_by) "
                "VALUES (?, ?, ?, 1, 1, ?, 'bench')",
                (
                    (_namespace(i), WORKFLOW, alias, created_at)
                    for i in block
                    for alias in ("latest", "production")
                ),
            )
        db.execute("COMMIT")
        db.execute("ANALYZE")
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()
    return path.stat().st_size


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
    }


async def _populate(path: Path, count: int) -> dict[str, Any]:
    async with await SqliteArtifactStore.open(path) as store:
        real = await store.upload(
            _namespace(0), _bundle(), filename="b.zip", uploader="bench", aliases=["production"]
        )
    started = time.perf_counter()
    size = await asyncio.to_thread(_bulk_insert, path, count, real.version.manifest.to_json(), 0)
    return {
        "namespaces": count,
        "digest0": real.version.digest,
        "populate_s": round(time.perf_counter() - started, 1),
        "db_mib": round(size / 2**20, 1),
    }


async def _measure(sets: list[dict[str, Any]], paths: list[Path], samples: int) -> None:
    """Time resolves on all stores interleaved, so machine noise hits every size alike."""
    rng = random.Random(7)
    picks = [[rng.randrange(info["namespaces"]) for _ in range(samples)] for info in sets]
    hot = [[rng.randrange(info["namespaces"]) for _ in range(HOT)] for info in sets]
    stores = [await SqliteArtifactStore.open(path) for path in paths]
    uncached = [await SqliteArtifactStore.open(path, StoreConfig(resolve_cache_entries=0)) for path in paths]
    try:
        for store, info, chosen in zip(stores, sets, hot, strict=True):
            assert (await store.resolve(_namespace(0), WORKFLOW, "production")).digest == info["digest0"]
            for i in chosen:  # warm-up of the hot set
                await store.resolve(_namespace(i), WORKFLOW, "production")
        for kind in ("alias_hot", "alias", "alias_hop", "number", "digest"):
            timings: list[list[float]] = [[] for _ in sets]
            for j in range(samples):
                for k, info in enumerate(sets):
                    store = stores[k] if kind == "alias_hot" else uncached[k]
                    i = hot[k][j % HOT] if kind == "alias_hot" else picks[k][j]
                    ref: int | str = 1 if kind == "number" else "production"
                    if kind == "digest":
                        ref = info["digest0"] if i == 0 else _digest(i)
                    start = time.perf_counter_ns()
                    if kind == "alias_hop":
                        version = await _resolve_through_the_reader_thread(store, _namespace(i), ref)
                    else:
                        version = await store.resolve(_namespace(i), WORKFLOW, ref)
                    timings[k].append((time.perf_counter_ns() - start) / 1000)
                    if version.number != 1:
                        raise RuntimeError("benchmark data is inconsistent")
            for info, taken in zip(sets, timings, strict=True):
                info.setdefault("resolve", {})[kind] = _percentiles(taken)
    finally:
        for store in stores + uncached:
            await store.aclose()
    for path, info, chosen in zip(paths, sets, picks, strict=True):
        info["resolve"]["alias_sql"] = await asyncio.to_thread(_sql_lookups, path, chosen)


async def _resolve_through_the_reader_thread(
    store: SqliteArtifactStore, namespace: str, ref: int | str
) -> Version:
    """How ``resolve`` read before the cache (the aiosqlite reader thread), for a same-run comparison."""
    check_namespace(namespace)
    backend = store._backend
    assert isinstance(backend, SqliteBackend)
    rows = await backend._rows(*backend._version_query(namespace, WORKFLOW, parse_ref(ref)))
    return _version(rows[0])


def _sql_lookups(path: Path, chosen: list[int]) -> dict[str, float]:
    db = sqlite3.connect(path)
    try:
        timings = []
        for i in chosen:
            sql, params = SqliteBackend._version_query(_namespace(i), WORKFLOW, Ref(alias="production"))
            start = time.perf_counter_ns()
            rows = db.execute(sql, params).fetchall()
            timings.append((time.perf_counter_ns() - start) / 1000)
            if len(rows) != 1:
                raise RuntimeError("benchmark data is inconsistent")
        return _percentiles(timings)
    finally:
        db.close()


async def _time(call: Callable[[], Awaitable[object]], samples: int) -> dict[str, float]:
    timings = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        await call()
        timings.append((time.perf_counter_ns() - start) / 1000)
    return _percentiles(timings)


async def _bundle_reads(path: Path, samples: int) -> dict[str, Any]:
    """read_bundle and get_derived, cold (from the file, verified) and hot (from memory)."""
    derived = os.urandom(64 * 1024)
    async with await SqliteArtifactStore.open(path) as store:
        version = (await store.upload("bench-bundles", EXAMPLE, uploader="bench")).version
        digest = version.digest
        await store.put_derived(digest, "wasm", "bench", derived)
    cold_config = StoreConfig(memory_cache_bytes=0)
    async with (
        await SqliteArtifactStore.open(path, cold_config) as cold,
        await SqliteArtifactStore.open(path) as hot,
    ):
        await hot.read_bundle(digest)
        await hot.get_derived(digest, "wasm", "bench")
        figures: dict[str, Any] = {"bundle_bytes": version.size, "files": version.file_count}
        figures["read_bundle_cold"] = await _time(lambda: cold.read_bundle(digest), samples)
        figures["read_bundle_hot"] = await _time(lambda: hot.read_bundle(digest), samples)
        figures["get_derived_cold"] = await _time(lambda: cold.get_derived(digest, "wasm", "bench"), samples)
        figures["get_derived_hot"] = await _time(lambda: hot.get_derived(digest, "wasm", "bench"), samples)
    return figures


async def _run(
    sizes: tuple[int, ...], samples: int, tmp: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    paths = [tmp / f"artifacts-{n}.db" for n in sizes]
    sets = [await _populate(path, n) for path, n in zip(paths, sizes, strict=True)]
    await _measure(sets, paths, samples)
    for info in sets:
        del info["digest0"]
    bundles = await _bundle_reads(paths[0], min(samples, 1_000))
    return sets, bundles


def _label(count: int) -> str:
    return f"{count // 1_000_000}M" if count >= 1_000_000 else f"{count // 1_000}k"


def run(quick: bool = False) -> dict[str, Any]:
    """Resolve at 1,000 and 1,000,000 namespaces, and bundle reads: flat figures (µs, p50 and p99)."""
    sizes = (1_000, 1_000_000)
    samples = 1_000 if quick else 5_000
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        results, bundles = asyncio.run(_run(sizes, samples, Path(tmp)))
    figures: dict[str, Any] = {"samples": samples}
    for result in results:
        label = _label(result["namespaces"])
        figures[f"populate_{label}_s"] = result["populate_s"]
        figures[f"db_{label}_mib"] = result["db_mib"]
    for kind in results[0]["resolve"]:
        for result in results:
            for pct, value in result["resolve"][kind].items():
                figures[f"resolve_{kind}_{_label(result['namespaces'])}_{pct}"] = value
    figures["bundle_bytes"] = bundles.pop("bundle_bytes")
    figures["bundle_files"] = bundles.pop("files")
    for kind, values in bundles.items():
        for pct, value in values.items():
            figures[f"{kind}_{pct}"] = value
    return figures


def _table(report: dict[str, Any]) -> str:
    return "\n".join(f"{name:40} {value:>10}" for name, value in report.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 samples per figure instead of 5,000")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    report = run(quick=args.quick)
    print(_table(report))
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
