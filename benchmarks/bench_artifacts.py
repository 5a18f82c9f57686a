"""Artifact store: resolve latency with 1,000 vs 1,000,000 namespaces (SQLite).

    python -m benchmarks.bench_artifacts [--quick]

One real upload creates the schema and a reference version; the other namespaces' metadata rows
(counter, version, bundle, two aliases) are bulk-inserted directly with ``sqlite3`` for speed,
each namespace with its own bundle digest so lookups do not all hit one hot row. Then
``store.resolve`` is timed by alias, number and digest for namespaces drawn at random. Reports
p50/p99 in microseconds; asserts nothing (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import random
import sqlite3
import statistics
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from artifacts import SqliteArtifactStore
from artifacts._digest import Ref
from artifacts._sqlite import SqliteBackend

WORKFLOW = "orders"
CHUNK = 50_000


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
    """Insert namespaces 1..count-1 directly; returns the database size in bytes."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA foreign_keys = OFF")  # only bundles rows are inserted, not their files

        def chunks() -> Iterator[range]:
            for start in range(1, count, CHUNK):
                yield range(start, min(start + CHUNK, count))

        for block in chunks():
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO bundles (digest, manifest, size, file_count, created_at) VALUES (?, ?, 64, 2, ?)",
                ((_digest(i), manifest, created_at) for i in block),
            )
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
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
    stores = [await SqliteArtifactStore.open(path) for path in paths]
    try:
        for store, info, chosen in zip(stores, sets, picks, strict=True):
            assert (await store.resolve(_namespace(0), WORKFLOW, "production")).digest == info["digest0"]
            for i in chosen[:200]:  # warm-up
                await store.resolve(_namespace(i), WORKFLOW, "latest")
        for kind in ("alias", "number", "digest"):
            timings: list[list[float]] = [[] for _ in sets]
            for j in range(samples):
                for k, (store, info) in enumerate(zip(stores, sets, strict=True)):
                    i = picks[k][j]
                    ref: int | str = "production" if kind == "alias" else 1
                    if kind == "digest":
                        ref = info["digest0"] if i == 0 else _digest(i)
                    start = time.perf_counter_ns()
                    version = await store.resolve(_namespace(i), WORKFLOW, ref)
                    timings[k].append((time.perf_counter_ns() - start) / 1000)
                    if version.number != 1:
                        raise RuntimeError("benchmark data is inconsistent")
            for info, taken in zip(sets, timings, strict=True):
                info.setdefault("resolve", {})[kind] = _percentiles(taken)
    finally:
        for store in stores:
            await store.aclose()
    # The same alias lookup as plain SQL in this thread: the index cost without the hop to the
    # aiosqlite thread, which dominates (and adds the noise to) the figures above.
    for path, info, chosen in zip(paths, sets, picks, strict=True):
        info["resolve"]["alias_sql"] = await asyncio.to_thread(_sql_lookups, path, chosen)


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


async def _run(sizes: tuple[int, ...], samples: int, tmp: Path) -> list[dict[str, Any]]:
    paths = [tmp / f"artifacts-{n}.db" for n in sizes]
    sets = [await _populate(path, n) for path, n in zip(paths, sizes, strict=True)]
    await _measure(sets, paths, samples)
    for info in sets:
        del info["digest0"]
    return sets


def run(quick: bool = False) -> dict[str, Any]:
    """Measure resolve latency at a small and a large namespace count; returns the figures."""
    sizes = (1_000, 50_000) if quick else (1_000, 1_000_000)
    samples = 1_000 if quick else 5_000
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        results = asyncio.run(_run(sizes, samples, Path(tmp)))
    return {"benchmark": "artifacts.resolve", "quick": quick, "samples": samples, "results": results}


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{'namespaces':>11} {'ref':>9} {'p50 us':>8} {'p99 us':>8}   (populate s, db MiB)",
    ]
    for result in report["results"]:
        for kind, figures in result["resolve"].items():
            lines.append(
                f"{result['namespaces']:>11,} {kind:>9} {figures['p50_us']:>8} {figures['p99_us']:>8}"
                f"   ({result['populate_s']}, {result['db_mib']})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1k vs 50k namespaces, fewer samples")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    report = run(quick=args.quick)
    print(_table(report))
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
