"""Warm-hit rate with 300 tenants and several worker processes on one PostgreSQL database.

Each worker is a separate process (``python -m benchmarks.bench_affinity --worker``) running a
``Platform`` on the shared database with a warm cache of ``ceil(tenants / workers) + 10`` entries,
so together the workers can hold every tenant warm only if each keeps to its own share. The
benchmark process is an API-only platform: it deploys one workflow per tenant, runs one instance
per tenant to warm up, then creates instances of random tenants in rounds (up to 32 creations in
flight) and waits for each round to finish.
Figures are taken over the measured phase only: cache hits / (hits + misses) across workers, and
the engine's ``claims_preferred / claims``, and aggregate durable steps/s (wall time of the measured
rounds, each waited for until drained). It runs twice per worker count: with affinity (workers
publish the versions they hold warm, and a ready instance is left to its warm worker for
``EngineConfig.affinity_grace_ms``) and without (``warm_affinity`` returns nothing: greedy claiming).
Tenants run on the in-process test backend, so the figures are about placement, not sandbox cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DSN = os.environ.get(
    "TENANTFLOW_BENCH_PG_DSN",
    os.environ.get("TENANTFLOW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
)
_GRACE = os.environ.get("TENANTFLOW_BENCH_GRACE_MS")
GRACE_MS = int(_GRACE) if _GRACE else None
"""``EngineConfig.affinity_grace_ms`` of the workers (unset: the default)."""
SOURCE = "def run(event, step):\n    a = step.do('a', lambda: event['payload'])\n    return step.do('b', lambda: a)\n"


async def _worker_main(dsn: str, schema: str, data_dir: str, entries: int, affinity: bool, out: str) -> None:
    from dispatcher import Platform
    from sandbox import create_backend

    class NoAffinity(Platform):
        def warm_affinity(self) -> set[str]:
            return set()

    from engine import EngineConfig

    backend = create_backend("inprocess")
    kind = Platform if affinity else NoAffinity
    config = EngineConfig(affinity_grace_ms=GRACE_MS) if GRACE_MS is not None else None
    platform = await kind.open(
        data_dir, db=dsn, schema=schema, backends={"wasm": backend, "restricted": backend},
        cache_options={"max_entries": entries}, tenant_refresh_seconds=1.0, engine_config=config,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            _write_json(out, platform.metrics())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        _write_json(out, platform.metrics())
        await platform.aclose()


def _write_json(path: str, data: Any) -> None:
    Path(path + ".tmp").write_text(json.dumps(data))
    os.replace(path + ".tmp", path)


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.bench_affinity", "--worker", *args],
                            cwd=Path(__file__).resolve().parent.parent)  # fmt: skip


def _wait_for_files(files: list[Path]) -> None:
    while not all(f.exists() for f in files):
        time.sleep(0.1)


def _snapshot(files: list[Path]) -> dict[str, int]:
    total = {"hits": 0, "misses": 0, "claims": 0, "preferred": 0}
    for n, file in enumerate(files):
        data = json.loads(file.read_text())
        total[f"claims{n}"] = data["affinity"]["claims"]
        total["hits"] += data["cache"]["hits"]
        total["misses"] += data["cache"]["misses"]
        total["claims"] += data["affinity"]["claims"]
        total["preferred"] += data["affinity"]["claims_preferred"]
    return total


async def _drain(platform: Any, deadline: float) -> None:
    while time.monotonic() < deadline:
        counts = await platform.engine.count(None)
        if not any(counts.get(s, 0) for s in ("queued", "running", "waiting", "waitingForPause")):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("instances did not finish in time")


async def _scenario(
    workdir: Path, *, tenants: int, workers: int, rounds: int, batch: int, affinity: bool
) -> dict[str, Any]:
    from dispatcher import OPERATOR, Platform
    from sandbox import create_backend

    schema = f"tf_bench_{uuid.uuid4().hex[:10]}"
    backend = create_backend("inprocess")
    api = await Platform.open(workdir / "api", db=DSN, schema=schema, worker=False,
                              backends={"wasm": backend, "restricted": backend})  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    files = [workdir / f"{schema}-w{i}.json" for i in range(workers)]
    try:
        names = [f"t{i:03d}" for i in range(tenants)]
        for name in names:
            await api.create_tenant(OPERATOR, name, policy={"backend": "restricted"})
            await api.deploy(OPERATOR, name, SOURCE.encode(), filename="main.py", workflow="flow")
        entries = math.ceil(tenants / workers) + 10
        for i in range(workers):
            procs.append(_spawn([DSN, schema, str(workdir / f"{schema}-data{i}"), str(entries),
                                 "1" if affinity else "0", str(files[i])]))  # fmt: skip
        await asyncio.to_thread(_wait_for_files, files)
        for name in names:  # warm-up: one instance per tenant
            await api.create_instance(OPERATOR, name, "flow", 0)
        await _drain(api, time.monotonic() + 300)
        await asyncio.sleep(0.6)
        before = _snapshot(files)
        rng = random.Random(7)
        started = time.perf_counter()
        started_ms = time.time_ns() // 1_000_000
        gate = asyncio.Semaphore(32)  # creations in flight: the API side must not be what is measured

        async def create(name: str) -> None:
            async with gate:
                await api.create_instance(OPERATOR, name, "flow", 1)

        for _ in range(rounds):
            await asyncio.gather(*(create(name) for name in rng.sample(names, batch)))
            await _drain(api, time.monotonic() + 300)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.6)
        after = _snapshot(files)
        waits = await _start_waits(schema, started_ms)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await api.aclose()
        await _drop(schema)
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    claims, preferred = after["claims"] - before["claims"], after["preferred"] - before["preferred"]
    return {
        "instances": rounds * batch,
        "warm_hit_rate": round(hits / max(1, hits + misses), 4),
        "claims_preferred_rate": round(preferred / max(1, claims), 4),
        "cold_starts": misses,
        "claims_per_worker": "/".join(
            str(after[f"claims{n}"] - before[f"claims{n}"]) for n in range(workers)
        ),
        "start_wait_ms_p50_p90": waits,
        "seconds": round(elapsed, 2),
        "steps_per_s": round(rounds * batch * 2 / elapsed),  # SOURCE runs two steps
    }


async def _start_waits(schema: str, since_ms: int) -> str:
    """Median and 90th percentile of creation -> first run started, over the measured instances."""
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        row = await conn.fetchrow(
            f"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY started_at - created_at), "
            f"percentile_disc(0.9) WITHIN GROUP (ORDER BY started_at - created_at) "
            f"FROM {schema}_engine.instances WHERE created_at >= $1",
            since_ms,
        )
        return f"{row[0]}/{row[1]}"
    finally:
        await conn.close()


async def _drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        for part in ("engine", "artifacts", "control"):
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema}_{part} CASCADE")
    finally:
        await conn.close()


def run(quick: bool = False) -> dict[str, Any]:
    tenants = 300
    rounds, batch = (3, 150) if quick else (10, 300)
    figures: dict[str, Any] = {"tenants": tenants}
    with tempfile.TemporaryDirectory(prefix="tf-bench-affinity-") as tmp:
        for workers in (2,) if quick else (2, 3):
            for affinity in (True, False):
                label = f"{workers}w_{'affinity' if affinity else 'no_affinity'}"
                result = asyncio.run(_scenario(Path(tmp), tenants=tenants, workers=workers, rounds=rounds,
                                               batch=batch, affinity=affinity))  # fmt: skip
                for key, value in result.items():
                    figures[f"{label}_{key}"] = value
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=6, metavar=("DSN", "SCHEMA", "DIR", "ENTRIES", "AFFINITY", "OUT"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker:
        dsn, schema, data_dir, entries, affinity, out = args.worker
        asyncio.run(_worker_main(dsn, schema, data_dir, int(entries), affinity == "1", out))
        return
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
