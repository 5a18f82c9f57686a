"""The storage interface of the engine.

Everything the engine persists goes through ``EngineStore``. SQLite (``SqliteStore``) is the embedded
default; a PostgreSQL store is a second subclass. Payloads arrive here already encoded as JSON text:
the store never interprets them.

Scheduling state lives in ``wake_at``: NULL = not scheduled (finished or paused), 0 = ready to run
(queued, or running: a crash leaves it ready, which is how recovery finds it), > 0 = a timer due
at that epoch-ms time (sleep, retry delay, event timeout).

Every write made on behalf of a run carries the generation the run started with; when restart,
terminate or delete bumped it in the meantime the write is refused with ``StaleRunError`` and the
run is abandoned. A step result is durable when ``save_step`` returns.

A store several engine processes share (PostgreSQL) is a ``SharedEngineStore``: there "ready"
(``wake_at = 0``) is not enough to run an instance, a worker must also hold its lease
(``claim_ready``). A takeover of an expired lease bumps the generation, which fences the writes of
the worker that lost it exactly as a restart does.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._model import Instance

StepType = Literal["step", "sleep", "waitForEvent"]
StepState = Literal["running", "retrying", "waiting", "complete", "failed"]


class StaleRunError(Exception):
    """A run's write was refused: its instance was restarted, terminated or deleted meanwhile."""


@dataclass(slots=True)
class StepEntry:
    """One journal entry: a step, a sleep or a wait, at position ``seq`` of the instance's run."""

    seq: int
    type: StepType
    name: str
    count: int
    state: StepState
    start_at: int
    end_at: int | None = None
    output: str | None = None
    """JSON text of the result (for waits: ``{"payload", "timestamp", "type"}``)."""
    error_name: str | None = None
    error_message: str | None = None
    wake_at: int | None = None
    """Retry due time, sleep end, or event timeout."""
    event_type: str | None = None
    config: str | None = None
    """JSON text of the effective step config."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """``{"start", "end", "success", "error": {"name", "message"} | None}`` per attempt."""


@dataclass(frozen=True, slots=True)
class NewInstance:
    """A row to insert."""

    namespace: str
    id: str
    workflow: str
    params: str | None
    concurrency_key: str
    created_at: int
    retention_ms: int | None
    affinity: str = ""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """An instance row with its internal key."""

    pk: int
    instance: Instance
    paused_wake_at: int | None
    waiting_event: str | None
    raw_wake_at: int | None
    """The scheduling column as stored: None, 0 (ready) or a timer."""


@dataclass(frozen=True, slots=True)
class RunFinish:
    """How a run ended, to be recorded atomically."""

    kind: Literal["complete", "errored", "suspended"]
    now: int
    output: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    wake_at: int | None = None
    """For suspended: the timer (0 = ready again at once)."""
    waiting_event: str | None = None
    """For suspended: the event type that wakes it early."""
    purge_at: int | None = None


FinishResult = Literal["finished", "waiting", "paused", "requeue", "stale"]


class EngineStore(abc.ABC):
    """Persistence for instances, journals and events."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and migrate the schema."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush pending writes and close. Idempotent."""

    # -- instances -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def insert_instances(self, rows: Sequence[NewInstance]) -> list[int]:
        """Insert all rows or none (``InstanceExistsError`` names the first taken id). Returns pks."""

    @abc.abstractmethod
    async def get_instance(self, namespace: str, instance_id: str) -> StoredInstance | None: ...

    @abc.abstractmethod
    async def list_instances(
        self,
        namespace: str,
        *,
        workflow: str | None,
        statuses: Collection[str] | None,
        created_after: int | None,
        created_before: int | None,
        after: tuple[int, int] | None,
        limit: int,
        descending: bool,
    ) -> list[StoredInstance]:
        """Instances ordered by (created_at, pk); ``after`` is the (created_at, pk) of the last row seen."""

    @abc.abstractmethod
    async def update_instance(
        self,
        pk: int,
        *,
        expect_status: Collection[str],
        changes: dict[str, Any],
        now: int,
        bump_generation: bool = False,
    ) -> StoredInstance | None:
        """Compare-and-set: apply ``changes`` if the status is one of ``expect_status``; None otherwise."""

    @abc.abstractmethod
    async def delete_instance(self, pk: int) -> None:
        """Delete the instance, its journal and its events."""

    # -- runs ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def load_run(self, pk: int) -> tuple[StoredInstance, list[StepEntry]] | None:
        """The instance and its journal in position order."""

    @abc.abstractmethod
    def mark_running(self, pk: int, generation: int, now: int) -> None:
        """Record that a run started; not awaited (informational, committed with the next batch)."""

    @abc.abstractmethod
    async def save_step(self, pk: int, generation: int, entry: StepEntry) -> None:
        """Durably write one journal entry. ``StaleRunError`` if the generation moved on."""

    def save_step_blocking(
        self, loop: asyncio.AbstractEventLoop, pk: int, generation: int, entry: StepEntry
    ) -> None:
        """``save_step`` for a thread that may block and is not ``loop``'s (a sandboxed guest's thread).

        This default hops to ``loop`` and waits; a store that can reach its writer without the loop
        overrides it (that hop is most of a step's cost when the disk is fast).
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def start() -> None:
            task = loop.create_task(self.save_step(pk, generation, entry))
            task.add_done_callback(lambda t: _copy_outcome(t, done))

        # A clean context: the calling thread's context variables must not leak into the loop's work.
        loop.call_soon_threadsafe(start, context=contextvars.Context())
        done.result()

    @abc.abstractmethod
    async def take_event(
        self, pk: int, generation: int, entry: StepEntry, now: int, save_waiting: bool
    ) -> tuple[str, int] | None:
        """Consume the oldest unconsumed event of ``entry.event_type`` for the wait at ``entry.seq``.

        Atomically marks it consumed and writes ``entry`` completed with the event as output; returns
        (payload JSON text, received_at). With no event: writes ``entry`` as waiting when
        ``save_waiting`` and returns None.
        """

    @abc.abstractmethod
    async def finish_run(self, pk: int, generation: int, finish: RunFinish) -> FinishResult:
        """Record a run's end. A suspended run whose awaited event already arrived comes back as
        ``requeue``; a run whose pause was requested comes back as ``paused``."""

    @abc.abstractmethod
    async def truncate_journal(self, pk: int, keep_before: int) -> None:
        """Drop journal entries at positions >= keep_before; events they consumed become unconsumed."""

    # -- events --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_event(
        self, pk: int, event_type: str, payload: str | None, now: int, max_buffered: int
    ) -> bool:
        """Buffer an event. True when the instance was waiting for that type and is now ready."""

    # -- scheduling ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def claim_due(self, now: int, limit: int) -> list[tuple[int, str]]:
        """Make up to ``limit`` instances whose timer is due ready (wake_at 0); returns (pk, key)."""

    @abc.abstractmethod
    async def next_wake(self) -> int | None:
        """The earliest pending timer."""

    @abc.abstractmethod
    async def ready_instances(self) -> list[tuple[int, str]]:
        """Instances that are ready (queued, or running when the process died): (pk, key) in age order."""

    @abc.abstractmethod
    async def purge_finished(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` finished instances whose retention has passed."""

    @abc.abstractmethod
    async def count_instances(self, namespace: str | None, workflow: str | None) -> dict[str, int]:
        """Instances by status, optionally of one namespace and workflow."""

    @abc.abstractmethod
    async def journal(self, pk: int) -> list[StepEntry]:
        """The journal of an instance (for the step log)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """An instance leased to this worker by ``claim_ready``."""

    pk: int
    key: str
    generation: int
    """The generation the run must write with (bumped when an expired lease was taken over)."""
    preferred: bool
    """Its affinity was one of the worker's preferred ones."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What one ``claim_ready`` leased, and when to look again for instances it left to others."""

    claims: list[Claim]
    deferred_ms: int | None = None
    """Ready instances were left to the live workers holding them warm (their affinity grace): the
    first of them becomes claimable by anyone in this many ms. None when none was left."""


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease the worker still holds, as renewed by ``renew_leases``."""

    generation: int
    status: str


class SharedEngineStore(EngineStore):
    """A store shared by several engine processes: runs are leased (see the module note).

    Notifications (``notify`` and those the store sends itself inside its writes) are short strings:
    ``r`` (something became ready), ``a:PK:GEN`` (runs of PK older than GEN must stop),
    ``p:PK`` / ``u:PK`` (a pause of PK was requested / cancelled).
    """

    @abc.abstractmethod
    async def claim_ready(
        self,
        worker: str,
        limit: int,
        *,
        lease_ms: int,
        max_per_key: int,
        key_limit: Callable[[str], int] | None,
        preferred: Collection[str],
        exclude: Collection[int],
        affinity_grace_ms: int = 0,
    ) -> Claims:
        """Lease up to ``limit`` ready instances that nobody holds (or whose lease expired), fairly
        between keys, never exceeding a key's limit counted over ALL workers' live leases.
        Instances whose affinity is in ``preferred`` go first, up to half of ``limit``. An instance
        whose affinity another live worker prefers (``publish_worker``) and this one does not is
        left to it until ``affinity_grace_ms`` after it became ready."""

    @abc.abstractmethod
    async def publish_worker(self, worker: str, preferred: Collection[str], lease_ms: int) -> None:
        """Record that ``worker`` is alive (for ``lease_ms``) and the affinities it prefers (holds warm)."""

    @abc.abstractmethod
    async def renew_leases(self, worker: str, pks: Collection[int], lease_ms: int) -> dict[int, LeaseState]:
        """Extend this worker's leases; returns the ones it still holds."""

    @abc.abstractmethod
    async def release_lease(self, worker: str, pk: int, generation: int) -> None:
        """Give up a lease without finishing the run (``finish_run`` releases it otherwise)."""

    @abc.abstractmethod
    async def release_all(self, worker: str) -> None:
        """Give up every lease of this worker and its ``publish_worker`` record (a clean shutdown:
        others take over at once)."""

    @abc.abstractmethod
    async def request_pause(self, pk: int, now: int) -> StoredInstance | None:
        """Atomically: a leased (running) instance becomes ``waitingForPause`` (its worker is told),
        any other live one ``paused``. None when it is not live."""

    @abc.abstractmethod
    async def notify(self, message: str) -> None:
        """Send a notification to every listening worker."""

    @abc.abstractmethod
    async def listen(self, callback: Callable[[str], None]) -> bool:
        """Deliver notifications to ``callback`` (idempotent; reconnects a lost listener).
        False when not listening (the caller polls meanwhile)."""


def _copy_outcome(task: asyncio.Task[None], done: concurrent.futures.Future[None]) -> None:
    if task.cancelled():
        done.set_exception(RuntimeError("the write was cancelled: the engine is stopping"))
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)
