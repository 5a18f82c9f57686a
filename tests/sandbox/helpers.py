"""Helpers for the sandbox tests: a fake journal host and bundle builders.

The dispatcher (the real host) does not exist at this layer, so ``FakeJournal`` emulates just
enough of the engine's journal behind the host-call vocabulary (``sandbox/_hostcalls.py``):
memoized step results keyed by ``(name, count)``, the boundary time of each step, retries,
durable sleeps that suspend once, buffered events, and bindings granted per test.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable
from typing import Any

import sandbox
from sandbox import Bundle, HostCallError

START_MS = 1_700_000_000_000


class FakeJournal:
    """A HostBridge that emulates the engine's journal for one workflow instance."""

    def __init__(self, *, bindings: dict[str, Callable[..., Any]] | None = None) -> None:
        self.results: dict[tuple[str, int], Any] = {}
        self.times: dict[tuple[str, int], int] = {}
        self.attempts: Counter[tuple[str, int]] = Counter()
        self.counts: Counter[str] = Counter()
        self.slept: set[tuple[str, int]] = set()
        self.events: dict[str, list[Any]] = {}
        self.bindings = bindings or {}
        self.granted: set[str] | None = None
        """Answer for ``env.bindings`` (None: refuse it, like a host that does not know the call)."""
        self.now = START_MS
        self.calls: list[tuple[str, Any]] = []
        self.logs: list[Any] = []

    def begin(self) -> None:
        """A new invocation replays from the top: step counts restart."""
        self.counts.clear()

    def _key(self, name: str) -> tuple[str, int]:
        self.counts[name] += 1
        return (name, self.counts[name])

    def call(self, name: str, args: Any) -> Any:
        self.calls.append((name, args))
        if name == "step.do":
            key = self._key(args["name"])
            if key in self.results:
                return {"action": "cached", "result": self.results[key], "time": self.times[key]}
            self.attempts[key] += 1
            return {
                "action": "run",
                "count": key[1],
                "attempt": self.attempts[key],
                "config": args["config"],
                "time": self.now,
            }
        if name == "step.commit":
            key = (args["name"], args["count"])
            self.now += 1000
            self.results[key] = args["result"]
            self.times[key] = self.now
            return {"time": self.now}
        if name == "step.fail":
            key = (args["name"], args["count"])
            self.now += 10
            limit = 0
            for call_name, call_args in self.calls:
                if call_name == "step.do" and call_args["name"] == key[0]:
                    limit = call_args["config"].get("retries", {}).get("limit", 0)
            if args["non_retryable"] or self.attempts[key] > limit:
                return {"action": "failed", "error": args["error"], "time": self.now}
            self.attempts[key] += 1
            return {"action": "retry", "attempt": self.attempts[key], "time": self.now}
        if name in ("step.sleep", "step.sleep_until"):
            key = self._key(args["name"])
            if key in self.slept:
                return {"action": "continue", "time": self.times[key]}
            self.slept.add(key)
            self.now += 60_000
            self.times[key] = self.now
            return {"action": "suspend"}
        if name == "step.wait_for_event":
            key = self._key(args["name"])
            if key in self.results:
                return {"action": "event", "event": self.results[key], "time": self.times[key]}
            queue = self.events.get(args["type"])
            if queue:
                self.results[key] = {"payload": queue.pop(0), "timestamp": self.now, "type": args["type"]}
                self.times[key] = self.now
                return {"action": "event", "event": self.results[key], "time": self.now}
            if args.get("timeout") == 0:
                return {
                    "action": "timeout",
                    "error": {"name": "TimeoutError", "message": "no event"},
                    "time": self.now,
                }
            return {"action": "suspend"}
        if name == "log":
            self.logs.append(args)
            return None
        if name == "env.bindings" and self.granted is not None:
            return sorted(self.granted)
        if name.startswith("env."):
            binding, _, method = name[4:].partition(".")
            handler = self.bindings.get(f"{binding}.{method}")
            if handler is None:
                raise HostCallError(
                    f"binding {binding!r} is not granted to this tenant (grant it in the tenant policy)",
                    type_name="PermissionError",
                )
            return handler(**args)
        raise HostCallError(f"unknown host call {name!r}")

    def event(self, payload: Any = None, instance: str = "wf-1") -> dict[str, Any]:
        return {"payload": payload, "timestamp": START_MS, "instanceId": instance, "workflowName": "test"}


def bundle(
    main: str, digest: str = "sha256:test", files: dict[str, str] | None = None, **modules: str
) -> Bundle:
    """A bundle from source strings: ``main`` is main.py, ``modules`` are ``name.py`` files and
    ``files`` maps any other paths (``pkg/__init__.py``) to sources."""
    contents = {"main.py": textwrap.dedent(main).encode()}
    for name, source in modules.items():
        contents[f"{name}.py"] = textwrap.dedent(source).encode()
    for path, source in (files or {}).items():
        contents[path] = textwrap.dedent(source).encode()
    return Bundle(digest=digest, files=contents)


def run_body(body: str, digest: str = "sha256:test", **modules: str) -> Bundle:
    """A bundle whose ``run(event, step)`` has the given (dedented) body."""
    lines = textwrap.indent(textwrap.dedent(body), "    ")
    return bundle("def run(event, step):\n" + lines, digest, **modules)


async def invoke(sb: sandbox.Sandbox, journal: FakeJournal, payload: Any = None) -> sandbox.InvokeResult:
    journal.begin()
    return await sb.invoke(journal.event(payload), journal)
