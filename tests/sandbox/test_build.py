"""The runner build cache: keys, sidecar verification, one build under concurrent first uses."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox._wasm import _build


def _fake_componentize(calls: list[float], delay: float = 0.2) -> Callable[[Path, Path], None]:
    def build(out: Path, work: Path) -> None:
        calls.append(time.monotonic())
        with out.open("wb") as handle:
            for _ in range(10):  # written slowly: a reader must never see a partial file
                handle.write(b"\0asm" * 1000)
                handle.flush()
                time.sleep(delay / 10)

    return build


def test_concurrent_first_uses_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(_build, "_componentize", _fake_componentize(calls))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(_build.ensure_runner_wasm(tmp_path))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1
    built = results[0]
    assert built.read_bytes() == b"\0asm" * 10_000
    assert _build.verified(built)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]  # temp dirs cleaned


def test_a_tampered_artifact_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(_build, "_componentize", _fake_componentize(calls, delay=0))
    built = _build.ensure_runner_wasm(tmp_path)
    built.write_bytes(b"evil")
    assert not _build.verified(built)
    again = _build.ensure_runner_wasm(tmp_path)
    assert again == built and len(calls) == 2 and _build.verified(again)


def test_verification_rules(tmp_path: Path) -> None:
    artifact = tmp_path / "x.cwasm"
    assert not _build.verified(artifact)  # missing
    artifact.write_bytes(b"code")
    assert not _build.verified(artifact)  # no sidecar
    tmp = tmp_path / "x.tmp"
    tmp.write_bytes(b"code")
    _build.publish(tmp, artifact)
    assert _build.verified(artifact)
    os.chmod(artifact, 0o666)
    assert not _build.verified(artifact)  # writable by others: not trusted
    os.chmod(artifact, 0o644)
    (tmp_path / "x.cwasm.sha256").write_text("0" * 64)
    assert not _build.verified(artifact)  # hash mismatch


def test_the_key_covers_sources_and_tool_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = _build.runner_key()
    assert key == _build.runner_key()
    assert {p.name for p in _build.runner_sources()} >= {
        "_tenantflow_sdk.py",
        "_tenantflow_runner.py",
        "_tenantflow_preload.py",
        "runner.wit",
    }
    monkeypatch.setattr(_build, "tool_version", lambda dist: "9.9.9")
    assert _build.runner_key() != key


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_CACHE_DIR", str(tmp_path))
    assert _build.cache_dir() == tmp_path / "wasm"
    monkeypatch.delenv("TENANTFLOW_CACHE_DIR")
    assert _build.cache_dir() == Path.home() / ".cache" / "tenantflow" / "wasm"


def test_build_failures_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(out: Path, work: Path) -> None:
        raise RuntimeError("building the wasm runner with componentize-py failed:\nboom")

    monkeypatch.setattr(_build, "_componentize", broken)
    with pytest.raises(RuntimeError, match="componentize-py failed"):
        _build.ensure_runner_wasm(tmp_path)
    assert not list(tmp_path.glob("runner-*.wasm"))


def test_old_builds_are_pruned(tmp_path: Path) -> None:
    old = tmp_path / "runner-old.wasm"
    recent = tmp_path / "runner-recent.wasm"
    current = tmp_path / "runner-current.wasm"
    for path in (old, recent, current):
        path.write_bytes(b"x")
    long_ago = time.time() - 3 * 24 * 3600
    os.utime(old, (long_ago, long_ago))
    os.utime(current, (long_ago, long_ago))
    _build.prune(tmp_path, keep="runner-current")
    assert not old.exists() and recent.exists() and current.exists()
