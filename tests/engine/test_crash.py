"""Crash recovery: SIGKILL a real engine process, start another, check exactly-once for committed steps.

Runs on both backends: the worker gets ``sqlite PATH`` or ``postgres DSN SCHEMA`` on its command line.
"""

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import PgSchema, run_in_thread

from .crash_worker import INSTANCES

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = (
    "SELECT i.id, s.name FROM steps s JOIN instances i ON i.pk = s.instance_pk WHERE s.state = 'complete'"
)


class Backend:
    """Where the worker processes keep their store, and how the test reads it back."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind: str = request.param
        if self.kind == "sqlite":
            self.db = tmp_path / "engine.db"
            self.argv = ["sqlite", str(self.db)]
        else:
            self.pg: PgSchema = request.getfixturevalue("pg_schema")
            self.argv = ["postgres", self.pg.dsn, self.pg.name]

    def committed_steps(self) -> set[tuple[str, int]]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.db) as conn:
                rows = conn.execute(COMMITTED).fetchall()
        else:
            rows = run_in_thread(self._pg_fetch(COMMITTED))
        return {(instance_id, int(name.split("-")[1])) for instance_id, name in rows}

    async def _pg_fetch(self, sql: str) -> list[tuple[str, str]]:
        import asyncpg

        conn = await asyncpg.connect(self.pg.dsn, server_settings={"search_path": self.pg.name})
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request, tmp_path)


def _run(backend: Backend, effects: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.engine.crash_worker", str(effects), mode, *backend.argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("mode", ["mid-step", "after-commit"])
def test_sigkill_then_recovery_runs_no_committed_step_twice(
    backend: Backend, tmp_path: Path, mode: str
) -> None:
    effects = tmp_path / "effects.log"
    first = _run(backend, effects, mode)
    assert first.returncode == -signal.SIGKILL, first.stderr

    committed_before = backend.committed_steps()
    assert ("c7", 2) in committed_before
    if mode == "mid-step":
        assert ("c7", 3) not in committed_before
    else:
        assert ("c7", 3) in committed_before

    second = _run(backend, effects, "none")
    assert second.returncode == 0, second.stderr
    outputs = json.loads(second.stdout)
    assert outputs == {i: 150 for i in INSTANCES}

    counts = Counter(tuple(line.split(":")) for line in effects.read_text().split())
    for instance_id, index in committed_before:
        assert counts[(instance_id, str(index))] == 1, f"committed step {instance_id}:{index} ran again"
    for instance_id in INSTANCES:
        for index in range(1, 6):
            assert counts[(instance_id, str(index))] >= 1
    assert backend.committed_steps() == {(i, n) for i in INSTANCES for n in range(1, 6)}
