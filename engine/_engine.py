"""The engine: instance lifecycle, the scheduler loop, and runs.

A run: the scheduler pops a ready instance (fairly between concurrency keys), loads its journal,
calls the executor with a ``Journal``, and records the outcome. On a store shared between
processes (``SharedEngineStore``) the scheduler is a ``Worker`` that leases instances from the
database instead of an in-memory queue, and lifecycle operations decide from the database whether a
run is in flight, wherever it runs (see ``_worker``). The journal is authoritative about
suspensions and fatal errors: whatever the executor returns, a pending timer means "waiting" and
a non-determinism error means "errored".

Design note (fresh instances). A run normally starts with ``load_run``: one read through the store's
reader thread, a few hundred µs of hand-offs that dominate a short run. An instance this engine has
just created needs none of it: the engine knows its row (it wrote it) and that its journal is empty.
So ``create_batch`` remembers each new row in ``_fresh`` (pk -> the inserted row; bounded by
``FRESH_MAX_INSTANCES`` and ``FRESH_MAX_BYTES``, oldest dropped first), and the first run pops it and
builds exactly what ``load_run`` would return. Everything else reads the store: recovery, wake-ups by
timer or event, requeues and retries (the record is popped by the first run, whatever its end), and
every lifecycle operation drops the record before it writes (pause, resume, terminate, restart,
delete, replace_params), so a run starting after one of them reads the row it left. Only the embedded
(in-process) scheduler uses it: on a shared store another process may change the row or run the
instance (a run released without finishing leaves a journal at the same generation), so workers
always read.

Design note (marking a run started). ``mark_running`` (status ``running``, ``started_at``) is not
durable-critical: a crash leaves the instance ready either way. Queued at the start of every run it
became a write batch of its own (an fsync at ``synchronous=FULL``) that the run's end then waited
behind. It is now queued ``MARK_RUNNING_DELAY_S`` after the start, or right before the end's writes
when the run is shorter, so a short run costs one write batch; ``started_at`` keeps the real start
time. An observer may see ``queued`` for those first milliseconds of a run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from ._clock import Clock, SystemClock
from ._errors import (
    EngineError,
    EngineValidationError,
    InstanceNotFoundError,
    InvalidTransitionError,
    RunAborted,
    StepFailedError,
    Suspend,
)
from ._journal import Journal
from ._model import (
    FINISHED,
    Complete,
    CreateRequest,
    EngineConfig,
    ErrorInfo,
    Failed,
    Instance,
    InstanceStatus,
    Outcome,
    Page,
    RestartFrom,
    Status,
    Suspended,
)
from ._ready import ReadyQueue
from ._steplog import instance_record
from ._store import EngineStore, NewInstance, RunFinish, SharedEngineStore, StepEntry, StoredInstance
from ._validation import encode_payload, validate_id
from ._worker import Worker

log = logging.getLogger(__name__)

_LIVE = (Status.QUEUED, Status.RUNNING, Status.WAITING, Status.WAITING_FOR_PAUSE)
_ALL = tuple(Status)

FRESH_MAX_INSTANCES = 10_000
"""Freshly created instances remembered for their first run (see the module note); beyond this the
oldest records are dropped and those instances read the store like any other."""
FRESH_MAX_BYTES = 64 * 1024 * 1024
"""Total params (JSON text) held by those records; the same rule beyond it."""
MARK_RUNNING_DELAY_S = 0.005
"""How long a run may go before its ``running`` status is queued for writing (see the module note)."""


@dataclass(frozen=True, slots=True)
class RunContext:
    """What an executor gets for one run."""

    instance: Instance
    """The instance (its params are the opaque JSON value given at creation)."""
    journal: Journal
    """The durable step API for this run."""


class Executor(Protocol):
    """Runs one instance's workflow from the top (replaying completed steps via the journal)."""

    async def execute(self, run: RunContext) -> Outcome: ...


class Engine:
    """Durable execution of instances. Knows nothing about what runs inside them."""

    def __init__(
        self,
        store: EngineStore,
        executor: Executor,
        *,
        config: EngineConfig | None = None,
        clock: Clock | None = None,
        key_limit: Callable[[str], int] | None = None,
        preferred_affinity: Callable[[], Collection[str]] | None = None,
        worker: bool = True,
    ) -> None:
        """``key_limit`` may lower ``max_concurrency_per_key`` for particular concurrency keys.

        On a shared store: ``preferred_affinity`` names the affinity labels this worker prefers to
        claim (asked before every claim); ``worker=False`` makes an engine that creates, controls
        and observes instances but never runs any (an API-only process).
        """
        self.store = store
        self.config = config or EngineConfig()
        self.clock: Clock = clock or SystemClock()
        self._executor = executor
        self._key_limit = key_limit
        self._worker: Worker | None = (
            Worker(self, store, preferred_affinity) if isinstance(store, SharedEngineStore) else None
        )
        self._runs = worker
        self._ready = ReadyQueue(self.config.max_concurrency, self.config.max_concurrency_per_key, key_limit)
        self._active: dict[int, tuple[Journal, asyncio.Task[None]]] = {}
        self._requeue: dict[int, str] = {}
        self._fresh: dict[int, NewInstance] = {}
        """Instances created here and not yet run: pk -> the row as inserted (see the module note)."""
        self._fresh_bytes = 0
        self._watchers: dict[int, list[asyncio.Future[None]]] = {}
        self._timer_wakeup = asyncio.Event()
        self._next_timer: int | None = None
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._started = False
        self.runs_started = 0
        """Runs (wake-ups) started by this engine, for metrics."""
        self.steps_committed = 0
        """Step results committed by this engine's runs, for metrics."""
        self.claims = 0
        """Instances this engine took to run (leases on a shared store; every run otherwise)."""
        self.claims_preferred = 0
        """Of ``claims``, those whose affinity was preferred (shared stores only): the warm-hit rate
        is ``claims_preferred / claims`` when ``preferred_affinity`` names what the worker holds warm."""

    @property
    def worker_id(self) -> str | None:
        """This engine's lease owner id on a shared store (None otherwise)."""
        return None if self._worker is None else self._worker.id

    # -- lifecycle of the engine ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover instances that were ready or running, start the scheduler."""
        if self._started:
            return
        await self.store.open()
        self._started = True
        self._loops = [asyncio.create_task(self._purge_loop(), name="tenantflow-purge")]
        if not self._runs:
            return
        self._loops.append(asyncio.create_task(self._timer_loop(), name="tenantflow-timers"))
        if self._worker is not None:
            self._loops += self._worker.start(self._stopping)
            return
        for pk, key in await self.store.ready_instances():
            self._ready.push(pk, key)
        self._dispatch()

    async def aclose(self) -> None:
        """Stop scheduling, cancel in-flight runs (they resume on the next start), close the store."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self._timer_wakeup.set()
        if self._worker is not None:
            self._worker.wakeup.set()
        tasks = [task for _, task in self._active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self._loops, *tasks, return_exceptions=True)
        self._fresh.clear()  # the file may change before a next start: runs then read it
        self._fresh_bytes = 0
        if self._worker is not None and isinstance(self.store, SharedEngineStore):
            try:  # hand the instances in flight to other workers now rather than at lease expiry
                await self.store.release_all(self._worker.id)
            except Exception:
                log.exception("releasing leases at shutdown failed; they expire on their own")
        await self.store.aclose()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- instances -----------------------------------------------------------------------------

    async def create(self, namespace: str, request: CreateRequest) -> Instance:
        """Create one instance and queue it."""
        return (await self.create_batch(namespace, [request]))[0]

    async def create_batch(self, namespace: str, requests: Sequence[CreateRequest]) -> list[Instance]:
        """Create up to ``max_batch`` instances atomically: all of them, or none."""
        if not requests:
            raise EngineValidationError("instances", "the batch is empty")
        if len(requests) > self.config.max_batch:
            raise EngineValidationError(
                "instances", f"{len(requests)} in one batch; the limit is {self.config.max_batch}"
            )
        now = self.clock.now_ms()
        rows = [self._new_row(namespace, request, now, index) for index, request in enumerate(requests)]
        seen: set[str] = set()
        for row in rows:
            if row.id in seen:
                raise EngineValidationError("instances", f"instance id {row.id!r} appears twice in the batch")
            seen.add(row.id)
        pks = await self.store.insert_instances(rows)
        for pk, row in zip(pks, rows, strict=True):
            self._remember_fresh(pk, row)
            self._enqueue(pk, row.concurrency_key)
        return [
            Instance(
                namespace=namespace,
                id=row.id,
                workflow=row.workflow,
                status=Status.QUEUED,
                params=request.params,
                output=None,
                error=None,
                concurrency_key=row.concurrency_key,
                created_at=now,
                started_at=None,
                ended_at=None,
                updated_at=now,
                wake_at=None,
                retention_ms=row.retention_ms,
                generation=0,
                affinity=row.affinity,
            )
            for row, request in zip(rows, requests, strict=True)
        ]

    def _new_row(self, namespace: str, request: CreateRequest, now: int, index: int) -> NewInstance:
        where = f"instances[{index}]." if index else ""
        instance_id = str(uuid.uuid4()) if request.id is None else validate_id(request.id, f"{where}id")
        validate_id(request.workflow, f"{where}workflow")
        if not isinstance(request.concurrency_key, str):
            raise EngineValidationError(f"{where}concurrency_key", "must be a string")
        retention = request.retention_ms
        if retention is not None and (
            isinstance(retention, bool) or not isinstance(retention, int) or retention <= 0
        ):
            raise EngineValidationError(
                f"{where}retention", f"must be a positive number of ms, got {retention!r}"
            )
        if not isinstance(request.affinity, str) or len(request.affinity) > 1_024:
            raise EngineValidationError(f"{where}affinity", "must be a string of at most 1,024 characters")
        params = encode_payload(request.params, f"{where}params", self.config.max_params_bytes)
        return NewInstance(
            namespace,
            instance_id,
            request.workflow,
            params,
            request.concurrency_key,
            now,
            retention,
            request.affinity,
        )

    async def get(self, namespace: str, instance_id: str) -> Instance:
        """The instance, or ``InstanceNotFoundError``."""
        return (await self._lookup(namespace, instance_id)).instance

    async def status(self, namespace: str, instance_id: str) -> InstanceStatus:
        """``{status, error, output}``."""
        instance = await self.get(namespace, instance_id)
        return InstanceStatus(instance.status, instance.error, instance.output)

    async def describe(
        self, namespace: str, instance_id: str, *, payload: Callable[[Any], Any] = lambda value: value
    ) -> dict[str, Any]:
        """The full instance record with ``steps[]`` in the Cloudflare shape.

        ``payload`` maps every stored payload (params, outputs, event payloads) for display.
        """
        stored = await self._lookup(namespace, instance_id)
        entries = await self.store.journal(stored.pk)
        return instance_record(stored.instance, entries, payload)

    async def list(
        self,
        namespace: str,
        *,
        workflow: str | None = None,
        status: Status | str | Collection[Status | str] | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        cursor: str | None = None,
        limit: int = 50,
        descending: bool = False,
    ) -> Page:
        """Instances of a namespace, oldest first (or newest first), one page at a time."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= self.config.max_list_limit
        ):
            raise EngineValidationError("limit", f"must be 1 to {self.config.max_list_limit}, got {limit!r}")
        statuses: list[str] | None = None
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            try:
                statuses = [Status(s).value for s in wanted]
            except ValueError:
                allowed = ", ".join(s.value for s in Status)
                raise EngineValidationError(
                    "status", f"{wanted!r} is not a status; use one of {allowed}"
                ) from None
        rows = await self.store.list_instances(
            namespace,
            workflow=workflow,
            statuses=statuses,
            created_after=created_after,
            created_before=created_before,
            after=_decode_cursor(cursor) if cursor else None,
            limit=limit + 1,
            descending=descending,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1]) if more and rows else None
        return Page([row.instance for row in rows], next_cursor)

    async def count(self, namespace: str | None = None, *, workflow: str | None = None) -> dict[str, int]:
        """Instances by status (of one namespace and workflow when given)."""
        return await self.store.count_instances(namespace, workflow)

    async def wait(
        self,
        namespace: str,
        instance_id: str,
        *,
        statuses: Collection[Status] = FINISHED,
        timeout: float = 60.0,
    ) -> Instance:
        """Wait until the instance reaches one of ``statuses`` (for tests, tools and the demo)."""
        async with asyncio.timeout(timeout):
            while True:
                stored = await self._lookup(namespace, instance_id)
                if stored.instance.status in statuses:
                    return stored.instance
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._watchers.setdefault(stored.pk, []).append(future)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), 0.05)

    # -- lifecycle operations ------------------------------------------------------------------

    async def pause(self, namespace: str, instance_id: str) -> Instance:
        """Pause: a running instance stops at its next step boundary (``waitingForPause``)."""
        stored = await self._lookup_for_change(namespace, instance_id)
        status = stored.instance.status
        if status in (Status.PAUSED, Status.WAITING_FOR_PAUSE):
            return stored.instance
        if status in FINISHED:
            raise InvalidTransitionError(instance_id, "pause", status)
        now = self.clock.now_ms()
        active = self._active.get(stored.pk)
        if isinstance(self.store, SharedEngineStore) and self._worker is not None:
            # Whether a run is in flight (in any worker) is the lease's to say, not this process's.
            updated = await self.store.request_pause(stored.pk, now)
            if (
                active is not None
                and updated is not None
                and updated.instance.status == Status.WAITING_FOR_PAUSE
            ):
                active[0].pause_requested = True
        elif active is not None:
            updated = await self.store.update_instance(
                stored.pk, expect_status=_LIVE, changes={"status": Status.WAITING_FOR_PAUSE.value}, now=now
            )
            active[0].pause_requested = True
        else:
            updated = await self.store.update_instance(
                stored.pk,
                expect_status=_LIVE,
                changes={
                    "status": Status.PAUSED.value,
                    "wake_at": None,
                    "paused_wake_at": stored.raw_wake_at or 0,
                },
                now=now,
            )
        return self._after_transition(stored, updated, "pause")

    async def resume(self, namespace: str, instance_id: str) -> Instance:
        """Resume a paused instance (or cancel a pause that has not taken effect yet)."""
        stored = await self._lookup_for_change(namespace, instance_id)
        status = stored.instance.status
        now = self.clock.now_ms()
        if status == Status.WAITING_FOR_PAUSE:
            updated = await self.store.update_instance(
                stored.pk,
                expect_status=(Status.WAITING_FOR_PAUSE,),
                changes={"status": Status.RUNNING.value},
                now=now,
            )
            active = self._active.get(stored.pk)
            if active is not None:
                active[0].pause_requested = False
            if isinstance(self.store, SharedEngineStore) and updated is not None:
                await self.store.notify(f"u:{stored.pk}")
            return self._after_transition(stored, updated, "resume")
        if status != Status.PAUSED:
            if status in FINISHED:
                raise InvalidTransitionError(instance_id, "resume", status)
            return stored.instance
        wake = stored.paused_wake_at or 0
        updated = await self.store.update_instance(
            stored.pk,
            expect_status=(Status.PAUSED,),
            changes={
                "status": (Status.QUEUED if wake == 0 else Status.WAITING).value,
                "wake_at": wake,
                "paused_wake_at": None,
            },
            now=now,
        )
        instance = self._after_transition(stored, updated, "resume")
        if wake == 0:
            self._enqueue(stored.pk, stored.instance.concurrency_key)
        else:
            self._note_timer(wake)
        return instance

    async def terminate(self, namespace: str, instance_id: str) -> Instance:
        """Stop the instance for good; an in-flight run is abandoned and can no longer commit."""
        stored = await self._lookup_for_change(namespace, instance_id)
        if stored.instance.status in FINISHED:
            raise InvalidTransitionError(instance_id, "terminate", stored.instance.status)
        now = self.clock.now_ms()
        updated = await self.store.update_instance(
            stored.pk,
            expect_status=(*_LIVE, Status.PAUSED),
            changes={
                "status": Status.TERMINATED.value,
                "wake_at": None,
                "paused_wake_at": None,
                "waiting_event": None,
                "ended_at": now,
                "purge_at": now + self._retention(stored.instance),
            },
            now=now,
            bump_generation=True,
        )
        self._abort_active(stored.pk)
        return self._after_transition(stored, updated, "terminate")

    async def restart(
        self, namespace: str, instance_id: str, from_step: RestartFrom | None = None
    ) -> Instance:
        """Run again from the start, or from ``from_step`` keeping the results of the steps before it."""
        stored = await self._lookup_for_change(namespace, instance_id)
        keep = 0
        if from_step is not None:
            entries = await self.store.journal(stored.pk)
            matches = [
                e.seq
                for e in entries
                if (e.name, e.count, e.type) == (from_step.name, from_step.count, from_step.type)
            ]
            if not matches:
                raise EngineValidationError(
                    "from",
                    f"no {from_step.type} named {from_step.name!r} (occurrence {from_step.count}) in the journal "
                    f"of instance {instance_id!r}",
                )
            keep = matches[0]
        now = self.clock.now_ms()
        shared = isinstance(self.store, SharedEngineStore)
        updated = await self.store.update_instance(
            stored.pk,
            expect_status=_ALL,
            changes={
                "status": Status.QUEUED.value,
                # Shared: not claimable by another worker before the journal is truncated below.
                "wake_at": None if shared else 0,
                "output": None,
                "error_name": None,
                "error_message": None,
                "ended_at": None,
                "purge_at": None,
                "paused_wake_at": None,
                "waiting_event": None,
            },
            now=now,
            bump_generation=True,
        )
        await self.store.truncate_journal(stored.pk, keep)
        self._abort_active(stored.pk)
        if shared and updated is not None:
            updated = await self.store.update_instance(
                stored.pk, expect_status=(Status.QUEUED,), changes={"wake_at": 0}, now=now
            )
        instance = self._after_transition(stored, updated, "restart")
        self._enqueue(stored.pk, stored.instance.concurrency_key)
        return instance

    async def delete(self, namespace: str, instance_id: str) -> None:
        """Delete the instance, its journal and its events (an in-flight run is abandoned)."""
        stored = await self._lookup_for_change(namespace, instance_id)
        await self.store.update_instance(stored.pk, expect_status=_ALL, changes={}, now=self.clock.now_ms(),
                                         bump_generation=True)  # fmt: skip
        self._abort_active(stored.pk)
        await self.store.delete_instance(stored.pk)
        self._notify(stored.pk)

    async def send_event(self, namespace: str, instance_id: str, event_type: str, payload: Any = None) -> int:
        """Buffer an event for the instance; wakes it if it waits for that type. Returns the receive time."""
        validate_id(event_type, "event type")
        text = encode_payload(payload, "event payload", self.config.max_event_bytes)
        stored = await self._lookup(namespace, instance_id)
        if stored.instance.status in FINISHED:
            raise InvalidTransitionError(instance_id, "send an event to", stored.instance.status)
        now = self.clock.now_ms()
        try:
            woke = await self.store.add_event(
                stored.pk, event_type, text, now, self.config.max_buffered_events
            )
        except InvalidTransitionError as exc:
            raise InvalidTransitionError(instance_id, exc.operation, exc.status) from None
        if woke:
            self._enqueue(stored.pk, stored.instance.concurrency_key)
        return now

    async def replace_params(self, namespace: str, instance_id: str, params: Any) -> Instance:
        """Replace an unfinished instance's params (opaque to the engine; e.g. to re-route it)."""
        stored = await self._lookup_for_change(namespace, instance_id)
        text = encode_payload(params, "params", self.config.max_params_bytes)
        updated = await self.store.update_instance(
            stored.pk,
            expect_status=(*_LIVE, Status.PAUSED),
            changes={"params": text},
            now=self.clock.now_ms(),
        )
        if updated is None:
            raise InvalidTransitionError(instance_id, "change the params of", stored.instance.status)
        return updated.instance

    async def purge_expired(self) -> int:
        """Delete finished instances whose retention has passed; returns how many."""
        total = 0
        while True:
            purged = await self.store.purge_finished(self.clock.now_ms(), 1_000)
            total += purged
            if purged < 1_000:
                return total

    # -- internals: lookups and transitions ----------------------------------------------------

    async def _lookup(self, namespace: str, instance_id: str) -> StoredInstance:
        if not isinstance(instance_id, str):
            raise EngineValidationError("instance_id", "must be a string")
        stored = await self.store.get_instance(namespace, instance_id)
        if stored is None:
            raise InstanceNotFoundError(namespace, instance_id)
        return stored

    async def _lookup_for_change(self, namespace: str, instance_id: str) -> StoredInstance:
        """``_lookup`` for an operation about to change the instance: its next run reads the store."""
        stored = await self._lookup(namespace, instance_id)
        self._forget_fresh(stored.pk)
        return stored

    def _remember_fresh(self, pk: int, row: NewInstance) -> None:
        if self._worker is not None or not self._runs:
            return  # see the module note: workers on a shared store always read
        self._fresh[pk] = row
        self._fresh_bytes += len(row.params or "")
        while len(self._fresh) > FRESH_MAX_INSTANCES or self._fresh_bytes > FRESH_MAX_BYTES:
            self._forget_fresh(next(iter(self._fresh)))

    def _forget_fresh(self, pk: int) -> NewInstance | None:
        row = self._fresh.pop(pk, None)
        if row is not None:
            self._fresh_bytes -= len(row.params or "")
        return row

    def _after_transition(
        self, before: StoredInstance, after: StoredInstance | None, operation: str
    ) -> Instance:
        if after is None:  # the status changed under us (a run finished meanwhile)
            raise InvalidTransitionError(before.instance.id, operation, "no longer in the status it was")
        self._notify(before.pk)
        return after.instance

    def _retention(self, instance: Instance) -> int:
        return instance.retention_ms or self.config.default_retention_ms

    def _abort_active(self, pk: int) -> None:
        active = self._active.get(pk)
        if active is not None:
            active[0].request_abort()
            active[1].cancel()

    def _notify(self, pk: int) -> None:
        for future in self._watchers.pop(pk, ()):
            if not future.done():
                future.set_result(None)

    # -- internals: scheduling -----------------------------------------------------------------

    def _enqueue(self, pk: int, key: str) -> None:
        if self._worker is not None:  # ready in the database: claim it (or another worker will)
            self._worker.wakeup.set()
            return
        if pk in self._active:
            self._requeue[pk] = key
            return
        self._ready.push(pk, key)
        self._dispatch()

    def _dispatch(self) -> None:
        if not self._started:
            return
        while (item := self._ready.pop()) is not None:
            self.claims += 1
            self._start_run(*item)

    def _start_run(self, pk: int, key: str, generation: int | None = None) -> None:
        task = asyncio.create_task(self._run(pk, key, generation))
        self.runs_started += 1
        task.add_done_callback(_log_crash)

    def _note_timer(self, wake_at: int) -> None:
        if self._next_timer is None or wake_at < self._next_timer:
            self._next_timer = wake_at
            self._timer_wakeup.set()

    async def _timer_loop(self) -> None:
        while not self._stopping.is_set():
            self._timer_wakeup.clear()
            try:
                due = await self.store.claim_due(self.clock.now_ms(), self.config.timer_batch)
                for pk, key in due:
                    self._enqueue(pk, key)
                if len(due) == self.config.timer_batch:
                    continue
                self._next_timer = await self.store.next_wake()
            except Exception:  # a busy or failing database must not kill the scheduler
                log.exception("timer scan failed; retrying in 1 s")
                self._next_timer = self.clock.now_ms() + 1_000
            await self.clock.wait(self._next_timer, self._timer_wakeup)

    async def _purge_loop(self) -> None:
        while not self._stopping.is_set():
            await self.clock.wait(self.clock.now_ms() + self.config.purge_interval_ms, self._stopping)
            if self._stopping.is_set():
                return
            try:
                await self.purge_expired()
            except Exception:
                log.exception("purging finished instances failed; will retry")

    async def _run(self, pk: int, key: str, generation: int | None) -> None:
        finished = False
        try:
            finished = await self._execute(pk, generation)
        except Exception as exc:
            # A storage failure (a locked or full database): the journal holds everything committed,
            # so run the instance again a little later instead of failing it. (Workers: the lease is
            # released below, or expires, and the instance is claimed again.) While the engine is
            # closing, the run simply resumes on the next start.
            if self._started:
                delay = self.config.storage_retry_ms / 1000
                log.warning(
                    "instance run interrupted by a storage error (%s); retrying in %.1f s", exc, delay
                )
                if self._worker is None:
                    asyncio.get_running_loop().call_later(delay, self._retry, pk, key)
        finally:
            active = self._active.pop(pk, None)
            if active is not None:
                self.steps_committed += active[0].steps_committed
            if self._worker is not None:
                await self._release(pk, generation, finished)
            else:
                self._ready.release(key)
                requeue_key = self._requeue.pop(pk, None)
                if requeue_key is not None:
                    self._ready.push(pk, requeue_key)
                self._dispatch()

    def _retry(self, pk: int, key: str) -> None:
        if self._started:
            self._enqueue(pk, key)

    async def _release(self, pk: int, generation: int | None, finished: bool) -> None:
        assert self._worker is not None and isinstance(self.store, SharedEngineStore)
        try:
            if not finished and generation is not None and self._started:
                await self.store.release_lease(self._worker.id, pk, generation)
        except Exception:
            log.exception("releasing the lease of instance %s failed; it expires on its own", pk)
        finally:
            self._worker.released(pk)

    async def _execute(self, pk: int, generation: int | None) -> bool:
        """Run the instance once; True when its end was recorded (``finish_run`` released the lease)."""
        entries: list[StepEntry]
        fresh = self._forget_fresh(pk)
        if fresh is not None:
            stored, entries = _fresh_instance(pk, fresh), []
        else:
            loaded = await self.store.load_run(pk)
            if loaded is None:
                return False
            stored, entries = loaded
        instance = stored.instance
        if instance.status not in _LIVE or stored.raw_wake_at != 0:
            return False  # paused, finished or rescheduled since it was queued
        if generation is not None and instance.generation != generation:
            return False  # restarted or taken over since this worker claimed it
        journal = Journal(
            store=self.store, config=self.config, clock=self.clock, pk=pk, instance=instance, entries=entries
        )
        task = asyncio.current_task()
        assert task is not None
        self._active[pk] = (journal, task)
        mark = _MarkRunning(self.store, pk, instance.generation, self.clock.now_ms())
        if instance.status == Status.WAITING_FOR_PAUSE:
            journal.pause_requested = True
            mark.cancel()
        try:
            return await self._run_and_record(pk, instance, journal, mark)
        finally:
            mark.cancel()

    async def _run_and_record(
        self, pk: int, instance: Instance, journal: Journal, mark: _MarkRunning
    ) -> bool:
        outcome: Outcome
        try:
            outcome = await self._executor.execute(RunContext(instance, journal))
        except Suspend:
            outcome = Suspended()
        except RunAborted:
            if journal.store_error is not None:
                raise journal.store_error from None
            return False
        except asyncio.CancelledError:
            if journal.aborted or not self._started:
                return False
            raise
        except StepFailedError as exc:
            outcome = Failed(ErrorInfo(exc.error_name, exc.message))
        except Exception as exc:
            outcome = Failed(ErrorInfo(type(exc).__name__, str(exc)))
        if journal.aborted:
            if journal.store_error is not None:
                raise journal.store_error
            return False
        finish = self._finish(journal, outcome)
        if self._worker is not None:
            self._worker.finishing.add(pk)
        mark.now()  # queued just before the end's writes: it shares their batch
        if journal.pause_requested and finish.kind == "suspended":
            # A pause asked for by the run itself: finish_run turns waitingForPause into paused.
            await self.store.update_instance(
                pk, expect_status=_LIVE, changes={"status": Status.WAITING_FOR_PAUSE.value}, now=finish.now
            )
        result = await self.store.finish_run(pk, instance.generation, finish)
        if result == "requeue":
            if self._worker is not None:
                self._worker.wakeup.set()  # the lease is released: claim it again (here or elsewhere)
            else:
                self._requeue[pk] = instance.concurrency_key
        elif result == "waiting" and finish.wake_at:
            self._note_timer(finish.wake_at)
        self._notify(pk)
        return True

    def _finish(self, journal: Journal, outcome: Outcome) -> RunFinish:
        now = self.clock.now_ms()
        purge_at = now + self._retention(journal.instance)
        if journal.fatal is not None:
            outcome = Failed(ErrorInfo(type(journal.fatal).__name__, str(journal.fatal)))
        elif journal.suspension is not None:
            wake_at, event_type = journal.suspension
            return RunFinish("suspended", now, wake_at=wake_at, waiting_event=event_type)
        if isinstance(outcome, Complete):
            try:
                output = encode_payload(outcome.output, "workflow output", self.config.max_result_bytes)
            except EngineError as exc:
                outcome = Failed(ErrorInfo(type(exc).__name__, str(exc)))
            else:
                return RunFinish("complete", now, output=output, purge_at=purge_at)
        if isinstance(outcome, Suspended):
            outcome = Failed(
                ErrorInfo(
                    "EngineError",
                    "the executor reported a suspension, but no timer, event or retry is pending",
                )
            )
        return RunFinish(
            "errored",
            now,
            error_name=outcome.error.name,
            error_message=outcome.error.message,
            purge_at=purge_at,
        )


class _MarkRunning:
    """``mark_running`` for one run, submitted once: ``MARK_RUNNING_DELAY_S`` after the run began, or
    just before its end is written if that comes first (see the module note), or never if the run is
    abandoned."""

    __slots__ = ("_args", "_handle", "_store")

    def __init__(self, store: EngineStore, pk: int, generation: int, now: int) -> None:
        self._store = store
        self._args: tuple[int, int, int] | None = (pk, generation, now)
        self._handle = asyncio.get_running_loop().call_later(MARK_RUNNING_DELAY_S, self.now)

    def now(self) -> None:
        if self._args is not None:
            self._handle.cancel()
            args, self._args = self._args, None
            self._store.mark_running(*args)

    def cancel(self) -> None:
        self._handle.cancel()
        self._args = None


def _fresh_instance(pk: int, row: NewInstance) -> StoredInstance:
    """What ``load_run`` returns for an instance just inserted from ``row`` (queued, ready, never run)."""
    instance = Instance(
        namespace=row.namespace,
        id=row.id,
        workflow=row.workflow,
        status=Status.QUEUED,
        params=None if row.params is None else json.loads(row.params),
        output=None,
        error=None,
        concurrency_key=row.concurrency_key,
        created_at=row.created_at,
        started_at=None,
        ended_at=None,
        updated_at=row.created_at,
        wake_at=None,
        retention_ms=row.retention_ms,
        generation=0,
        affinity=row.affinity,
    )
    return StoredInstance(pk, instance, paused_wake_at=None, waiting_event=None, raw_wake_at=0)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("instance run crashed", exc_info=task.exception())


def _encode_cursor(row: StoredInstance) -> str:
    raw = f"{row.instance.created_at}:{row.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, pk = raw.split(":")
        return int(created_at), int(pk)
    except (ValueError, UnicodeDecodeError):
        raise EngineValidationError("cursor", "is not a cursor returned by list; start without one") from None
