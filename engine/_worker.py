"""Leased scheduling for a store shared by several engine processes (one ``Worker`` per engine).

Design note. With SQLite one process owns the database, so the engine keeps ready instances in
memory (``ReadyQueue``). When several processes share PostgreSQL, memory cannot say who runs what:
the database does. A worker leases ready instances (``SharedEngineStore.claim_ready``: fair between
concurrency keys, per-key limits counted over every worker's live leases, preferred affinities
first), renews its leases with a heartbeat while the runs are in flight, and releases each one when
its run ends. A worker that dies stops renewing, and once its leases expire any other worker claims
those instances; the takeover bumps the generation, so if the old worker was merely slow, its next
write is refused and its run is abandoned.

What wakes a worker: a notification (``r``: an instance was created, got its event, was resumed or
restarted, or a timer became due), one of its own runs ending (a free slot), or the poll every
``poll_interval_ms``, the fallback that also finds expired leases and timers set by other workers.
Notifications addressed to runs (``a``: abandon, ``p``/``u``: pause requested/cancelled) reach the
worker holding the run; the heartbeat reports the same facts from the database if one is lost.

Affinity. Claiming alone is greedy: whichever worker polls first takes any ready instance, so with
N workers only about 1/N of runs land where their code is warm, whatever each worker prefers. So a
worker publishes what it prefers (``publish_worker``: every heartbeat, and before a claim when the
set changed, at most every ``_REPUBLISH_S``), and a claim leaves an instance that another live worker
prefers, and this one does not, to that worker for ``affinity_grace_ms`` after it became ready. Then
anyone takes it: a busy or dead warm worker costs a delay of at most the grace, never starvation.
Instances nobody live prefers are claimed at once. Nothing announces the end of a grace, so a claim
that left instances to others reports when the first becomes claimable and the loop wakes then
rather than at the next poll. Considered: a per-worker queue (push instances to the warm worker)
needs a router and re-routing when it dies; consistent hashing of affinities onto workers ignores
what is actually warm and reshuffles when a worker joins.

Tried first: claiming through the group committer, so claims shared the batch's COMMIT. A claim
must see the leases committed by other workers just before it (that is how per-key limits hold),
and batches made claims wait behind journal writes, so claims run in their own short transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ._store import SharedEngineStore

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger(__name__)

_REPUBLISH_S = 0.1
"""A changed set of preferred affinities is published before a claim at most this often (and by
every heartbeat), so a cache churning on every run does not add a write to every claim."""


class Worker:
    """The claim loop, the heartbeat and the notification handler of one engine on a shared store."""

    def __init__(
        self,
        engine: Engine,
        store: SharedEngineStore,
        preferred_affinity: Callable[[], Collection[str]] | None,
    ) -> None:
        self.id = uuid.uuid4().hex
        """This worker's lease owner id (unique per engine object)."""
        self._engine = engine
        self._store = store
        self._preferred = preferred_affinity
        self.claimed: dict[int, int] = {}
        """Instances leased to this worker: pk -> the generation its run writes with."""
        self.finishing: set[int] = set()
        """Runs recording their end: ``finish_run`` releases the lease, the heartbeat must not mind."""
        self.wakeup = asyncio.Event()
        self._published: frozenset[str] | None = None
        """The preferred affinities last published (None: not yet)."""
        self._published_at = float("-inf")

    def start(self, stopping: asyncio.Event) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._claim_loop(stopping), name="tenantflow-claims"),
            asyncio.create_task(self._heartbeat_loop(stopping), name="tenantflow-heartbeat"),
        ]

    def released(self, pk: int) -> None:
        """A run ended: its slot is free."""
        self.claimed.pop(pk, None)
        self.finishing.discard(pk)
        self.wakeup.set()

    # -- notifications -----------------------------------------------------------------------------

    def on_notify(self, message: str) -> None:
        kind, _, rest = message.partition(":")
        if kind == "r":
            self.wakeup.set()
        elif kind == "a":
            pk_text, _, generation = rest.partition(":")
            self._abandon_older(int(pk_text), int(generation))
        elif kind in ("p", "u"):
            active = self._engine._active.get(int(rest))
            if active is not None:
                active[0].pause_requested = kind == "p"

    def _abandon_older(self, pk: int, generation: int) -> None:
        held = self.claimed.get(pk)
        if held is not None and held < generation:
            self._engine._abort_active(pk)

    # -- loops -------------------------------------------------------------------------------------

    async def _claim_loop(self, stopping: asyncio.Event) -> None:
        config = self._engine.config
        poll = config.poll_interval_ms / 1000
        loop = asyncio.get_running_loop()
        listening = False
        quiet_since = loop.time()
        while not stopping.is_set():
            self.wakeup.clear()
            free = config.max_concurrency - len(self.claimed)
            timeout = poll
            if free > 0:
                try:
                    if not listening:
                        listening = await self._store.listen(self.on_notify)
                    deferred_ms = await self._claim(free)
                    # Instances left to the workers holding them warm: look again when their grace ends.
                    if deferred_ms is not None:
                        timeout = min(poll, deferred_ms / 1000)
                except Exception:  # a busy or failing database must not kill the worker
                    log.exception("claiming instances failed; retrying in %.1f s", poll)
                    listening = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            if self.wakeup.is_set():
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= poll:  # a quiet poll: also look for timers other workers set
                quiet_since = loop.time()
                self._engine._timer_wakeup.set()
                listening = listening and await self._store.listen(self.on_notify)

    async def _claim(self, free: int) -> int | None:
        """Claim and start up to ``free`` runs; returns ``Claims.deferred_ms``."""
        engine = self._engine
        config = engine.config
        preferred: frozenset[str] = frozenset()
        if self._preferred is not None:
            preferred = frozenset(self._preferred())
            now = asyncio.get_running_loop().time()
            if preferred != self._published and now - self._published_at >= _REPUBLISH_S:
                await self._publish(preferred)
        result = await self._store.claim_ready(
            self.id,
            free,
            lease_ms=config.lease_ms,
            max_per_key=config.max_concurrency_per_key,
            key_limit=engine._key_limit,
            preferred=preferred,
            exclude=list(self.claimed),
            affinity_grace_ms=config.affinity_grace_ms,
        )
        for claim in result.claims:
            self.claimed[claim.pk] = claim.generation
            engine.claims += 1
            engine.claims_preferred += claim.preferred
            engine._start_run(claim.pk, claim.key, claim.generation)
        return result.deferred_ms

    async def _publish(self, preferred: frozenset[str]) -> None:
        self._published_at = asyncio.get_running_loop().time()
        await self._store.publish_worker(self.id, preferred, self._engine.config.lease_ms)
        self._published = preferred

    async def _heartbeat_loop(self, stopping: asyncio.Event) -> None:
        config = self._engine.config
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), config.heartbeat_ms / 1000)
            if stopping.is_set():
                continue
            if self._preferred is not None:
                try:  # also says this worker is alive: others leave what it holds warm to it
                    await self._publish(frozenset(self._preferred()))
                except Exception:
                    log.exception("publishing this worker's preferred affinities failed; retrying")
            if not self.claimed:
                continue
            held = dict(self.claimed)
            try:
                leases = await self._store.renew_leases(self.id, list(held), config.lease_ms)
            except Exception:
                log.exception("renewing leases failed; retrying")
                continue
            for pk, generation in held.items():
                if self.claimed.get(pk) != generation or pk in self.finishing:
                    continue  # ending, or ended meanwhile
                lease = leases.get(pk)
                if lease is None or lease.generation != generation:
                    # Taken over, restarted, terminated or deleted: the run can no longer commit anyway.
                    self._engine._abort_active(pk)
                elif lease.status == "waitingForPause":
                    active = self._engine._active.get(pk)
                    if active is not None:
                        active[0].pause_requested = True
