"""The sandbox protocol: what every backend (wasm, restricted, in-process test) implements.

Design note. Host calls are *synchronous* and are made on the thread that runs the guest, never on
the event loop thread: guest code always runs off the event loop (the wasm backend in a worker
thread with the GIL released, the restricted backend in a worker process whose pipe is served by a
thread). The host side of a call (``HostBridge.call``) is therefore a plain function; a bridge that
needs the event loop hops to it itself (see ``LoopBridge``). This keeps the hot path (a memoized
step on replay) free of thread hops when the bridge can answer from memory.

The host call vocabulary (names and JSON shapes) is documented in ``_hostcalls.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._limits import Limits

JSON = Any
T = TypeVar("T")
"""A value made only of dict (str keys), list, str, int, float, bool and None."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """The files of one artifact version, as handed to a sandbox."""

    digest: str
    """The artifact version digest (``sha256:...``); the identity of this code."""
    files: Mapping[str, bytes]
    """Relative POSIX path -> content. Only ``.py`` files are importable; the rest is data."""
    entry: str = "main.py"
    """The entry module's path; it must define ``run(event, step)``."""


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What one invocation of ``run(event, step)`` produced."""

    output: JSON
    """The JSON value ``run`` returned (exact JSON types, size-capped)."""
    stdout: str = ""
    """Captured ``print``/stdout/stderr text, capped at ``Limits.output_bytes``."""
    output_truncated: bool = False
    """True when the captured text hit the cap (a marker was appended)."""
    host_calls: int = 0
    """Host calls made during the invocation."""
    stats: Mapping[str, float] = field(default_factory=dict)
    """Backend-specific timings (``guest_ms``, ...), for metrics only."""
    suspended: bool = False
    """True when the host answered ``suspend`` during the invocation (``output`` is then None).
    The host's own record stays authoritative; this saves the caller from tracking it."""


class HostCallError(Exception):
    """Raised by a ``HostBridge`` to make the guest's host call fail.

    The guest sees an exception of class ``type_name`` (default ``HostError``) with ``message``;
    nothing else of the host crosses over.
    """

    def __init__(self, message: str, *, type_name: str = "HostError") -> None:
        super().__init__(message)
        self.message = message
        self.type_name = type_name


class HostBridge(Protocol):
    """The host side of every call the guest makes (steps, bindings, logs).

    ``call`` runs on the sandbox's execution thread, not on the event loop. It returns a JSON value
    or raises ``HostCallError``; any other exception is treated as a host bug and crashes the
    invocation with ``SandboxCrashError`` (never shown to the tenant).
    """

    def call(self, name: str, args: JSON) -> JSON: ...


class LoopBridge:
    """Adapts an async host-call handler to ``HostBridge`` by running it on an event loop."""

    def __init__(
        self, handler: Callable[[str, JSON], Awaitable[JSON]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._handler = handler
        self._loop = loop

    def call(self, name: str, args: JSON) -> JSON:
        return run_on_loop(self._coro(name, args), self._loop)

    async def _coro(self, name: str, args: JSON) -> JSON:
        return await self._handler(name, args)


def run_on_loop(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop, timeout: float | None = None
) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result.

    Unlike ``asyncio.run_coroutine_threadsafe``, the task starts in a fresh, empty context: the
    calling (guest) thread's context variables, such as the tenant SDK's deterministic clock, must
    never leak into host code. ``timeout`` bounds the wait (``TimeoutError``; the task goes on); a
    closed loop raises ``RuntimeError``.
    """
    result: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(coro, context=contextvars.Context())

        def done(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                result.cancel()
            elif (exc := task.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(task.result())

        task.add_done_callback(done)

    try:
        loop.call_soon_threadsafe(start, context=contextvars.Context())
    except RuntimeError:  # the loop is closed: nothing will ever run the coroutine
        coro.close()
        raise
    return result.result(timeout)


@runtime_checkable
class Sandbox(Protocol):
    """One loaded tenant version. Serves one invocation at a time; reusable while ``alive``."""

    @property
    def alive(self) -> bool:
        """False once closed or after a trap-class failure (the owner must discard it)."""
        ...

    async def invoke(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        """Run the tenant's ``run(event, step)`` once.

        Raises ``TenantError``, ``LimitExceededError``, ``SandboxCrashError`` or ``SandboxClosedError``.
        """
        ...

    async def aclose(self) -> None:
        """Release the sandbox. Idempotent."""
        ...


@runtime_checkable
class SandboxBackend(Protocol):
    """A factory of sandboxes of one kind (``wasm``, ``restricted``, ``inprocess``)."""

    name: str
    """Backend name as used in tenant policy."""

    @property
    def version(self) -> str:
        """Changes whenever derived forms produced by ``prepare`` would change (runner, tool versions)."""
        ...

    async def prepare(self, bundle: Bundle) -> bytes:
        """Produce the backend's faster-loading derived form of a bundle (e.g. compiled bytecode).

        Raises ``LoadError`` when the bundle cannot be loaded. The result is cached by the platform,
        keyed by (bundle digest, backend name, backend version); it is never accepted from uploaders.
        """
        ...

    async def load(self, bundle: Bundle, *, limits: Limits, derived: bytes | None = None) -> Sandbox:
        """Load a bundle into a fresh sandbox, using ``derived`` from ``prepare`` when given."""
        ...

    async def aclose(self) -> None:
        """Stop the backend (worker processes, ticker threads). Idempotent."""
        ...
