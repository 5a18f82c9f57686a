"""The journal handle: how an executor performs durable steps for one run of one instance.

Replay model: every run starts at position 0. Each step operation takes the next position; if the
journal already holds an entry there it must be the same kind of step with the same name (else a
``NonDeterminismError`` fails the instance) and its recorded outcome is returned without running
anything. Past the end of the journal, steps run for real and are appended, each committed
durably before the operation returns.

Two levels of API:

- ``do``, ``sleep``, ``sleep_until``, ``wait_for_event``: for executors that run step callbacks
  in-process (the engine's own tests, benchmarks).
- ``begin_step`` / ``finish_attempt``: for executors whose callbacks run elsewhere (a sandbox):
  the guest asks to begin, runs the callback itself, then reports the result or the error and
  gets the decision (committed, retry now, failed for good) back. ``begin_step`` does no I/O and
  ``finish_attempt_blocking`` writes through the store from the calling thread, so a sandbox's
  thread can drive a step without a hop through the event loop (one thread at a time per run).

When a run must stop (a timer, an event, a retry delay, a pause request) the operation raises
``Suspend``; the journal remembers why, and the engine trusts the journal, not the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from ._clock import Clock
from ._durations import parse_duration
from ._errors import (
    EngineError,
    EngineValidationError,
    EventTimeoutError,
    NonDeterminismError,
    NonRetryableError,
    RunAborted,
    StepFailedError,
    Suspend,
)
from ._model import EngineConfig, ErrorInfo, Instance, StepConfig, iso_ms
from ._store import EngineStore, StaleRunError, StepEntry, StepType
from ._validation import encode_payload, validate_id, validate_step_name


@dataclass(frozen=True, slots=True)
class StepCached:
    """The step has a committed result: use it (the callback must not run)."""

    result: Any


@dataclass(frozen=True, slots=True)
class StepRun:
    """Run the callback now (attempt ``attempt``), then call ``finish_attempt``."""

    count: int
    attempt: int
    config: StepConfig


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The step failed for good; ``do`` raises ``StepFailedError``."""

    error: ErrorInfo


StepDecision = StepCached | StepRun | StepFailure


def _to_epoch_ms(when: object) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise EngineValidationError(
                "sleep_until", "a datetime must be timezone-aware (e.g. datetime.now(UTC))"
            )
        return int(when.timestamp() * 1000)
    if isinstance(when, str):
        try:
            parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise EngineValidationError("sleep_until", f"{when!r} is not an ISO-8601 time") from None
        return _to_epoch_ms(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise EngineValidationError(
            "sleep_until", f"must be epoch milliseconds, an ISO time or a datetime: {when!r}"
        )
    return int(when)


def _accepts_context(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` has a required positional parameter (or ``*args``) to receive the step context.

    Parameters with defaults do not count: ``lambda i=i: ...`` is the idiom for capturing a loop value.
    """
    code = getattr(fn, "__code__", None)
    if code is not None and not inspect.ismethod(fn):
        required = code.co_argcount - len(getattr(fn, "__defaults__", None) or ())
        return bool(required > 0 or code.co_flags & inspect.CO_VARARGS)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind == p.VAR_POSITIONAL
        or (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
        for p in params
    )


class Journal:
    """One run's view of an instance's journal. Created by the engine; not shared between runs."""

    def __init__(
        self,
        *,
        store: EngineStore,
        config: EngineConfig,
        clock: Clock,
        pk: int,
        instance: Instance,
        entries: list[StepEntry],
    ) -> None:
        self._store = store
        self._loop = asyncio.get_running_loop()
        self._config = config
        self._clock = clock
        self._pk = pk
        self.instance = instance
        self._entries = entries
        self._position = 0
        self._counts: dict[str, int] = {}
        self._steps = sum(1 for e in entries if e.type == "step")
        self._boundary = instance.created_at
        self._in_flight: tuple[StepEntry, int, StepConfig] | None = None
        self.suspension: tuple[int, str | None] | None = None
        """Why the run stopped: (wake-up time, awaited event type); 0 means ready again at once."""
        self.fatal: EngineError | None = None
        """An error that fails the instance whatever the workflow does with it."""
        self.aborted = False
        self.pause_requested = False
        self.steps_committed = 0
        """Step results this run committed (for metrics)."""
        self.store_error: Exception | None = None
        """A storage failure (locked or full database) that interrupted this run; the engine retries it."""

    # -- what the executor may read ------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        return self.instance.id

    @property
    def params(self) -> Any:
        return self.instance.params

    @property
    def position(self) -> int:
        """How many step operations this run has performed."""
        return self._position

    @property
    def boundary_time(self) -> int:
        """Epoch ms recorded at the latest step boundary reached (creation time before the first).

        It is the same on every replay: deterministic workflow code may read it as "now".
        """
        return self._boundary

    def request_abort(self) -> None:
        self.aborted = True

    def pause_now(self) -> NoReturn:
        """Stop this run and pause the instance (e.g. because its owner was suspended)."""
        self.pause_requested = True
        self._suspend(0)

    def yield_now(self) -> NoReturn:
        """Stop this run and queue the instance to run again at once (it replays from the top)."""
        self._suspend(0)

    # -- low-level step API --------------------------------------------------------------------

    def begin_step(self, name: str, config: StepConfig | dict[str, Any] | None = None) -> StepDecision:
        """Start (or replay) ``step.do(name)``. See the module docstring.

        It does no I/O, so it is a plain call, safe on the thread of the guest that owns this run.
        """
        parsed = None if config is None else StepConfig.parse(config)
        seq, count, entry = self._enter("step", name)
        now = self._clock.now_ms()
        if entry is not None:
            if entry.state == "complete":
                self._boundary = entry.end_at or self._boundary
                return StepCached(None if entry.output is None else json.loads(entry.output))
            if entry.state == "failed":
                self._boundary = entry.end_at or self._boundary
                return StepFailure(ErrorInfo(entry.error_name or "Error", entry.error_message or ""))
            cfg = (
                StepConfig.parse(json.loads(entry.config))
                if entry.config
                else self._config.default_step_config
            )
            if entry.wake_at is not None and entry.wake_at > now:
                self._suspend(entry.wake_at)
            attempt = len(entry.attempts) + 1
        else:
            if self._steps >= self._config.max_steps:
                self._fail_fatally(
                    EngineValidationError(
                        "steps", f"the instance reached the limit of {self._config.max_steps} steps"
                    )
                )
            cfg = parsed or self._config.default_step_config
            entry = StepEntry(seq, "step", name, count, "running", start_at=now, config=_config_text(cfg))
            self._entries.append(entry)
            self._steps += 1
            attempt = 1
        self._in_flight = (entry, now, cfg)
        return StepRun(count, attempt, cfg)

    async def finish_attempt(
        self, *, result: Any = None, error: ErrorInfo | None = None, non_retryable: bool = False
    ) -> StepDecision:
        """Report the outcome of the attempt ``begin_step`` (or a retry) asked for.

        Success commits the result durably and returns ``StepCached``. A failure returns ``StepRun``
        (retry at once), ``StepFailure`` (no retries left), or raises ``Suspend`` (retry later).
        """
        entry, then = self._settle_attempt(result, error, non_retryable)
        await self._save(entry)
        return then()

    def finish_attempt_blocking(
        self, *, result: Any = None, error: ErrorInfo | None = None, non_retryable: bool = False
    ) -> StepDecision:
        """``finish_attempt`` for the thread of the guest that owns this run: blocks until committed.

        A sandboxed guest waits for the answer anyway; writing from its thread (``save_step_blocking``)
        skips two hand-offs through the event loop per step.
        """
        entry, then = self._settle_attempt(result, error, non_retryable)
        with self._writing():
            self._store.save_step_blocking(self._loop, self._pk, self.instance.generation, entry)
        return then()

    def _settle_attempt(
        self, result: Any, error: ErrorInfo | None, non_retryable: bool
    ) -> tuple[StepEntry, Callable[[], StepDecision]]:
        """Record the attempt on the in-flight entry; returns the entry to save and what follows the save."""
        if self._in_flight is None:
            raise EngineError("finish_attempt() without a step in flight: call begin_step() first")
        entry, started, cfg = self._in_flight
        self._in_flight = None
        now = self._clock.now_ms()
        if error is None and now - started > cfg.timeout_ms:
            error = ErrorInfo(
                "StepTimeoutError",
                f"attempt {len(entry.attempts) + 1} of step {entry.name!r} took {now - started} ms, "
                f"over its timeout of {cfg.timeout_ms} ms",
            )
        text = ""
        if error is None:
            try:
                text = encode_payload(result, f"result of step {entry.name!r}", self._config.max_result_bytes)
            except EngineValidationError as exc:
                error, non_retryable = ErrorInfo(type(exc).__name__, str(exc)), True
        entry.attempts.append(
            {
                "start": started,
                "end": now,
                "success": error is None,
                "error": error.to_json() if error else None,
            }
        )
        if error is None:
            entry.state, entry.output, entry.end_at, entry.wake_at = "complete", text, now, None

            def committed() -> StepDecision:
                self.steps_committed += 1
                self._boundary = now
                return StepCached(json.loads(text))

            return entry, committed
        retries_done = len(entry.attempts) - 1
        if non_retryable or retries_done >= cfg.retries.limit:
            entry.state, entry.end_at, entry.wake_at = "failed", now, None
            entry.error_name, entry.error_message = error.name, error.message
            failure = StepFailure(error)

            def failed() -> StepDecision:
                self._boundary = now
                return failure

            return entry, failed
        delay = cfg.retries.delay_before(retries_done + 1)
        entry.state, entry.wake_at = "retrying", now + delay

        def retry() -> StepDecision:
            if delay > 0:
                self._suspend(now + delay)
            self._in_flight = (entry, now, cfg)
            return StepRun(entry.count, len(entry.attempts) + 1, cfg)

        return entry, retry

    # -- high-level API ------------------------------------------------------------------------

    async def do(
        self,
        name: str,
        fn: Callable[..., Any] | Callable[..., Awaitable[Any]],
        *,
        config: StepConfig | dict[str, Any] | None = None,
    ) -> Any:
        """Run ``fn`` as a durable step; a callback with one parameter gets the step context dict."""
        decision = self.begin_step(name, config)
        with_context = _accepts_context(fn)
        while True:
            if isinstance(decision, StepCached):
                return decision.result
            if isinstance(decision, StepFailure):
                raise StepFailedError(name, decision.error.name, decision.error.message)
            context = {
                "step": {"name": name, "count": decision.count},
                "attempt": decision.attempt,
                "config": decision.config.to_json(),
            }
            value: Any = None
            error: ErrorInfo | None = None
            non_retryable = False
            timeout = asyncio.timeout(decision.config.timeout_ms / 1000)
            try:
                async with timeout:
                    value = fn(context) if with_context else fn()
                    if inspect.isawaitable(value):
                        value = await value
            except TimeoutError as exc:
                if timeout.expired():
                    error = ErrorInfo(
                        "StepTimeoutError",
                        f"attempt {decision.attempt} of step {name!r} exceeded its timeout of "
                        f"{decision.config.timeout_ms} ms",
                    )
                else:
                    error = ErrorInfo(type(exc).__name__, str(exc))
            except NonRetryableError as exc:
                error, non_retryable = ErrorInfo(type(exc).__name__, str(exc)), True
            except Exception as exc:
                error = ErrorInfo(type(exc).__name__, str(exc))
            decision = await self.finish_attempt(result=value, error=error, non_retryable=non_retryable)

    async def sleep(self, name: str, duration: object) -> None:
        """A durable timer of ``duration`` (ms or ``"<n> <unit>"``)."""
        ms = parse_duration(duration, field="sleep duration")
        if ms > self._config.max_sleep_ms:
            raise EngineValidationError("sleep duration", f"{duration!r} exceeds the maximum of 365 days")
        await self._sleep(name, lambda now: now + ms)

    async def sleep_until(self, name: str, when: object) -> None:
        """A durable timer until ``when`` (epoch ms, ISO-8601 string or aware datetime); must be in the future."""
        target = _to_epoch_ms(when)

        def wake_at(now: int) -> int:
            if target <= now:
                raise EngineValidationError("sleep_until", f"{iso_ms(target)} is in the past")
            if target - now > self._config.max_sleep_ms:
                raise EngineValidationError("sleep_until", f"{iso_ms(target)} is more than 365 days away")
            return target

        await self._sleep(name, wake_at)

    async def wait_for_event(self, name: str, event_type: str, *, timeout: object = None) -> dict[str, Any]:
        """Wait for the next event of ``event_type``; returns ``{"payload", "timestamp", "type"}``.

        Events sent before the wait starts are buffered and consumed in order. A timeout raises
        ``EventTimeoutError``, which the workflow may catch.
        """
        validate_id(event_type, "event type")
        timeout_ms = (
            self._config.default_event_timeout_ms
            if timeout is None
            else parse_duration(timeout, field="wait_for_event timeout")
        )
        if timeout_ms > self._config.max_event_timeout_ms:
            raise EngineValidationError(
                "wait_for_event timeout", f"{timeout!r} exceeds the maximum of 365 days"
            )
        seq, count, entry = self._enter("waitForEvent", name)
        now = self._clock.now_ms()
        new = entry is None
        if entry is None:
            entry = StepEntry(
                seq, "waitForEvent", name, count, "waiting", start_at=now, wake_at=now + timeout_ms,
                event_type=event_type,
            )  # fmt: skip
            self._entries.append(entry)
        elif entry.event_type != event_type:
            self._fail_fatally(
                NonDeterminismError(
                    self.instance.id,
                    seq,
                    f"waitForEvent {entry.name!r} for {entry.event_type!r}",
                    f"waitForEvent {name!r} for {event_type!r}",
                )
            )
        if entry.state == "complete":
            self._boundary = entry.end_at or self._boundary
            result: dict[str, Any] = json.loads(entry.output or "null")
            return result
        if entry.state == "failed":
            self._boundary = entry.end_at or self._boundary
            raise EventTimeoutError(name, event_type)
        with self._writing():
            taken = await self._store.take_event(
                self._pk, self.instance.generation, entry, now, save_waiting=new
            )
        if taken is not None:
            self._boundary = now
            return {"payload": json.loads(taken[0]), "timestamp": iso_ms(taken[1]), "type": event_type}
        assert entry.wake_at is not None
        if now >= entry.wake_at:
            entry.state, entry.end_at = "failed", entry.wake_at
            entry.error_name = "EventTimeoutError"
            entry.error_message = f"no event of type {event_type!r} arrived within the timeout"
            await self._save(entry)
            self._boundary = entry.wake_at
            raise EventTimeoutError(name, event_type)
        self._suspend(entry.wake_at, event_type)

    # -- internals -----------------------------------------------------------------------------

    async def _sleep(self, name: str, wake_at: Callable[[int], int]) -> None:
        seq, count, entry = self._enter("sleep", name)
        now = self._clock.now_ms()
        if entry is None:
            try:
                target = wake_at(now)
            except EngineValidationError as exc:
                # Journaled, so that every replay raises the same error at the same position.
                entry = StepEntry(seq, "sleep", name, count, "failed", start_at=now, end_at=now, wake_at=now)
                entry.error_name, entry.error_message = exc.field, exc.message
                self._entries.append(entry)
                await self._save(entry)
                raise
            entry = StepEntry(seq, "sleep", name, count, "waiting", start_at=now, wake_at=target)
            self._entries.append(entry)
            if target > now:
                await self._save(entry)
                self._suspend(target)
        if entry.state == "complete":
            self._boundary = entry.end_at or self._boundary
            return
        if entry.state == "failed":
            raise EngineValidationError(entry.error_name or "sleep", entry.error_message or "invalid sleep")
        assert entry.wake_at is not None
        if entry.wake_at > now:
            self._suspend(entry.wake_at)
        entry.state, entry.end_at = "complete", entry.wake_at
        await self._save(entry)
        self._boundary = entry.wake_at

    def _enter(self, kind: StepType, name: str) -> tuple[int, int, StepEntry | None]:
        if self.aborted:
            raise RunAborted
        if self.suspension is not None:
            raise Suspend
        if self.fatal is not None:
            raise self.fatal
        if self._in_flight is not None:
            raise EngineError(
                f"step {name!r} started while step {self._in_flight[0].name!r} is still running: "
                "steps of one instance run one at a time"
            )
        if self.pause_requested:
            self._suspend(0)
        validate_step_name(name, self._config.max_step_name_length)
        seq = self._position
        count = self._counts.get(name, 0) + 1
        entry = self._entries[seq] if seq < len(self._entries) else None
        if entry is not None and (entry.type != kind or entry.name != name):
            self._fail_fatally(
                NonDeterminismError(self.instance.id, seq, f"{entry.type} {entry.name!r}", f"{kind} {name!r}")
            )
        self._counts[name] = count
        self._position = seq + 1
        return seq, count, entry

    async def _save(self, entry: StepEntry) -> None:
        with self._writing():
            await self._store.save_step(self._pk, self.instance.generation, entry)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a refused write into the end of this run."""
        try:
            yield
        except StaleRunError:  # restarted, terminated or taken over meanwhile
            self.aborted = True
            raise RunAborted from None
        except Exception as exc:
            # Not the workflow's fault: abandon this run (nothing after the last commit is kept) and
            # let the engine run it again once the database accepts writes.
            self.store_error = exc
            self.aborted = True
            raise RunAborted from exc

    def _suspend(self, wake_at: int, event_type: str | None = None) -> NoReturn:
        self.suspension = (wake_at, event_type)
        raise Suspend

    def _fail_fatally(self, error: EngineError) -> NoReturn:
        self.fatal = error
        raise error


@functools.lru_cache(maxsize=256)
def _config_text(config: StepConfig) -> str:
    # Cached: nearly every step of a workflow has the same few configurations (usually the default).
    return json.dumps(config.to_json(), separators=(",", ":"))
