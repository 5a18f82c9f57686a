"""Records and configuration of the engine (frozen dataclasses)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ._durations import parse_duration
from ._errors import EngineValidationError

MiB = 1024 * 1024
DAY_MS = 86_400_000


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC timestamp with millisecond precision."""
    return (
        datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class Status(enum.StrEnum):
    """Instance statuses, as in Cloudflare Workflows."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERRORED = "errored"
    TERMINATED = "terminated"
    COMPLETE = "complete"
    WAITING = "waiting"
    WAITING_FOR_PAUSE = "waitingForPause"


FINISHED = frozenset({Status.ERRORED, Status.TERMINATED, Status.COMPLETE})
"""Statuses an instance never leaves on its own."""

Backoff = Literal["constant", "linear", "exponential"]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How a failing step is retried."""

    limit: float = 5
    """Retries after the first attempt; ``math.inf`` for unlimited."""
    delay_ms: int = 10_000
    """Base delay before a retry."""
    backoff: Backoff = "exponential"
    """constant: delay; linear: delay x retry; exponential: delay x 2^(retry-1)."""

    def delay_before(self, retry: int) -> int:
        """Delay in ms before retry number ``retry`` (1-based: the second attempt is retry 1)."""
        if self.backoff == "constant":
            return self.delay_ms
        if self.backoff == "linear":
            return self.delay_ms * retry
        return int(self.delay_ms * 2 ** (retry - 1))


@dataclass(frozen=True, slots=True)
class StepConfig:
    """Per-step configuration: retries and the per-attempt timeout."""

    retries: RetryConfig = field(default_factory=RetryConfig)
    """Retry policy."""
    timeout_ms: int = 10 * 60_000
    """Time allowed for one attempt."""

    @classmethod
    def parse(cls, value: StepConfig | dict[str, Any] | None) -> StepConfig:
        """Accept a StepConfig or the Cloudflare shape ``{"retries": {"limit", "delay", "backoff"}, "timeout"}``."""
        if value is None:
            return DEFAULT_STEP_CONFIG
        if isinstance(value, StepConfig):
            return value
        if not isinstance(value, dict):
            raise EngineValidationError("config", f"must be an object, got {type(value).__name__}")
        unknown = set(value) - {"retries", "timeout"}
        if unknown:
            raise EngineValidationError(
                "config", f"unknown keys {sorted(unknown)}; allowed: retries, timeout"
            )
        retries = value.get("retries") or {}
        if not isinstance(retries, dict):
            raise EngineValidationError("config.retries", "must be an object with limit, delay, backoff")
        unknown = set(retries) - {"limit", "delay", "backoff"}
        if unknown:
            raise EngineValidationError("config.retries", f"unknown keys {sorted(unknown)}")
        limit = retries.get("limit", 5)
        if isinstance(limit, str) and limit.lower() in ("inf", "infinity"):
            limit = math.inf
        if isinstance(limit, bool) or not isinstance(limit, int | float) or math.isnan(limit) or limit < 0:
            raise EngineValidationError(
                "config.retries.limit", f"must be a non-negative number or inf, got {limit!r}"
            )
        if limit != math.inf and limit != int(limit):
            raise EngineValidationError(
                "config.retries.limit", f"must be a whole number or inf, got {limit!r}"
            )
        backoff = retries.get("backoff", "exponential")
        if backoff not in ("constant", "linear", "exponential"):
            raise EngineValidationError(
                "config.retries.backoff", f"must be constant, linear or exponential, got {backoff!r}"
            )
        delay = parse_duration(retries.get("delay", 10_000), field="config.retries.delay")
        timeout = parse_duration(value.get("timeout", 10 * 60_000), field="config.timeout")
        if timeout == 0:
            raise EngineValidationError("config.timeout", "must be greater than zero")
        return cls(RetryConfig(limit, delay, backoff), timeout)

    def to_json(self) -> dict[str, Any]:
        limit: Any = "Infinity" if self.retries.limit == math.inf else int(self.retries.limit)
        return {
            "retries": {"limit": limit, "delay": self.retries.delay_ms, "backoff": self.retries.backoff},
            "timeout": self.timeout_ms,
        }


DEFAULT_STEP_CONFIG = StepConfig()


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine limits and tuning. Every limit is finite by default."""

    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    """SQLite durability: FULL fsyncs every commit (group commit shares the fsync)."""
    busy_timeout_ms: int = 5_000
    """How long SQLite waits on a lock held by another connection."""
    max_concurrency: int = 1_000
    """Instances running at once in this engine."""
    max_concurrency_per_key: int = 100
    """Instances running at once per concurrency key (an opaque string chosen by the caller)."""
    max_step_name_length: int = 256
    """Longest step name."""
    max_steps: int = 10_000
    """Steps per instance (sleeps do not count)."""
    max_params_bytes: int = 1 * MiB
    """Instance params, as JSON."""
    max_result_bytes: int = 1 * MiB
    """One step result, and the instance output, as JSON."""
    max_event_bytes: int = 1 * MiB
    """One event payload, as JSON."""
    max_batch: int = 100
    """Instances per create_batch call."""
    max_sleep_ms: int = 365 * DAY_MS
    """Longest sleep or sleep_until distance."""
    max_event_timeout_ms: int = 365 * DAY_MS
    """Longest wait_for_event timeout."""
    default_event_timeout_ms: int = DAY_MS
    """wait_for_event timeout when none is given."""
    default_retention_ms: int = 30 * DAY_MS
    """How long finished instances are kept before they are purged."""
    purge_interval_ms: int = 60_000
    """How often finished instances past their retention are purged."""
    max_buffered_events: int = 1_000
    """Unconsumed events buffered per instance."""
    max_list_limit: int = 1_000
    """Largest page of list_instances."""
    storage_retry_ms: int = 1_000
    """How long a run interrupted by a storage error (a locked or full database) waits before it runs again."""
    timer_batch: int = 1_000
    """Due timers claimed per scheduler pass."""
    lease_ms: int = 15_000
    """Shared stores (PostgreSQL): how long a claimed instance stays leased to its worker without a
    heartbeat; a worker that dies loses its instances to other workers after at most this long."""
    heartbeat_ms: int = 3_000
    """Shared stores: how often a worker renews the leases of its runs in flight (well below ``lease_ms``)."""
    poll_interval_ms: int = 1_000
    """Shared stores: how often a worker looks for work when no notification arrived (the fallback
    for a lost LISTEN connection, expired leases and timers set by other workers)."""
    affinity_grace_ms: int = 300
    """Shared stores: how long a ready instance whose affinity another live worker holds warm (publishes
    as preferred) is left to that worker before any worker may claim it; 0 claims greedily. Short, so a
    busy or dead warm worker delays such an instance by at most this long."""
    default_step_config: StepConfig = DEFAULT_STEP_CONFIG
    """Step configuration when a step gives none."""

    def __post_init__(self) -> None:
        for name in (
            "busy_timeout_ms", "max_concurrency", "max_concurrency_per_key", "max_step_name_length",
            "max_steps", "max_params_bytes", "max_result_bytes", "max_event_bytes", "max_batch",
            "max_sleep_ms", "max_event_timeout_ms", "default_event_timeout_ms", "default_retention_ms",
            "purge_interval_ms", "max_buffered_events", "max_list_limit", "timer_batch", "storage_retry_ms", "lease_ms",
            "heartbeat_ms", "poll_interval_ms",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"EngineConfig.{name} must be a positive integer, got {value!r}")
        grace = self.affinity_grace_ms
        if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= 60_000:
            raise ValueError(f"EngineConfig.affinity_grace_ms must be 0 to 60,000 (ms), got {grace!r}")
        if self.heartbeat_ms >= self.lease_ms:
            raise ValueError(
                f"EngineConfig.heartbeat_ms ({self.heartbeat_ms}) must be less than lease_ms ({self.lease_ms}): "
                "leases would expire between heartbeats"
            )


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as stored and shown: ``{name, message}``."""

    name: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "message": self.message}


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance as stored (payloads are the opaque JSON values the caller gave)."""

    namespace: str
    id: str
    workflow: str
    status: Status
    params: Any
    output: Any
    error: ErrorInfo | None
    concurrency_key: str
    created_at: int
    """Epoch ms."""
    started_at: int | None
    ended_at: int | None
    updated_at: int
    wake_at: int | None
    """Next timer (epoch ms) while sleeping or waiting; None otherwise."""
    retention_ms: int | None
    generation: int
    """Incremented by restart/terminate (and by a lease takeover on a shared store); a run of an older
    generation can no longer commit."""
    affinity: str = ""
    """The opaque affinity label given at creation (see ``CreateRequest.affinity``)."""


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """``{status, error, output}`` as in Cloudflare's ``status()``."""

    status: Status
    error: ErrorInfo | None
    output: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "error": self.error.to_json() if self.error else None,
            "output": self.output,
        }


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One instance to create."""

    workflow: str
    """An opaque label the executor uses to pick the code (the engine stores it)."""
    params: Any = None
    """Opaque JSON params."""
    id: str | None = None
    """Instance id; a UUID when omitted."""
    concurrency_key: str = ""
    """Instances sharing a key share ``max_concurrency_per_key`` and are scheduled fairly against other keys."""
    retention_ms: int | None = None
    """Keep this instance this long after it finishes (default: EngineConfig.default_retention_ms)."""
    affinity: str = ""
    """An opaque label; workers of a shared store prefer instances whose label their
    ``preferred_affinity`` returns (e.g. code they hold warm). It never affects correctness."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, and the cursor for the next (None at the end)."""

    items: list[Instance]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class RestartFrom:
    """Restart at this step, keeping the results of every step before it."""

    name: str
    count: int = 1
    type: Literal["step", "sleep", "waitForEvent"] = "step"


@dataclass(frozen=True, slots=True)
class Complete:
    """The workflow returned ``output``."""

    output: Any


@dataclass(frozen=True, slots=True)
class Failed:
    """The workflow failed with an error."""

    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Suspended:
    """The workflow stopped at a pending timer, event or retry delay (the journal knows which)."""


Outcome = Complete | Failed | Suspended
