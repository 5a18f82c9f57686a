"""One wasm sandbox: a Store plus an instance of the runner with one tenant version loaded.

Every check lives here, on the host: host-call counts and sizes, the CPU and wall deadlines (the
epoch deadline is re-armed after slow host calls so host time does not count as guest CPU), the
authoritative suspension record, and the translation of traps and guest outcomes into
``sandbox`` errors. After a trap or a memory-limit hit the Store is discarded: the sandbox is dead.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as wasmtime_ffi

from .._errors import (
    LimitExceededError,
    LimitName,
    SandboxClosedError,
    SandboxCrashError,
    SandboxError,
    TenantError,
)
from .._hostcalls import STEP_CALLS
from .._limits import Limits
from .._protocol import JSON, HostBridge, HostCallError, InvokeResult
from ._ffi import call_export
from ._ticker import TICK_SECONDS, ticks_for

if TYPE_CHECKING:
    from ._backend import WasmBackend

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
_SUSPEND = '{"action":"suspend"}'
_MAX_TEXT = 64 * 1024
_set_deadline = wasmtime_ffi.wasmtime_context_set_epoch_deadline


class Invocation:
    """Host-side state of one call into the guest; its ``handle`` serves the guest's host calls."""

    __slots__ = (
        "bridge",
        "calls",
        "crash",
        "host_seconds",
        "limit_hit",
        "limit_message",
        "limits",
        "max_args",
        "started",
        "stopped",
        "suspended",
    )

    def __init__(self, bridge: HostBridge | None, limits: Limits) -> None:
        self.bridge = bridge
        self.limits = limits
        self.calls = 0
        self.max_args = limits.result_bytes + _MAX_TEXT
        self.suspended = False
        self.limit_hit: LimitName | None = None
        self.limit_message = ""
        self.crash: BaseException | None = None
        self.host_seconds = 0.0
        self.stopped = False
        self.started = time.perf_counter()

    def deadline_ticks(self) -> int:
        """Ticks left before the CPU or wall limit, counting host-call time as wall time only."""
        elapsed = time.perf_counter() - self.started
        cpu_left = self.limits.cpu_seconds - (elapsed - self.host_seconds)
        wall_left = self.limits.wall_seconds - elapsed
        return ticks_for(max(0.0, min(cpu_left, wall_left)))

    def interrupted_limit(self) -> LimitName:
        elapsed = time.perf_counter() - self.started
        return "wall" if elapsed >= self.limits.wall_seconds - 2 * TICK_SECONDS else "cpu"

    def _stop(self, limit: LimitName, message: str) -> tuple[bool, str]:
        self.limit_hit = limit
        self.limit_message = message
        return False, "A" + limit

    def handle(self, name: str, payload: str, ctx: Any) -> tuple[bool, str]:
        """Serve one host call. Never raises: every failure becomes an error answer."""
        try:
            if self.limit_hit is not None or self.crash is not None or self.stopped:
                return False, "Astopped"
            if time.perf_counter() - self.started > self.limits.wall_seconds:
                return self._stop("wall", f"the invocation ran longer than {self.limits.wall_seconds} s")
            self.calls += 1
            if self.calls > self.limits.host_calls:
                return self._stop("host_calls", f"more than {self.limits.host_calls} host calls")
            if len(payload) > self.max_args:
                return self._stop(
                    "result_size", f"a host call argument exceeds {self.limits.result_bytes} bytes"
                )
            if self.bridge is None:
                return False, "ERuntimeError\nsteps and bindings are not available while the bundle loads"
            if self.suspended and name in STEP_CALLS:
                return True, _SUSPEND
            try:
                args = _loads(payload)
            except (ValueError, RecursionError):
                return False, "EValueError\nmalformed host call arguments"
            begin = time.perf_counter()
            try:
                answer = self.bridge.call(name, args)
            finally:
                spent = time.perf_counter() - begin
                self.host_seconds += spent
                if spent > TICK_SECONDS:
                    _set_deadline(ctx, self.deadline_ticks())
            if self.stopped:
                return False, "Astopped"
            if name in STEP_CALLS and type(answer) is dict and answer.get("action") == "suspend":
                self.suspended = True
            return True, _dumps(answer)
        except HostCallError as exc:
            return False, f"E{exc.type_name}\n{exc.message}"
        except BaseException as exc:
            self.crash = exc
            return False, "Ahost"


class WasmSandbox:
    """A loaded tenant version in its own Store. Serves one invocation at a time."""

    def __init__(
        self, backend: WasmBackend, store: Any, invoke_func: Any, limits: Limits, digest: str
    ) -> None:
        self._backend = backend
        self._store: Any = store
        self._invoke = invoke_func
        self._limits = limits
        self._digest = digest
        self._lock = asyncio.Lock()
        self._dead_reason = ""
        self._abandoned = False
        self._running = False
        self._state_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<WasmSandbox {self._digest[:19]} {state}>"

    @property
    def alive(self) -> bool:
        return self._store is not None and not self._abandoned

    async def invoke(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        try:
            event_json = _dumps(event)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the event must be JSON: {exc}") from exc
        async with self._lock:
            if not self.alive:
                raise SandboxClosedError(f"this sandbox was discarded ({self._dead_reason or 'closed'})")
            loop = asyncio.get_running_loop()
            inv = Invocation(bridge, self._limits)
            try:
                future = self._backend.threads.submit(loop, self._invoke_sync, event_json, inv)
            except RuntimeError:
                raise SandboxClosedError("the wasm backend is closed") from None
            # The epoch deadline stops a running guest; this backstop covers a host call that
            # never returns. Either way the worker may still be inside the guest: abandon it.
            timer = loop.call_later(self._limits.wall_seconds + 1.0, future.cancel)
            try:
                return await future
            except asyncio.CancelledError:
                self._abandon(inv)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                raise LimitExceededError(
                    "wall", f"the invocation ran longer than {self._limits.wall_seconds} s"
                ) from None
            finally:
                timer.cancel()

    def _abandon(self, inv: Invocation) -> None:
        """Give up on a running invocation; its worker closes the Store when it comes back."""
        inv.stopped = True
        with self._state_lock:
            self._abandoned = True
            self._dead_reason = "abandoned after the wall limit or a cancellation"
            if not self._running:
                self._discard(self._dead_reason)

    def _invoke_sync(self, event_json: str, inv: Invocation) -> InvokeResult:
        with self._state_lock:
            store = self._store
            if store is None or self._abandoned:
                raise SandboxClosedError("this sandbox was discarded")
            self._running = True
        local = self._backend.local
        previous = getattr(local, "handler", None)
        local.handler = inv.handle
        inv.started = time.perf_counter()
        store.set_epoch_deadline(inv.deadline_ticks())
        try:
            text = call_export(store, self._invoke, event_json)
        except WasmtimeError as exc:
            self._discard("trapped")
            raise translate_trap(exc, inv) from None
        finally:
            local.handler = previous
            with self._state_lock:
                self._running = False
                if self._abandoned:
                    self._discard(self._dead_reason)
        guest_ms = (time.perf_counter() - inv.started - inv.host_seconds) * 1000.0
        return self._outcome(text, inv, guest_ms)

    def _outcome(self, text: str, inv: Invocation, guest_ms: float) -> InvokeResult:
        limits = self._limits
        if inv.crash is not None:
            raise SandboxCrashError("the host bridge failed while serving a host call") from inv.crash
        if inv.limit_hit is not None:
            raise LimitExceededError(inv.limit_hit, inv.limit_message)
        try:
            outcome = _loads(text)
            status = outcome["status"]
        except (ValueError, KeyError, TypeError, RecursionError):
            self._discard("malformed outcome")
            raise SandboxCrashError("the runner returned a malformed outcome") from None
        stdout = outcome.get("stdout")
        stdout = stdout if type(stdout) is str else ""
        truncated = outcome.get("stdout_truncated") is True
        if len(stdout) > limits.output_bytes + 128:  # host-side backstop of the guest's cap
            stdout, truncated = stdout[: limits.output_bytes] + "\n[tenantflow: output truncated]\n", True
        stats = {"guest_ms": guest_ms, "host_ms": inv.host_seconds * 1000.0}
        if inv.suspended:
            return InvokeResult(None, stdout, truncated, inv.calls, stats, suspended=True)
        if status == "ok":
            output = outcome.get("output")
            if len(text) > limits.result_bytes and len(_dumps(output).encode()) > limits.result_bytes:
                raise LimitExceededError("result_size", f"run() output exceeds {limits.result_bytes} bytes")
            return InvokeResult(output, stdout, truncated, inv.calls, stats)
        if status == "error":
            error = outcome.get("error") or {}
            raise TenantError(
                _text(error.get("type"), "Exception"),
                _text(error.get("message"), ""),
                _text(error.get("traceback"), ""),
            )
        if status == "limit":
            limit = outcome.get("limit")
            if limit == "memory":
                self._discard("memory limit")
                raise LimitExceededError(
                    "memory", f"the guest reached its {limits.memory_bytes} byte memory cap"
                )
            if limit == "result_size":
                raise LimitExceededError("result_size", _text(outcome.get("message"), "result too large"))
        if status == "suspended":
            # The guest claims a suspension the host never answered: treat it as a tenant bug.
            raise TenantError("RuntimeError", "the workflow suspended without a suspend answer from the host")
        self._discard("unexpected outcome")
        raise SandboxCrashError(f"the runner reported an unexpected outcome {str(status)[:40]!r}")

    def _discard(self, reason: str) -> None:
        store, self._store = self._store, None
        self._dead_reason = reason
        if store is not None:
            self._backend.release(store)

    async def __aenter__(self) -> WasmSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            with self._state_lock:
                if not self._running:  # a running (abandoned) worker closes the Store itself
                    self._discard("closed")


def _text(value: object, default: str) -> str:
    return value[:_MAX_TEXT] if isinstance(value, str) else default


def translate_trap(exc: WasmtimeError, inv: Invocation | None) -> SandboxError:
    """Classify a wasmtime trap into a ``sandbox`` error (no wasmtime text beyond a short reason)."""
    message = str(exc)
    if inv is not None and inv.crash is not None:
        return SandboxCrashError("the host bridge failed while serving a host call")
    if "interrupt" in message:
        limit = inv.interrupted_limit() if inv is not None else "cpu"
        if limit == "wall" and inv is not None:
            return LimitExceededError("wall", f"the invocation ran longer than {inv.limits.wall_seconds} s")
        seconds = inv.limits.cpu_seconds if inv is not None else 0
        return LimitExceededError("cpu", f"the invocation used more than {seconds} s of guest CPU time")
    if "call stack exhausted" in message or "stack overflow" in message:
        return LimitExceededError("recursion", "the guest exhausted its call stack (recursion too deep)")
    if "unreachable" in message:
        return SandboxCrashError(
            "the guest interpreter aborted (os.abort, a fatal error, or memory exhausted in a critical spot)"
        )
    if "exit status" in message:
        return SandboxCrashError("the guest exited its interpreter (os._exit)")
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown trap"
    return SandboxCrashError(f"the guest trapped: {first_line[:200]}")
