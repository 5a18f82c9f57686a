"""The step bridge: the guest's host calls, for one invocation of one instance.

Step operations become journal operations of that instance only (the journal is bound to it; no
argument can name another instance). Results are wrapped in the instance's envelope before the
engine stores them and unwrapped before the guest sees them. Host calls arrive on the sandbox's
thread. ``step.do``, ``step.commit`` and ``step.fail`` are answered right there (the journal's
bookkeeping is in memory, and the store takes the commit from any thread); sleeps and events read
the store through the event loop, so for those ``call`` hops there and waits.

Whatever goes wrong, the guest only ever gets a JSON answer or a ``HostCallError``: the engine's
control-flow signals (``Suspend``, ``RunAborted``) and fatal errors become ``{"action": "suspend"}``
(the journal remembers the real reason and the engine acts on it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from engine import (
    EngineError,
    EngineValidationError,
    ErrorInfo,
    EventTimeoutError,
    Journal,
    NonDeterminismError,
    RunAborted,
    StepCached,
    StepDecision,
    StepFailure,
    StepRun,
    Suspend,
)
from sandbox import JSON, HostCallError
from sandbox._protocol import run_on_loop

from ._envelope import Route, unwrap, wrap
from ._errors import EnvelopeError
from ._logs import InstanceLogs

log = logging.getLogger(__name__)

SUSPEND: dict[str, Any] = {"action": "suspend"}
ENV_BINDINGS = "env.bindings"
"""Host call answering the names of the bindings granted to the tenant (so ``env`` shows only those)."""


class Bindings(Protocol):
    """The tenant's bindings (``dispatcher._bindings.TenantBindings``)."""

    def call(self, name: str, args: JSON) -> JSON: ...


class StepBridge:
    """``HostBridge`` for one invocation (see the module docstring)."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        journal: Journal,
        route: Route,
        bindings: Bindings | None,
        granted: frozenset[str] = frozenset(),
        logs: InstanceLogs,
        log_key: tuple[str, str],
    ) -> None:
        self._loop = loop
        self._journal = journal
        self._route = route
        self._bindings = bindings
        self._granted = sorted(granted)
        self._logs = logs
        self._log_key = log_key
        self._in_flight: tuple[str, int] | None = None
        self._stopped = False
        self.fatal: ErrorInfo | None = None
        """An error that must fail the instance (e.g. a corrupted envelope in the journal)."""
        self.step_calls = 0

    # -- HostBridge ----------------------------------------------------------------------------

    def call(self, name: str, args: JSON) -> JSON:
        if name.startswith("step."):
            self.step_calls += 1
            if self._stopped:
                return SUSPEND
            if not isinstance(args, dict):
                raise HostCallError(f"{name} expects a JSON object", type_name="TypeError")
            here = _ON_GUEST_THREAD.get(name)
            if here is not None:
                try:
                    return here(self, args)
                except _SETTLED as exc:
                    return self._settled(exc)
            return run_on_loop(self._on_loop(name, args), self._loop)
        if name == "log":
            if not isinstance(args, dict):
                raise HostCallError("log expects {level, message}", type_name="TypeError")
            self._logs.append(self._log_key, str(args.get("level", "info")), str(args.get("message", "")))
            return None
        if name == ENV_BINDINGS:
            return self._granted
        if name.startswith("env."):
            if self._bindings is None:
                binding = name.split(".")[1] if name.count(".") else name
                raise HostCallError(
                    f"binding {binding!r} is not granted to this tenant; an operator can grant it in the tenant "
                    "policy",
                    type_name="BindingNotGranted",
                )
            return self._bindings.call(name, args)
        raise HostCallError(f"unknown host call {name!r}", type_name="HostError")

    # -- step operations answered on the guest's thread ------------------------------------------
    # Beginning a step is bookkeeping in memory and committing one is a write the store can take
    # from any thread (``Journal.finish_attempt_blocking``): neither needs the event loop, and the
    # two hand-offs through it used to cost more than the rest of a step.

    def _do(self, args: dict[str, Any]) -> JSON:
        name = _text(args, "name")
        return self._decision(self._journal.begin_step(name, args.get("config") or None), name)

    def _commit(self, args: dict[str, Any]) -> JSON:
        journal = self._journal
        self._check_in_flight(args)
        decision = journal.finish_attempt_blocking(result=wrap(self._route, args.get("result")))
        self._in_flight = None
        if isinstance(decision, StepCached):
            return {"time": journal.boundary_time}
        journal.yield_now()  # a late result became a failure: replay decides what comes next

    def _fail(self, args: dict[str, Any]) -> JSON:
        journal = self._journal
        self._check_in_flight(args)
        error = args.get("error")
        if not isinstance(error, dict):
            raise HostCallError("step.fail expects error: {name, message}", type_name="TypeError")
        info = ErrorInfo(str(error.get("name", "Error"))[:200], str(error.get("message", ""))[:4096])
        decision = journal.finish_attempt_blocking(
            error=info, non_retryable=args.get("non_retryable") is True
        )
        if isinstance(decision, StepRun):
            return {"action": "retry", "attempt": decision.attempt, "time": journal.boundary_time}
        self._in_flight = None
        if isinstance(decision, StepFailure):
            return {"action": "failed", "error": decision.error.to_json(), "time": journal.boundary_time}
        raise HostCallError("a failed attempt cannot commit a result", type_name="StepError")

    # -- step operations on the event loop (timers and events: rare, and they read the store) ----

    async def _on_loop(self, name: str, args: dict[str, Any]) -> JSON:
        journal = self._journal
        try:
            if name == "step.sleep":
                await journal.sleep(_text(args, "name"), args.get("duration"))
                return {"action": "continue", "time": journal.boundary_time}
            if name == "step.sleep_until":
                await journal.sleep_until(_text(args, "name"), args.get("until"))
                return {"action": "continue", "time": journal.boundary_time}
            if name == "step.wait_for_event":
                event = await journal.wait_for_event(
                    _text(args, "name"), _text(args, "type"), timeout=args.get("timeout")
                )
                payload = self._unwrap(event["payload"], "event payload")
                return {
                    "action": "event",
                    "event": {**event, "payload": payload},
                    "time": journal.boundary_time,
                }
        except _SETTLED as exc:
            return self._settled(exc)
        raise HostCallError(f"unknown step operation {name!r}", type_name="HostError")

    def _settled(self, exc: BaseException) -> JSON:
        """What the guest gets for an engine signal or error (see the module docstring)."""
        if isinstance(exc, EventTimeoutError):
            return {"action": "timeout", "error": {"name": "EventTimeoutError", "message": str(exc)},
                    "time": self._journal.boundary_time}  # fmt: skip
        if isinstance(exc, EnvelopeError):
            self.fatal = ErrorInfo("EnvelopeError", str(exc))
        elif isinstance(exc, EngineValidationError):
            raise HostCallError(str(exc), type_name="ValueError") from None
        elif not isinstance(exc, Suspend | RunAborted | NonDeterminismError):
            raise HostCallError(str(exc), type_name="StepError") from None
        self._stopped = True
        return SUSPEND

    def _decision(self, decision: StepDecision, name: str) -> JSON:
        time = self._journal.boundary_time
        if isinstance(decision, StepCached):
            return {"action": "cached", "result": self._unwrap(decision.result, "step result"), "time": time}
        if isinstance(decision, StepFailure):
            return {"action": "failed", "error": decision.error.to_json(), "time": time}
        self._in_flight = (name, decision.count)
        return {"action": "run", "count": decision.count, "attempt": decision.attempt,
                "config": decision.config.to_json(), "time": time}  # fmt: skip

    def _check_in_flight(self, args: dict[str, Any]) -> None:
        if self._in_flight is None or (args.get("name"), args.get("count")) != self._in_flight:
            raise HostCallError(
                f"no step {args.get('name')!r} (count {args.get('count')!r}) is running",
                type_name="StepError",
            )

    def _unwrap(self, value: Any, what: str) -> Any:
        return unwrap(value, expect=self._route, what=what)[1]


def _text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise HostCallError(f"{key} must be a string, got {type(value).__name__}", type_name="TypeError")
    return value


_ON_GUEST_THREAD = {
    "step.do": StepBridge._do,
    "step.commit": StepBridge._commit,
    "step.fail": StepBridge._fail,
}
# Order matters: EventTimeoutError and NonDeterminismError are EngineErrors with answers of their own.
_SETTLED = (EventTimeoutError, Suspend, RunAborted, NonDeterminismError, EnvelopeError, EngineError)
