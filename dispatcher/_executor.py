"""The engine's one executor: run a tenant's code for one wake-up of one instance.

1. Unwrap the params envelope: ``{tenant, workflow, version}`` (no envelope, no tenant code).
2. Look up the tenant (a suspended tenant's instance pauses instead of running).
3. Take a warm sandbox for (tenant, version, backend, limits), or cold-load one.
4. Invoke ``run(event, step)`` with a bridge bound to this instance's journal.
5. Map the result: output (wrapped), the tenant's error, a limit, a crash.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable

from artifacts import ArtifactError
from engine import Complete, ErrorInfo, Failed, Outcome, RunContext, iso_ms
from sandbox import LimitExceededError, Limits, LoadError, SandboxCrashError, SandboxError, TenantError

from ._bridge import Bindings, StepBridge
from ._cache import CacheKey, WarmCache
from ._envelope import unwrap, wrap
from ._errors import EnvelopeError, NotFoundError
from ._logs import InstanceLogs
from ._policy import Tenant, TenantPolicy

log = logging.getLogger(__name__)

_MAX_LIMITS_CACHED = 10_000
"""Tenants whose sandbox limits are kept derived (a full cache is simply emptied and refilled)."""


class TenantExecutor:
    """Implements ``engine.Executor`` for every tenant."""

    def __init__(
        self,
        *,
        tenant: Callable[[str], Awaitable[Tenant]],
        bindings: Callable[[Tenant], Bindings | None],
        cache: WarmCache,
        logs: InstanceLogs,
    ) -> None:
        self._tenant = tenant
        self._bindings = bindings
        self._cache = cache
        self._logs = logs
        self._limits: dict[str, tuple[TenantPolicy, Limits]] = {}
        """tenant id -> (the policy object, its ``sandbox_limits``): deriving them validates every
        field, which a warm wake-up would otherwise pay each time. Keyed on the policy's identity: a
        changed policy is a new object."""
        self.invocations = 0
        self.dispatch = LatencyHistogram()
        """Time from the engine handing over a wake-up to the sandbox's result (cold loads included)."""

    async def execute(self, run: RunContext) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._execute(run)
        finally:
            self.dispatch.observe(time.perf_counter() - started)

    async def _execute(self, run: RunContext) -> Outcome:
        instance, journal = run.instance, run.journal
        try:
            route, params = unwrap(instance.params, what="instance params")
        except EnvelopeError as exc:
            return Failed(ErrorInfo("EnvelopeError", str(exc)))
        if (route.tenant, route.workflow) != (instance.namespace, instance.workflow):
            return Failed(
                ErrorInfo("EnvelopeError", "the params envelope routes to another tenant or workflow")
            )
        try:
            tenant = await self._tenant(route.tenant)
        except NotFoundError:
            return Failed(ErrorInfo("TenantNotFound", f"tenant {route.tenant!r} no longer exists"))
        if tenant.status == "suspended":
            journal.pause_now()
        key = CacheKey(tenant.id, route.version, tenant.policy.backend, self._limits_of(tenant))
        try:
            sandbox = await self._cache.acquire(key)
        except LoadError as exc:
            return Failed(ErrorInfo("LoadError", str(exc)))
        except ArtifactError as exc:
            return Failed(ErrorInfo(type(exc).__name__, str(exc)))
        except SandboxError as exc:
            return Failed(ErrorInfo(type(exc).__name__, str(exc)))
        log_key = (tenant.id, instance.id)
        bridge = StepBridge(
            loop=asyncio.get_running_loop(),
            journal=journal,
            route=route,
            bindings=self._bindings(tenant),
            granted=tenant.policy.bindings,
            logs=self._logs,
            log_key=log_key,
        )
        event = {
            "payload": params,
            "timestamp": iso_ms(instance.created_at),
            "instanceId": instance.id,
            "workflowName": instance.workflow,
        }
        reusable = False
        self.invocations += 1
        try:
            result = await sandbox.invoke(event, bridge)
            reusable = True
            if result.stdout:
                self._logs.append(log_key, "stdout", result.stdout, max_bytes=tenant.policy.log_bytes)
            outcome: Outcome = Complete(wrap(route, result.output))
        except TenantError as exc:
            reusable = True
            if exc.traceback:
                self._logs.append(log_key, "error", exc.traceback, max_bytes=tenant.policy.log_bytes)
            outcome = Failed(ErrorInfo(exc.type_name, exc.message))
        except LimitExceededError as exc:
            outcome = Failed(ErrorInfo("LimitExceededError", str(exc)))
        except SandboxCrashError as exc:
            outcome = Failed(ErrorInfo("SandboxCrashError", str(exc)))
        except SandboxError as exc:
            outcome = Failed(ErrorInfo(type(exc).__name__, str(exc)))
        finally:
            # A cancelled or failed invocation may leave the guest mid-flight: never reuse it.
            self._cache.release(key, sandbox, reusable=reusable)
        if bridge.fatal is not None:
            return Failed(bridge.fatal)
        return outcome

    def _limits_of(self, tenant: Tenant) -> Limits:
        policy = tenant.policy
        cached = self._limits.get(tenant.id)
        if cached is not None and cached[0] is policy:
            return cached[1]
        limits = policy.sandbox_limits
        if len(self._limits) >= _MAX_LIMITS_CACHED:
            self._limits.clear()
        self._limits[tenant.id] = (policy, limits)
        return limits


class LatencyHistogram:
    """Cumulative latency buckets in seconds, in the Prometheus style."""

    BOUNDS = (
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    )

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound label, cumulative count) pairs, ending with ``+Inf``."""
        running, out = 0, []
        for bound, count in zip([*map(str, self.BOUNDS), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
