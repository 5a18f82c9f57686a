"""Roles as real processes: an API-only ``tenantflow serve --db ... --no-worker`` and separate
``tenantflow worker`` processes sharing one PostgreSQL database, on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dispatcher.cli.conftest import OPERATOR_TOKEN, TENANTFLOW, Cli, cli_env
from tests.dispatcher.cli.test_serve_and_demo import _free_port

from .conftest import PgPrefix

pytestmark = [pytest.mark.postgres]
OPERATOR = OPERATOR_TOKEN

FLOW = """
def run(event, step):
    first = step.do("first", lambda: event["payload"]["n"] + 1)
    step.sleep("nap", "1 second")
    approval = step.wait_for_event("approval", "approved", timeout="1 hour")
    return step.do("last", lambda: first * approval["payload"]["factor"])
"""


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([TENANTFLOW, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def _healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.communicate()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def _status(cli: Cli, instance_id: str) -> dict[str, Any]:
    run = cli("instances", "describe", "orders", instance_id, "--tenant", "shop", "--json")
    assert run.code == 0, run.err
    record: dict[str, Any] = run.json()
    return record


def _waits_for_the_event(record: dict[str, Any]) -> bool:
    return any(step["type"] == "waitForEvent" for step in record["steps"])


def _wait_for(cli: Cli, instance_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        record = _status(cli, instance_id)
        if done(record) or record["status"] == "errored" or time.monotonic() > deadline:
            return record
        time.sleep(0.3)


@pytest.mark.timeout(240)
def test_an_api_only_server_and_two_worker_processes(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    db = ["--db", pg_prefix.dsn, "--schema", pg_prefix.prefix]
    env = cli_env("")
    env["TENANTFLOW_OPERATOR_TOKEN"] = OPERATOR
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    api = _start(["serve", *db, "--no-worker", "--port", str(port), "--data-dir", str(tmp_path / "api")], env)
    workers: list[subprocess.Popen[str]] = []
    try:
        _healthy(url, api)
        cli = Cli(url, cli_env(url))
        assert cli("tenants", "create", "shop", "--backend", "restricted", token=OPERATOR).code == 0
        (tmp_path / "flow.py").write_text(FLOW)
        deployed = cli("deploy", str(tmp_path / "flow.py"), "--workflow", "orders", "--tenant", "shop")
        assert deployed.code == 0, deployed.err
        for n in range(4):
            assert cli("trigger", "orders", f'{{"n": {n}}}', "--id", f"o{n}", "--tenant", "shop").code == 0
        time.sleep(2)
        assert _status(cli, "o0")["status"] == "queued"  # the API process runs nothing
        workers = [
            _start(["worker", *db, "--data-dir", str(tmp_path / f"worker{i}")], cli_env("")) for i in range(2)
        ]
        for n in range(4):
            record = _wait_for(cli, f"o{n}", _waits_for_the_event)
            assert record["status"] == "waiting" and _waits_for_the_event(record), record
        for n in range(4):
            sent = cli(
                "instances", "send-event", "orders", f"o{n}", "approved", '{"factor": 10}', "--tenant", "shop"
            )
            assert sent.code == 0, sent.err
        for n in range(4):
            record = _wait_for(cli, f"o{n}", lambda r: r["status"] == "complete")
            assert record["status"] == "complete" and record["output"] == (n + 1) * 10, record
        metrics = httpx.get(f"{url}/metrics").text
        assert "tenantflow_runs_started_total 0" in metrics and "tenantflow_claims_total 0" in metrics
    finally:
        outputs = [_stop(process) for process in workers]
        api_out, api_err = _stop(api)
    assert "API only" in api_out, api_out + api_err
    assert "Traceback" not in api_err, api_err
    for out, err in outputs:
        assert "Traceback" not in err, err
        assert "tenantflow: worker" in out and "worker stopped after" in out, out + err
    # Both workers took part or one did all of it; together they ran every instance's wake-ups.
    runs = sum(int(out.split("stopped after ")[1].split(" runs")[0]) for out, _ in outputs)
    assert runs >= 8


def test_worker_and_serve_refuse_a_bad_database(tmp_path: Path) -> None:
    env = cli_env("")
    bad = "postgresql://postgres@127.0.0.1:1/test"
    done = subprocess.run([TENANTFLOW, "worker", "--db", bad, "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip
    assert (
        done.returncode == 1 and "cannot use the database" in done.stderr and "Traceback" not in done.stderr
    )
    done = subprocess.run([TENANTFLOW, "serve", "--db", bad, "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "check the DSN" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([TENANTFLOW, "serve", "--no-worker", "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--no-worker needs --db" in done.stderr
    done = subprocess.run([TENANTFLOW, "worker", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--db postgresql://" in done.stderr
