"""SIGKILL the whole platform process mid-run; a new process resumes every instance, no step twice."""

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .crash_platform import INSTANCES, TENANTS

ROOT = Path(__file__).resolve().parents[2]


def _run(data: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.dispatcher.crash_platform", str(data), mode],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _committed(data: Path) -> set[tuple[str, str, int]]:
    with sqlite3.connect(data / "engine.db") as db:
        rows = db.execute(
            "SELECT i.ns, i.id, s.name FROM steps s JOIN instances i ON i.pk = s.instance_pk "
            "WHERE s.type = 'step' AND s.state = 'complete'"
        ).fetchall()
    return {(ns, instance_id, int(name[1:])) for ns, instance_id, name in rows}


def _executions(data: Path) -> Counter[tuple[str, str, int]]:
    counts: Counter[tuple[str, str, int]] = Counter()
    for tenant in TENANTS:
        with sqlite3.connect(data / "tenants" / f"{tenant}.sqlite3") as db:
            for (key,) in db.execute("SELECT key FROM _tf_kv WHERE key LIKE 'effect:%'"):
                _, instance_id, index, _ = key.split(":")
                counts[(tenant, instance_id, int(index))] += 1
    return counts


def test_sigkill_the_platform_and_recover(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _run(data, "start")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    before = _committed(data)
    assert len(before) >= 30
    second = _run(data, "recover")
    assert second.returncode == 0, second.stderr[-3000:]
    outputs = json.loads(second.stdout)
    assert outputs == {f"{t}/{i}": 15 for t in TENANTS for i in INSTANCES}
    executions = _executions(data)
    for step in before:
        assert executions[step] == 1, f"committed step {step} ran {executions[step]} times"
    assert all(executions[(t, i, n)] >= 1 for t in TENANTS for i in INSTANCES for n in range(6))
