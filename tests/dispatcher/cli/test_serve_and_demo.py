"""``tenantflow serve`` and ``tenantflow demo`` as real subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import TENANTFLOW, Cli, cli_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [TENANTFLOW, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.communicate()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not become healthy")


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out, err


def test_serve_with_an_operator_token_from_the_environment(tmp_path: Path) -> None:
    env = cli_env("")
    env["TENANTFLOW_OPERATOR_TOKEN"] = "tf_from_env"
    process, url = _serve(tmp_path, env)
    try:
        cli = Cli(url, cli_env(url))
        run = cli("tenants", "create", "acme", "--backend", "restricted", token="tf_from_env")
        assert run.code == 0, run.err
        assert httpx.get(f"{url}/openapi.json").json()["openapi"].startswith("3.")
        assert "tenantflow_instances" in httpx.get(f"{url}/metrics").text
    finally:
        out, err = _stop(process)
    assert process.returncode == 0, err
    assert "operator token from TENANTFLOW_OPERATOR_TOKEN" in out and f"serving on {url}" in out
    assert "Traceback" not in err


def test_serve_generates_and_prints_an_operator_token_once(tmp_path: Path) -> None:
    process, url = _serve(tmp_path, cli_env(""))
    out, _ = _stop(process)
    token = next(line.strip() for line in out.splitlines() if line.strip().startswith("tf_"))
    assert "shown once" in out
    process, url = _serve(tmp_path, cli_env(""))
    try:
        run = Cli(url, cli_env(url))("tenants", "list", "--json", token=token)
        assert run.code == 0 and run.json() == []
    finally:
        out, _ = _stop(process)
    assert token not in out and "created earlier" in out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_runs_and_summarizes(tmp_path: Path) -> None:
    env = cli_env("")
    if "TENANTFLOW_CACHE_DIR" in os.environ:
        env["TENANTFLOW_CACHE_DIR"] = os.environ["TENANTFLOW_CACHE_DIR"]
    began = time.monotonic()
    done = subprocess.run([TENANTFLOW, "demo", "--data-dir", str(tmp_path / "demo")], capture_output=True,
                          text=True, env=env, timeout=170)  # fmt: skip
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Traceback" not in done.stderr
    for expected in ("acme-shop", "globex-finance", "initech-warehouse", "📨 the demo sends 'decision'",
                     "5. Summary", "Cold starts:", "Warm starts:", "Steps:",
                     "✅ demo complete: every instance ended as expected"):  # fmt: skip
        assert expected in out, expected
    assert out.count("Workflow:  ") == 7  # every instance described
    print(f"demo took {elapsed:.1f} s")


def test_demo_json_summary(tmp_path: Path) -> None:
    import json

    done = subprocess.run([TENANTFLOW, "demo", "--json", "--data-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, env=cli_env(""), timeout=170)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] is True and summary["tenants"] == 3 and len(summary["instances"]) == 7
    assert summary["cold_starts"] >= 3 and summary["warm_starts"] >= 1
    assert {i["status"] for i in summary["instances"]} == {"complete", "errored"}
