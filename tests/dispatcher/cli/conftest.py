"""CLI tests: run the real ``tenantflow`` executable as a subprocess against a live server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sandbox import create_backend

from ..api.live import LiveServer

TENANTFLOW = str(Path(sys.executable).with_name("tenantflow"))
OPERATOR_TOKEN = "tf_test_operator_secret"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    url: str
    env: dict[str, str]

    def __call__(self, *args: str, token: str | None = OPERATOR_TOKEN, timeout: float = 60) -> Run:
        env = dict(self.env)
        if token is not None:
            env["TENANTFLOW_TOKEN"] = token
        done = subprocess.run([TENANTFLOW, *args], capture_output=True, text=True, env=env, timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        return Run(done.returncode, done.stdout, done.stderr)


def cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env["TENANTFLOW_URL"] = url
    env["PYTHONIOENCODING"] = "utf-8"
    if "TENANTFLOW_CACHE_DIR" in os.environ:
        env["TENANTFLOW_CACHE_DIR"] = os.environ["TENANTFLOW_CACHE_DIR"]
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    backend = create_backend("inprocess")
    with LiveServer(
        tmp_path / "data", OPERATOR_TOKEN, backends={"wasm": backend, "restricted": backend}
    ) as live:
        yield live


@pytest.fixture
def cli(server: LiveServer) -> Cli:
    return Cli(server.url, cli_env(server.url))
