"""Crash recovery: SIGKILL a real engine process, start another, check exactly-once for committed steps."""

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .crash_worker import INSTANCES

ROOT = Path(__file__).resolve().parents[2]


def _run(db: Path, effects: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.engine.crash_worker", str(db), str(effects), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _committed_steps(db: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT i.id, s.name FROM steps s JOIN instances i ON i.pk = s.instance_pk WHERE s.state = 'complete'"
        ).fetchall()
    return {(instance_id, int(name.split("-")[1])) for instance_id, name in rows}


@pytest.mark.parametrize("mode", ["mid-step", "after-commit"])
def test_sigkill_then_recovery_runs_no_committed_step_twice(tmp_path: Path, mode: str) -> None:
    db, effects = tmp_path / "engine.db", tmp_path / "effects.log"
    first = _run(db, effects, mode)
    assert first.returncode == -signal.SIGKILL, first.stderr

    committed_before = _committed_steps(db)
    assert ("c7", 2) in committed_before
    if mode == "mid-step":
        assert ("c7", 3) not in committed_before
    else:
        assert ("c7", 3) in committed_before

    second = _run(db, effects, "none")
    assert second.returncode == 0, second.stderr
    outputs = __import__("json").loads(second.stdout)
    assert outputs == {i: 150 for i in INSTANCES}

    counts = Counter(tuple(line.split(":")) for line in effects.read_text().split())
    for instance_id, index in committed_before:
        assert counts[(instance_id, str(index))] == 1, f"committed step {instance_id}:{index} ran again"
    for instance_id in INSTANCES:
        for index in range(1, 6):
            assert counts[(instance_id, str(index))] >= 1
    assert _committed_steps(db) == {(i, n) for i in INSTANCES for n in range(1, 6)}
