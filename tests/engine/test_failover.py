"""Failover: three worker PROCESSES share one PostgreSQL schema and run 1,000 instances x 10 steps;
one is killed with SIGKILL mid-run. Every instance completes with the right output, no committed
step's side effect happens twice, nothing stays stuck, and the takeover time is reported.

Exactly-once, precisely: every journal entry's token has exactly one side-effect row, and any other
execution of the same step (one that never committed) belongs to an OLDER generation than the
committed one, i.e. to a run that was fenced (the killed worker's, or one whose lease was taken
over). A committed step that ran again would show up as a row of the same or a newer generation.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine import CreateRequest, Engine, EngineConfig, FunctionExecutor, PostgresStore
from tests.conftest import PgSchema

from .failover_worker import SIDE_EFFECTS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 1_000
STEPS = 10


async def _connect(pg: PgSchema) -> Any:
    import asyncpg

    return await asyncpg.connect(pg.dsn, server_settings={"search_path": pg.name})


def _start_worker(pg: PgSchema) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.failover_worker", pg.dsn, pg.name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"worker {proc.pid} exited before it started (code {proc.poll()})"
    return proc, json.loads(line)["worker"]


async def test_three_worker_processes_survive_a_sigkill(pg_schema: PgSchema) -> None:
    conn = await _connect(pg_schema)
    procs: list[subprocess.Popen[str]] = []
    try:
        await conn.execute(f"CREATE SCHEMA {pg_schema.name}")
        await conn.execute(SIDE_EFFECTS)
        # The API side (creates, observes) runs no instances itself.
        api = Engine(
            PostgresStore(pg_schema.dsn, schema=pg_schema.name), FunctionExecutor(), worker=False,
            config=EngineConfig(),
        )  # fmt: skip
        await api.start()
        started = await asyncio.gather(*(asyncio.to_thread(_start_worker, pg_schema) for _ in range(3)))
        procs = [p for p, _ in started]
        ids = {w: p for p, w in started}

        begin = time.monotonic()
        for start in range(0, INSTANCES, 100):
            await api.create_batch(
                "fo", [CreateRequest("ten", {"base": n}, id=f"f{n}") for n in range(start, start + 100)]
            )
        while await conn.fetchval("SELECT COUNT(*) FROM side_effects") < INSTANCES * STEPS // 4:
            await asyncio.sleep(0.01)

        leases = await conn.fetch(
            "SELECT lease_owner, COUNT(*) FROM instances WHERE lease_owner IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
        )
        victim = leases[0][0]
        ids[victim].send_signal(signal.SIGKILL)
        killed_ms = time.time_ns() // 1_000_000
        ids[victim].wait()
        held = [r[0] for r in await conn.fetch("SELECT pk FROM instances WHERE lease_owner = $1", victim)]
        assert held, "the killed worker held no instance"

        deadline = time.monotonic() + 90
        while (await api.count("fo")).get("complete", 0) < INSTANCES:
            assert time.monotonic() < deadline, f"stuck: {await api.count('fo')}"
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - begin

        # Takeover: kill -> the first step of an instance the dead worker held, committed by another.
        first_ms = await conn.fetchval(
            "SELECT MIN(end_at) FROM steps WHERE instance_pk = ANY($1::bigint[]) AND end_at >= $2",
            held, killed_ms,
        )  # fmt: skip
        takeover_ms = first_ms - killed_ms

        outputs = {
            r[0]: json.loads(r[1])
            for r in await conn.fetch("SELECT id, output FROM instances WHERE ns = 'fo'")
        }
        assert outputs == {f"f{n}": n * 10 + 45 for n in range(INSTANCES)}
        assert await conn.fetchval("SELECT COUNT(*) FROM instances WHERE lease_owner IS NOT NULL") == 0

        journal = await conn.fetch(
            "SELECT i.id, s.seq, s.output, i.generation FROM steps s JOIN instances i ON i.pk = s.instance_pk "
            "WHERE s.state = 'complete'"
        )
        assert len(journal) == INSTANCES * STEPS
        committed = {(r[0], json.loads(r[2])["n"]): json.loads(r[2])["token"] for r in journal}
        effects = await conn.fetch("SELECT instance_id, step, token, generation, worker FROM side_effects")
        by_token = Counter(r[2] for r in effects)
        generation_of = {r[2]: r[3] for r in effects}
        for key, token in committed.items():
            assert by_token[token] == 1, f"committed step {key} has {by_token[token]} side effects"
        orphans = [r for r in effects if committed[(r[0], r[1])] != r[2]]
        for instance_id, step, _, generation, worker in orphans:
            winner = generation_of[committed[(instance_id, step)]]
            assert generation < winner, f"{instance_id} step {step} ran again after it committed ({worker})"
        taken_over = await conn.fetchval("SELECT COUNT(*) FROM instances WHERE generation > 0")
        orphan_workers = Counter("killed" if r[4] == victim else "survivor" for r in orphans)
        print(
            f"\nfailover: {INSTANCES}x{STEPS} steps by 3 worker processes in {elapsed:.1f} s; SIGKILL of a worker "
            f"holding {len(held)} instances; takeover (kill -> first step of a taken-over instance committed "
            f"elsewhere) {takeover_ms} ms; {taken_over} instances taken over; {len(orphans)} uncommitted "
            f"executions re-run ({dict(orphan_workers)}), none committed twice"
        )
        await api.aclose()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        await conn.close()
