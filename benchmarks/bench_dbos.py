"""DBOS Transact side by side with tenantflow: the same workflow shape (10 trivial steps), SQLite in
WAL mode, the same machine, the same run (``pip install -e ".[bench]"`` for ``dbos``).

    python -m benchmarks dbos [--quick]

Figures, each a median over 5 runs (1 with ``--quick``) (min, max) for both systems, measured alternately (a DBOS run,
then a tenantflow run, ...) so that machine load hits both alike, plus the ratios
tenantflow/DBOS of the medians:
- ``latency_10_step_ms``: one workflow, start to result, p50 of sequential workflows;
- ``sequential_steps_per_s``: durable steps per second, one workflow after another;
- ``concurrent_<n>x10_s``: ``n`` workflows started at once, time until every result is in.

DBOS: version from PyPI, one fresh child process per run (DBOS is a process-global singleton). Its
system database is a SQLite file created beforehand with ``PRAGMA journal_mode=WAL`` (persistent in
the file; DBOS 3.x does not set it itself), ``synchronous`` left at SQLite's default, FULL (the
child reports what its connections see). Workflow and steps are synchronous functions
(``@DBOS.workflow()``, ``@DBOS.step()``); concurrent workflows are started with
``DBOS.start_workflow`` (DBOS's thread pool) and awaited with ``get_result``.

tenantflow: the full stack (``benchmarks.bench_full``: ``dispatcher.Platform``, a wasm tenant,
``synchronous=FULL``). Nothing is asserted.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_full

CHILD = r"""
import json, sqlite3, statistics, sys, time
from dbos import DBOS, DBOSConfig

db, sequential, concurrent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

@DBOS.step()
def trivial(i):
    return i

@DBOS.workflow()
def ten():
    total = 0
    for i in range(10):
        total += trivial(i)
    return total

config: DBOSConfig = {"name": "tf-bench", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"}
DBOS(config=config)
DBOS.launch()
with sqlite3.connect(db) as conn:
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
for _ in range(5):
    ten()
latencies = []
started = time.perf_counter()
for _ in range(sequential):
    t0 = time.perf_counter()
    assert ten() == 45
    latencies.append(time.perf_counter() - t0)
elapsed = time.perf_counter() - started
t0 = time.perf_counter()
handles = [DBOS.start_workflow(ten) for _ in range(concurrent)]
assert all(h.get_result() == 45 for h in handles)
total = time.perf_counter() - t0
print(json.dumps({
    "latency_10_step_ms": statistics.median(latencies) * 1000,
    "sequential_steps_per_s": sequential * 10 / elapsed,
    "concurrent_s": total,
    "journal_mode": mode,
    "synchronous": sync,
}))
DBOS.destroy()
"""


def _dbos_run(sequential: int, concurrent: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tf-bench-dbos-") as tmp:
        db = Path(tmp) / "dbos.sqlite"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(db), str(sequential), str(concurrent)],
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _tenantflow_run(sequential: int, concurrent: int) -> dict[str, Any]:
    p50, per_s, total = bench_full.in_platform(
        lambda p: bench_full._ten_step_figures(p, sequential, concurrent)
    )
    return {"latency_10_step_ms": p50, "sequential_steps_per_s": per_s, "concurrent_s": total}


def run(quick: bool = False) -> dict[str, Any]:
    try:
        import dbos  # noqa: F401
    except ImportError:
        return {"skipped": 'dbos is not installed: pip install -e ".[bench]"'}
    runs = 1 if quick else 5
    sequential = 20 if quick else 100
    concurrent = 100 if quick else 1_000
    dbos_runs, tf_runs = [], []
    for _ in range(runs):
        dbos_runs.append(_dbos_run(sequential, concurrent))
        tf_runs.append(_tenantflow_run(sequential, concurrent))
    figures: dict[str, Any] = {}
    names = {
        "latency_10_step_ms": "latency_10_step_ms",
        "sequential_steps_per_s": "sequential_steps_per_s",
        "concurrent_s": f"concurrent_{concurrent}x10_s",
    }
    for key, name in names.items():
        d = [r[key] for r in dbos_runs]
        t = [r[key] for r in tf_runs]
        figures[f"dbos_{name}"] = bench_full.summary(d)
        figures[f"tenantflow_{name}"] = bench_full.summary(t)
        figures[f"ratio_tenantflow_over_dbos_{name}"] = round(statistics.median(t) / statistics.median(d), 3)
    figures["dbos_sqlite"] = (
        f"journal_mode={dbos_runs[0]['journal_mode']} synchronous={dbos_runs[0]['synchronous']} (2 = FULL)"
    )
    return figures


if __name__ == "__main__":
    started = time.perf_counter()
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
    print(f"{time.perf_counter() - started:.1f} s")
