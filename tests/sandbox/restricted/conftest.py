"""Fixtures for the restricted backend: a small worker pool, bundles, and a fake host."""

from __future__ import annotations

import hashlib
import os
import textwrap
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sandbox import Bundle, HostCallError, Limits
from sandbox._restricted import RestrictedBackend
from tests.sandbox.attacks import CANARY, CANARY_ENV

FAST_LIMITS = Limits(cpu_seconds=2.0, wall_seconds=10.0, memory_bytes=96 * 1024 * 1024)


def make_bundle(source: str, *, extra: dict[str, str] | None = None) -> Bundle:
    """A bundle whose ``main.py`` is ``source``; a body without ``def run`` is wrapped in one."""
    if "def run(" not in source:
        source = "def run(event, step):\n" + textwrap.indent(source, "    ") + "\n"
    files = {"main.py": source.encode()}
    for path, text in (extra or {}).items():
        files[path] = text.encode()
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
    return Bundle(digest=f"sha256:{digest}", files=files)


class FakeHost:
    """An in-memory host: a step journal with the ``_hostcalls`` vocabulary, thread-safe."""

    def __init__(self, *, time_ms: int = 1_700_000_000_000) -> None:
        self.journal: dict[tuple[str, int], Any] = {}
        self.counts: dict[str, int] = {}
        self.calls: list[tuple[str, Any]] = []
        self.time_ms = time_ms
        self.block = threading.Event()
        self.blocked = threading.Event()
        self.suspend_sleeps = True
        self.slept: set[str] = set()
        self.lock = threading.Lock()

    def call(self, name: str, args: Any) -> Any:
        with self.lock:
            self.calls.append((name, args))
        if name == "test.block":
            self.blocked.set()
            self.block.wait(30)
            return None
        if name == "step.do":
            count = self.counts.get(args["name"], 0) + 1
            self.counts[args["name"]] = count
            key = (args["name"], count)
            if key in self.journal:
                return {"action": "cached", "result": self.journal[key], "time": self.time_ms}
            return {
                "action": "run",
                "count": count,
                "attempt": 1,
                "config": args["config"],
                "time": self.time_ms,
            }
        if name == "step.commit":
            self.journal[(args["name"], args["count"])] = args["result"]
            self.time_ms += 1000
            return {"time": self.time_ms}
        if name == "step.fail":
            return {"action": "failed", "error": args["error"], "time": self.time_ms}
        if name == "step.sleep":
            if args["name"] in self.slept or not self.suspend_sleeps:
                return {"action": "continue", "time": self.time_ms}
            self.slept.add(args["name"])
            return {"action": "suspend"}
        if name.startswith("env."):
            raise HostCallError(
                f"binding {name.split('.')[1]!r} is not granted", type_name="BindingNotGranted"
            )
        return {"time": self.time_ms}

    def replay(self) -> None:
        """Start a new invocation of the same instance (counts restart, the journal stays)."""
        self.counts.clear()


def event(
    payload: Any = None, *, instance: str = "inst-1", timestamp: int = 1_700_000_000_000
) -> dict[str, Any]:
    return {"payload": payload, "timestamp": timestamp, "instanceId": instance, "workflowName": "wf"}


@pytest.fixture(autouse=True, scope="session")
def _canary_env() -> None:
    os.environ[CANARY_ENV] = CANARY


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_backend() -> AsyncIterator[RestrictedBackend]:
    """A 2-worker pool shared by the tests of one module (keep tests independent of its state)."""
    os.environ[CANARY_ENV] = CANARY
    backend = RestrictedBackend(pool_size=2)
    await backend.wait_ready()
    yield backend
    await backend.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def backend() -> AsyncIterator[RestrictedBackend]:
    """A private 2-worker pool for tests that kill, recycle or saturate workers.

    Test modules run on a module-scoped event loop (``pytestmark``) shared with ``shared_backend``.
    """
    os.environ[CANARY_ENV] = CANARY
    backend = RestrictedBackend(pool_size=2)
    await backend.wait_ready()
    yield backend
    await backend.aclose()


NOT_PORTABLE = {
    # The restricted policy offers no ``type`` builtin (it builds classes from names at run time).
    "test_step_results_must_be_exact_json[type('D', (dict,), {})(a=1)-dict subclass]",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the shared SDK cases that use what the restricted policy does not offer."""
    for item in items:
        if item.path.name == "test_shared_sdk.py" and item.name in NOT_PORTABLE:
            item.add_marker(
                pytest.mark.skip(reason="uses type(), which the restricted policy does not offer")
            )
