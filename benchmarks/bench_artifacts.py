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


def _bulk_insert(path: Path, count: int, manifest: str, created_at: int) -> None:
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
    finally:
        db.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered), 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
    }


async def _measure(path: Path, count: int, samples: int, real_digest: str) -> dict[str, Any]:
    rng = random.Random(count)
    async with await SqliteArtifactStore.open(path) as store:
        assert (await store.resolve(_namespace(0), WORKFLOW, "production")).digest == real_digest
        picks = [rng.randrange(count) for _ in range(samples)]
        for i in picks[:200]:  # warm-up
            await store.resolve(_namespace(i), WORKFLOW, "latest")
        figures: dict[str, Any] = {}
        for kind in ("alias", "number", "digest"):
            timings: list[float] = []
            for i in picks:
                ns = _namespace(i)
                ref: int | str = "production" if kind == "alias" else 1
                if kind == "digest":
                    ref = real_digest if i == 0 else _digest(i)
                start = time.perf_counter_ns()
                version = await store.resolve(ns, WORKFLOW, ref)
                timings.append((time.perf_counter_ns() - start) / 1000)
                if version.number != 1:
                    raise RuntimeError("benchmark data is inconsistent")
            figures[kind] = _percentiles(timings)
        return figures


async def _one(count: int, samples: int, tmp: Path) -> dict[str, Any]:
    path = tmp / f"artifacts-{count}.db"
    async with await SqliteArtifactStore.open(path) as store:
        real = await store.upload(
            _namespace(0), _bundle(), filename="b.zip", uploader="bench", aliases=["production"]
        )
    manifest = real.version.manifest.to_json()
    started = time.perf_counter()
    _bulk_insert(path, count, manifest, created_at=0)
    populate = time.perf_counter() - started
    figures = await _measure(path, count, samples, real.version.digest)
    return {
        "namespaces": count,
        "populate_s": round(populate, 1),
        "db_mib": round(path.stat().st_size / 2**20, 1),
        "resolve": figures,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure resolve latency at a small and a large namespace count; returns the figures."""
    sizes = (1_000, 50_000) if quick else (1_000, 1_000_000)
    samples = 1_000 if quick else 5_000
    with tempfile.TemporaryDirectory(prefix="bench-artifacts-") as tmp:
        results = [asyncio.run(_one(n, samples, Path(tmp))) for n in sizes]
    return {"benchmark": "artifacts.resolve", "quick": quick, "samples": samples, "results": results}


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{'namespaces':>11} {'ref':>7} {'p50 us':>8} {'p99 us':>8}   (populate s, db MiB)",
    ]
    for result in report["results"]:
        for kind, figures in result["resolve"].items():
            lines.append(
                f"{result['namespaces']:>11,} {kind:>7} {figures['p50_us']:>8} {figures['p99_us']:>8}"
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
