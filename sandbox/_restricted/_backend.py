"""``RestrictedBackend`` and its lightweight ``Sandbox`` handles.

A restricted sandbox is only a handle: the bundle digest, its derived (compiled) code and the
limits, bound to the backend's worker pool (so, unlike other backends, concurrent invocations of
one handle are harmless: each runs on its own worker). Loaded module state lives in the workers' LRUs, so
many handles cost almost nothing in the parent, and an invocation may run on any worker (it is
routed to one that already has the bundle warm when possible).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from .._errors import LimitExceededError, SandboxClosedError, SandboxCrashError
from .._limits import DEFAULT_LIMITS, Limits
from .._protocol import JSON, Bundle, HostBridge, InvokeResult
from ._compile import BACKEND_VERSION, compile_bundle, read_header
from ._pool import (
    NotDeliveredError,
    PoolConfig,
    WorkerPool,
    WorkerProcess,
    limit_from_message,
    limits_frame,
    load_error_from_message,
    result_from_message,
)


class RestrictedSandbox:
    """One tenant version on the restricted backend (a handle; see the module docstring)."""

    def __init__(self, pool: WorkerPool, digest: str, code_b64: str, limits: Limits) -> None:
        self._pool = pool
        self._digest = digest
        self._code = code_b64
        self._limits = limits
        self._limits_frame = limits_frame(limits)
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def limits(self) -> Limits:
        return self._limits

    async def invoke(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        if not self._alive:
            raise SandboxClosedError("this sandbox was closed; load the bundle again")
        try:
            return await self._invoke(event, bridge)
        except (LimitExceededError, SandboxCrashError):
            self._alive = False  # trap-class failures discard the sandbox, as in every backend
            raise

    async def _invoke(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        for _attempt in range(3):
            try:
                return await self._invoke_once(event, bridge)
            except NotDeliveredError:
                continue  # the worker died before anything reached the host: try another one
        raise SandboxCrashError(
            "sandbox workers keep dying while running this invocation; they have been replaced"
        )

    async def _invoke_once(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        pool = self._pool
        worker = await pool.acquire(self._digest)
        try:
            for _attempt in range(2):
                warm = self._digest in worker.warm
                message: dict[str, Any] = {
                    "t": "invoke",
                    "d": self._digest,
                    "code": None if warm else self._code,
                    "limits": self._limits_frame,
                    "event": event,
                }
                outcome, call = await worker.request(message, self._limits, bridge)
                if outcome.get("status") == "missing":
                    worker.warm.pop(self._digest, None)
                    continue
                worker.invocations += 1
                pool.mark_warm(worker, self._digest)
                return result_from_message(outcome, call, worker)
            raise SandboxCrashError("the sandbox worker lost the bundle twice")
        finally:
            pool.release(worker)

    async def aclose(self) -> None:
        self._alive = False

    async def __aenter__(self) -> RestrictedSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RestrictedBackend:
    """RestrictedPython-compiled tenant code in rlimited worker processes (``"restricted"``).

    Options: ``pool_size``, ``max_queue``, ``recycle_after``, ``lru_size``, ``memory_ceiling``,
    ``cpu_ceiling``, ``start_timeout``, ``spin_us``, ``worker_stderr``, ``worker_user`` (see
    ``PoolConfig``).
    """

    name = "restricted"

    def __init__(self, *, pool_size: int | None = None, **options: Any) -> None:
        if pool_size is not None:
            options["size"] = pool_size
        self._config = PoolConfig(**options)
        self._pool = WorkerPool(self._config)

    @property
    def version(self) -> str:
        return BACKEND_VERSION

    @property
    def config(self) -> PoolConfig:
        return self._config

    async def prepare(self, bundle: Bundle) -> bytes:
        return await asyncio.to_thread(compile_bundle, bundle)

    async def load(
        self, bundle: Bundle, *, limits: Limits = DEFAULT_LIMITS, derived: bytes | None = None
    ) -> RestrictedSandbox:
        if derived is not None:
            try:
                usable = read_header(derived).get("digest") == bundle.digest
            except ValueError:
                usable = False
            if not usable:
                derived = None  # another backend version or another bundle: recompile, never trust
        if derived is None:
            derived = await self.prepare(bundle)
        code = base64.b64encode(derived).decode("ascii")
        for _attempt in range(3):
            try:
                await self._load_once(bundle, code, limits)
                break
            except NotDeliveredError:
                continue
        else:
            raise SandboxCrashError("sandbox workers keep dying before they can load the bundle")
        return RestrictedSandbox(self._pool, bundle.digest, code, limits)

    async def _load_once(self, bundle: Bundle, code: str, limits: Limits) -> None:
        worker = await self._pool.acquire(bundle.digest)
        try:
            message = {"t": "load", "d": bundle.digest, "code": code, "limits": limits_frame(limits)}
            outcome, _calls = await worker.request(message, limits, None)
            kind = outcome.get("t")
            if kind == "load_error":
                raise load_error_from_message(outcome)
            if kind == "limit":
                raise limit_from_message(outcome)
            if kind != "loaded":
                raise SandboxCrashError(f"the sandbox worker answered a load with {kind!r}")
            self._pool.mark_warm(worker, bundle.digest)
        finally:
            self._pool.release(worker)

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> RestrictedBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- introspection (tests, metrics, operators) -----------------------------------------

    async def wait_ready(self) -> None:
        """Start the worker pool (it starts lazily otherwise) and wait until every worker is ready."""
        await self._pool.wait_ready()

    def pool_snapshot(self) -> dict[str, Any]:
        """Workers (id, pid, invocations, warm digests), queue length, replaced/recycled counts."""
        return self._pool.snapshot()

    def _worker(self, worker_id: int) -> WorkerProcess | None:
        return self._pool.worker(worker_id)
