"""Faults: SIGKILL at every phase, a locked database, a full disk, a corrupted artifact blob.

Each SIGKILL case runs ``fault_platform.py`` in a subprocess that kills itself at its phase, then
recovers in a fresh process and checks that nothing was lost or duplicated: every instance
completes with the exact output, every step committed before the kill ran exactly once, the
databases pass ``PRAGMA integrity_check``, and an interrupted upload or alias move either happened
fully or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import OPERATOR, Platform
from engine import FINISHED, EngineConfig, Status
from sandbox import create_backend

from .fault_platform import INSTANCES, TENANTS, source

ROOT = Path(__file__).resolve().parents[2]
FLOW = """
def run(event, step):
    a = step.do("a", lambda: event["payload"] * 2)
    step.sleep("nap", 50)
    return step.do("b", lambda: a + 1)
"""


def _run(data: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.fault_platform", str(data), mode],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _integrity(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path


def _committed(data: Path) -> set[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(data / "engine.db")) as db:
        rows = db.execute(
            "SELECT i.ns, i.id, s.name FROM steps s JOIN instances i ON i.pk = s.instance_pk "
            "WHERE s.type = 'step' AND s.state = 'complete'"
        ).fetchall()
    return {(ns, instance_id, int(name[1:])) for ns, instance_id, name in rows}


def _executions(data: Path) -> Counter[tuple[str, str, int]]:
    counts: Counter[tuple[str, str, int]] = Counter()
    for tenant in TENANTS:
        path = data / "tenants" / f"{tenant}.sqlite3"
        if not path.exists():
            continue
        with contextlib.closing(sqlite3.connect(path)) as db:
            for (key,) in db.execute("SELECT key FROM _tf_kv WHERE key LIKE 'effect:%'"):
                _, instance_id, index, _ = key.split(":")
                counts[(tenant, instance_id, int(index))] += 1
    return counts


def _kill_and_recover(data: Path, phase: str) -> dict[str, Any]:
    first = _run(data, phase)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)
    second = _run(data, "recover")
    assert second.returncode == 0, second.stderr[-3000:]
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)
    report: dict[str, Any] = json.loads(second.stdout)
    return report


@pytest.mark.parametrize("phase", ["mid-step", "after-commit", "claim"])
def test_sigkill_while_running_loses_and_repeats_nothing(tmp_path: Path, phase: str) -> None:
    data = tmp_path / "data"
    first = _run(data, phase)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    committed_before = _committed(data)
    executed_before = _executions(data)
    assert committed_before, "the kill came before any commit"
    if phase == "mid-step":
        assert set(executed_before) - committed_before, "no step was in flight at the kill"
    second = _run(data, "recover")
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout)
    assert report["outputs"] == {f"{t}/{i}": ["complete", 10] for t in TENANTS for i in INSTANCES}
    executions = _executions(data)
    for step in committed_before:
        assert executions[step] == 1, f"{phase}: committed step {step} ran {executions[step]} times"
    for tenant in TENANTS:
        for instance in INSTANCES:
            for n in range(5):
                # An uncommitted step may run again after the crash (at most once more here).
                assert 1 <= executions[(tenant, instance, n)] <= 2, (tenant, instance, n)
    with contextlib.closing(sqlite3.connect(data / "engine.db")) as db:
        duplicates = db.execute(
            "SELECT COUNT(*) FROM (SELECT instance_pk, name, count, COUNT(*) c FROM steps "
            "GROUP BY instance_pk, name, count HAVING c > 1)"
        ).fetchone()[0]
    assert duplicates == 0
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)


def _blobs_consistent(data: Path) -> None:
    with contextlib.closing(sqlite3.connect(data / "artifacts.db")) as db:
        for digest, blob in db.execute("SELECT digest, data FROM blobs"):
            assert hashlib.sha256(blob).hexdigest() == digest
        missing = db.execute(
            "SELECT COUNT(*) FROM bundle_files f LEFT JOIN blobs b ON b.digest = f.blob WHERE b.digest IS NULL"
        ).fetchone()[0]
        orphans = db.execute(
            "SELECT COUNT(*) FROM versions v LEFT JOIN bundles b ON b.digest = v.digest WHERE b.digest IS NULL"
        ).fetchone()[0]
    assert missing == 0 and orphans == 0


async def _run_version(data: Path, ref: str | int, expected: int) -> None:
    async with await Platform.open(data) as platform:
        instance = await platform.create_instance(OPERATOR, "f-wasm", "flow", version=ref)
        done = await platform.engine.wait("f-wasm", instance.id, timeout=60)
        assert done.status == Status.COMPLETE, done.error
        assert (await platform.get_instance(OPERATOR, "f-wasm", "flow", instance.id)).output == expected


async def test_sigkill_during_an_artifact_upload(tmp_path: Path) -> None:
    data = tmp_path / "data"
    report = await asyncio.to_thread(_kill_and_recover, data, "upload")
    assert report["versions"]["f-wasm"] == [1]  # not committed: the version does not exist at all
    assert report["aliases"]["f-wasm"] == {"latest": 1, "production": 1}
    _blobs_consistent(data)
    async with await Platform.open(data) as platform:
        result = await platform.deploy(OPERATOR, "f-wasm", source(2), filename="main.py", workflow="flow")
        assert result.version.number == 2
    _blobs_consistent(data)
    await _run_version(data, "latest", 60)


async def test_sigkill_during_an_alias_move(tmp_path: Path) -> None:
    data = tmp_path / "data"
    report = await asyncio.to_thread(_kill_and_recover, data, "alias")
    assert report["versions"]["f-wasm"] == [1, 2]
    assert report["aliases"]["f-wasm"] == {"latest": 1, "production": 1}
    with contextlib.closing(sqlite3.connect(data / "artifacts.db")) as db:
        history = db.execute(
            "SELECT generation, number FROM alias_history WHERE namespace = 'f-wasm' AND alias = 'production' "
            "ORDER BY generation"
        ).fetchall()
    assert history == [(1, 1)]
    await _run_version(data, "production", 10)
    async with await Platform.open(data) as platform:
        moved = await platform.set_alias(OPERATOR, "f-wasm", "flow", "production", 2)
        assert moved.number == 2
    await _run_version(data, "production", 60)


# -- a busy or locked database ------------------------------------------------------------------


@contextlib.contextmanager
def _write_lock(path: Path) -> Iterator[None]:
    """Another connection holding the write lock of ``path``."""
    db = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


async def _platform(data: Path, **config: Any) -> Platform:
    backend = create_backend("inprocess")
    return await Platform.open(
        data, backends={"wasm": backend, "restricted": backend}, engine_config=EngineConfig(**config)
    )


async def _lock_the_engine_while_running(data: Path) -> list[BaseException]:
    """20 instances running while another connection holds engine.db's write lock for 1 s
    (5x the busy timeout); returns what a create_instance during the lock raised."""
    platform = await _platform(data, busy_timeout_ms=200)
    refused: list[BaseException] = []
    try:
        await platform.create_tenant(OPERATOR, "busy")
        await platform.deploy(OPERATOR, "busy", FLOW.encode(), filename="main.py", workflow="flow")
        await platform.create_instances(OPERATOR, "busy", "flow", [(f"i{n}", n) for n in range(20)])
        with _write_lock(data / "engine.db"):
            try:
                await platform.create_instance(OPERATOR, "busy", "flow", 99, instance_id="during")
            except Exception as exc:
                refused.append(exc)
            await asyncio.sleep(1.0)  # running instances hit the lock too
        await platform.create_instance(OPERATOR, "busy", "flow", 99, instance_id="after")
        await asyncio.sleep(3.0)
    finally:
        await platform.aclose()
    return refused


async def _outcomes(data: Path) -> dict[str, tuple[str, Any]]:
    async with await _platform(data) as platform:
        result = {}
        for instance_id in [*(f"i{n}" for n in range(20)), "after"]:
            done = await platform.engine.wait("busy", instance_id, statuses=FINISHED, timeout=60)
            output = (await platform.get_instance(OPERATOR, "busy", "flow", instance_id)).output
            result[instance_id] = (str(done.status), output)
        return result


async def test_a_locked_engine_database_gives_clean_errors_and_no_corruption(tmp_path: Path) -> None:
    data = tmp_path / "data"
    refused = await _lock_the_engine_while_running(data)
    assert len(refused) == 1 and "locked" in str(refused[0]).lower(), refused
    _integrity(data / "engine.db")
    outcomes = await _outcomes(data)  # a restart resumes whatever was left queued
    assert outcomes["after"] == ("complete", 199)
    for n in range(20):
        status, output = outcomes[f"i{n}"]
        assert status in ("complete", "errored") and (status == "errored" or output == 2 * n + 1)
    _integrity(data / "engine.db")


async def test_a_locked_engine_database_loses_no_work(tmp_path: Path) -> None:
    """Runs interrupted by a locked database are retried in the same process: all finish, exactly."""
    data = tmp_path / "data"
    platform = await _platform(data, busy_timeout_ms=200)
    try:
        await platform.create_tenant(OPERATOR, "busy")
        await platform.deploy(OPERATOR, "busy", FLOW.encode(), filename="main.py", workflow="flow")
        await platform.create_instances(OPERATOR, "busy", "flow", [(f"i{n}", n) for n in range(20)])
        with _write_lock(data / "engine.db"):
            await asyncio.sleep(1.0)  # 5x the busy timeout: journal writes fail meanwhile
        for n in range(20):
            done = await platform.engine.wait("busy", f"i{n}", statuses=FINISHED, timeout=60)
            output = (await platform.get_instance(OPERATOR, "busy", "flow", f"i{n}")).output
            assert (str(done.status), output) == ("complete", 2 * n + 1)
    finally:
        await platform.aclose()
    _integrity(data / "engine.db")


async def test_locked_artifact_and_control_databases_wait_and_succeed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    platform = await _platform(data)
    try:
        await platform.create_tenant(OPERATOR, "busy")

        async def release_later(lock: contextlib.AbstractContextManager[None]) -> None:
            await asyncio.sleep(0.5)
            lock.__exit__(None, None, None)

        lock = _write_lock(data / "artifacts.db")
        lock.__enter__()
        releaser = asyncio.create_task(release_later(lock))
        result = await platform.deploy(OPERATOR, "busy", FLOW.encode(), filename="main.py", workflow="flow")
        await releaser
        assert result.version.number == 1
        lock = _write_lock(data / "control.db")
        lock.__enter__()
        releaser = asyncio.create_task(release_later(lock))
        await platform.create_tenant(OPERATOR, "busy-2")
        await releaser
        await platform.create_instance(OPERATOR, "busy", "flow", 4, instance_id="x")
        assert (await platform.engine.wait("busy", "x", timeout=30)).status == Status.COMPLETE
    finally:
        await platform.aclose()
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)


# -- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root to mount; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


async def test_a_full_disk_gives_clean_errors_and_recovers(tiny_disk: Path) -> None:
    data = tiny_disk / "data"
    platform = await _platform(data)
    try:
        await platform.create_tenant(OPERATOR, "full")
        await platform.deploy(OPERATOR, "full", FLOW.encode(), filename="main.py", workflow="flow")
        await platform.create_instances(OPERATOR, "full", "flow", [(f"i{n}", n) for n in range(10)])
        filler = _fill(tiny_disk)
        errors: list[BaseException] = []
        big = "x" * 200_000
        for n in range(20):
            try:
                await platform.create_instance(OPERATOR, "full", "flow", {"pad": big}, instance_id=f"f{n}")
            except Exception as exc:
                errors.append(exc)
        try:
            await platform.deploy(OPERATOR, "full", (FLOW + f"# {big}\n").encode(), filename="main.py",
                                  workflow="flow")  # fmt: skip
        except Exception as exc:
            errors.append(exc)
        assert errors, "the disk never filled up"
        for exc in errors:
            assert "full" in str(exc).lower() or "space" in str(exc).lower(), repr(exc)
        await asyncio.sleep(0.5)
        filler.unlink()
    finally:
        await platform.aclose()
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)
    # Space is back. A restart resumes what was left queued (see the locked-database xfail: the
    # engine does not retry failed journal writes in-process); new work succeeds.
    platform = await _platform(data)
    try:
        await platform.create_instance(OPERATOR, "full", "flow", 50, instance_id="after")
        for instance_id, n in [*((f"i{n}", n) for n in range(10)), ("after", 50)]:
            done = await platform.engine.wait("full", instance_id, statuses=FINISHED, timeout=60)
            if instance_id == "after" or done.status == Status.COMPLETE:
                assert done.status == Status.COMPLETE, (instance_id, done.error)
                assert (
                    await platform.get_instance(OPERATOR, "full", "flow", instance_id)
                ).output == 2 * n + 1
        result = await platform.deploy(OPERATOR, "full", (FLOW + "# v2\n").encode(), filename="main.py",
                                       workflow="flow")  # fmt: skip
        assert result.version.number == 2
    finally:
        await platform.aclose()
    for name in ("engine.db", "artifacts.db", "control.db"):
        _integrity(data / name)


# -- a corrupted artifact blob --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["wasm", "restricted"])
async def test_a_corrupted_blob_is_never_executed(tmp_path: Path, backend: str) -> None:
    data = tmp_path / "data"
    marker = "tf-corrupt-" + hashlib.sha256(backend.encode()).hexdigest()[:12]
    code = (
        f"def run(event, step):\n    print('tenant code ran')\n    return step.do('s', lambda: '{marker}A')\n"
    )
    async with await Platform.open(data) as platform:
        await platform.create_tenant(OPERATOR, "c", policy={"backend": backend})
        await platform.deploy(OPERATOR, "c", code.encode(), filename="main.py", workflow="flow")
        await platform.create_instance(OPERATOR, "c", "flow", instance_id="before")
        assert (await platform.engine.wait("c", "before", timeout=60)).status == Status.COMPLETE
    # Flip one byte of the stored source in the database file itself: 'A' becomes 'B'.
    flipped = 0
    for path in (data / "artifacts.db", data / "artifacts.db-wal"):
        if path.exists():
            raw = bytearray(path.read_bytes())
            at = raw.find(f"{marker}A".encode())
            while at >= 0:
                raw[at + len(marker)] ^= 0x03
                flipped += 1
                at = raw.find(f"{marker}A".encode(), at + 1)
            path.write_bytes(bytes(raw))
    assert flipped >= 1
    async with await Platform.open(data) as platform:
        await platform.create_instance(OPERATOR, "c", "flow", instance_id="after")
        done = await platform.engine.wait("c", "after", timeout=60)
        record = await platform.describe_instance(OPERATOR, "c", "flow", "after")
        assert f"{marker}B" not in json.dumps(record), "the corrupted code ran"
        assert done.status == Status.ERRORED, record
        assert done.error is not None and done.error.name == "CorruptBlobError", done.error
        assert record["logs"] == [] and record["steps"] == []
        assert platform.executor.invocations == 0  # no tenant code was invoked
