"""A million sleeping instances: the engine process's RSS, and the wake-up lag of a batch that
comes due among them (full stack: ``dispatcher.Platform``, wasm tenant, ``synchronous=FULL``).

    python -m benchmarks bench_full_sleepers [--quick]

Setup (untimed): a platform runs one real instance of ``SLEEPER`` (it sleeps until a time ~300
days out), then the platform is closed and its ``instances`` and ``steps`` rows are copied
``sleepers`` times with plain SQL (one ``INSERT ... SELECT`` over a recursive counter each, so a
million rows take seconds, not the hours a million API calls would), giving ids ``sleeper-<n>``.
The copies are identical to what the engine wrote for the original, so the engine sees a million
real waiting instances.

Each measurement is a fresh child process that opens the platform on that data directory
(``rss_open_mib``: VmRSS once the engine has started), creates a batch of 100 instances that sleep
until one moment 3 s ahead, waits for all of them, then the same with a batch of
1,000 due 6 s ahead (``LEAD_MS``), and reports the lag of each (``ended_at`` minus
the due time: timer noticed, instance claimed, sandbox invoked, completion committed) and the RSS
and peak RSS (VmHWM) and PSS afterwards (by then ~100 sandboxes are warm in the cache). The same is done on a copy with no sleepers as the baseline, so
"flat" is the difference. The million-sleeper measurement runs 3 times (not 5: the setup
dominates); the quick run uses 10,000 sleepers, one run, the batch of 100 only. Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_full import add_tenant, open_platform, pct, summary
from dispatcher import OPERATOR
from engine import FINISHED, Status

TENANT = "sleepy"
SLEEPER = "def run(event, step):\n    step.sleep_until('due', event['payload']['due'])\n    return 1\n"
FAR = 300 * 86_400_000
LEAD_MS = 6_000
"""How far ahead a batch comes due: time enough for all of it to run up to its sleep."""
BATCHES = (100, 1_000)
"""Sizes of the batches that come due together (one after the other in each child)."""


async def _template(data_dir: Path) -> None:
    platform = await open_platform(data_dir)
    try:
        await add_tenant(platform, TENANT, SLEEPER)
        due = int(time.time() * 1000) + FAR
        instance = await platform.create_instance(OPERATOR, TENANT, "flow", {"due": due}, instance_id="t")
        await platform.engine.wait(TENANT, instance.id, statuses={Status.WAITING}, timeout=60)
    finally:
        await platform.aclose()


def _copy_rows(db: Path, copies: int) -> None:
    """Duplicate the template instance ``t`` and its steps ``copies`` times (ids ``sleeper-<n>``)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        (pk,) = conn.execute("SELECT pk FROM instances WHERE id = 't'").fetchone()
        (top,) = conn.execute("SELECT max(pk) FROM instances").fetchone()
        counter = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) "
        columns = [row[1] for row in conn.execute("PRAGMA table_info(instances)")]
        exprs = {"pk": "? + c.n", "id": "'sleeper-' || c.n"}
        select = ", ".join(exprs.get(c, f"t.{c}") for c in columns)
        conn.execute(
            f"{counter}INSERT INTO instances ({', '.join(columns)}) "
            f"SELECT {select} FROM instances t, c WHERE t.pk = ?",
            (copies, top, pk),
        )
        columns = [row[1] for row in conn.execute("PRAGMA table_info(steps)")]
        select = ", ".join("? + c.n" if c == "instance_pk" else f"s.{c}" for c in columns)
        conn.execute(
            f"{counter}INSERT INTO steps ({', '.join(columns)}) "
            f"SELECT {select} FROM steps s, c WHERE s.instance_pk = ?",
            (copies, top, pk),
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _pss_mib() -> float:
    """PSS: unlike RSS, counts a page mapped by many sandboxes of this process once (RSS counts it
    once per mapping, so 100 warm wasm sandboxes sharing the runner's memory image inflate RSS)."""
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _due_batch(platform: Any, batch: int, lead_ms: int) -> list[int]:
    """Lags (ms) of ``batch`` instances that all come due at one moment ``lead_ms`` ahead."""
    due = int(time.time() * 1000) + lead_ms
    created = []
    for offset in range(0, batch, 100):
        items = [(None, {"due": due}) for _ in range(min(100, batch - offset))]
        created += await platform.create_instances(OPERATOR, TENANT, "flow", items)
    for instance in created:  # all asleep before they come due, or the lag means nothing
        await platform.engine.wait(TENANT, instance.id, statuses={Status.WAITING, *FINISHED})
    if time.time() * 1000 > due - 500:
        raise RuntimeError(f"the batch took too long to fall asleep; raise LEAD_MS ({lead_ms})")
    lags = []
    for instance in created:
        done = await platform.engine.wait(TENANT, instance.id, statuses=FINISHED, timeout=120)
        if done.status != Status.COMPLETE or done.ended_at is None:
            raise RuntimeError(f"sleeper ended {done.status}: {done.error}")
        lags.append(done.ended_at - due)
    return lags


async def _measure(data_dir: Path, batches: list[int]) -> dict[str, Any]:
    platform = await open_platform(data_dir)
    try:
        await asyncio.sleep(1.0)  # let the scheduler settle on the loaded store
        figures: dict[str, Any] = {"rss_open_mib": _status_mib("VmRSS")}
        for batch in batches:
            loads = platform.cache.stats.cold_starts
            lags = await _due_batch(platform, batch, LEAD_MS if batch > 100 else 3_000)
            figures[f"sandbox_loads_batch_{batch}"] = platform.cache.stats.cold_starts - loads
            figures[f"lag_p50_ms_batch_{batch}"] = pct(lags, 0.5)
            figures[f"lag_p99_ms_batch_{batch}"] = pct(lags, 0.99)
        figures["rss_after_mib"] = _status_mib("VmRSS")
        figures["rss_peak_mib"] = _status_mib("VmHWM")
        figures["pss_after_mib"] = _pss_mib()
        return figures
    finally:
        await platform.aclose()


def _child(data_dir: Path, batches: tuple[int, ...]) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_full_sleepers",
            "--child",
            str(data_dir),
            *map(str, batches),
        ],
        cwd=Path(__file__).parent.parent,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    sleepers = 10_000 if quick else 1_000_000
    runs = 1 if quick else 3
    batches = (100,) if quick else BATCHES
    label = f"{sleepers // 1000}k" if sleepers < 1_000_000 else "1M"
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tf-bench-sleepers-") as tmp:
        base = Path(tmp) / "base"
        asyncio.run(_template(base))
        loaded = Path(tmp) / "loaded"
        shutil.copytree(base, loaded)
        started = time.perf_counter()
        _copy_rows(loaded / "engine.db", sleepers)
        figures["setup_insert_s"] = round(time.perf_counter() - started, 1)
        figures["engine_db_mib"] = round((loaded / "engine.db").stat().st_size / 2**20, 1)
        for name, directory in (("0", base), (label, loaded)):
            results = [_child(directory, batches) for _ in range(runs)]
            for key in results[0]:
                figures[f"{key}_{name}_sleeping"] = summary([r[key] for r in results], 1)
    figures["rss_growth_mib"] = round(
        figures[f"rss_peak_mib_{label}_sleeping"]["median"] - figures["rss_peak_mib_0_sleeping"]["median"], 1
    )
    figures["runs_note"] = f"{runs} runs per figure"
    return figures


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(_measure(Path(sys.argv[2]), [int(b) for b in sys.argv[3:]]))))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
