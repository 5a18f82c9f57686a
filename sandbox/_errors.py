"""Errors raised by sandboxes, as the host sees them.

    SandboxError                      root of everything this package raises
    ├── LoadError                     the bundle could not be loaded (tenant file:line)
    ├── TenantError                   the tenant's own code raised (type, message, traceback)
    ├── LimitExceededError            a hard limit fired (cpu, memory, output, result_size, host_calls, wall)
    ├── SandboxCrashError             the sandbox itself failed (trap, dead worker); it is discarded
    └── SandboxClosedError            invoke() on a sandbox that was closed

Backend-specific failures (wasmtime traps, RestrictedPython messages, worker pipe errors) are
translated into these types at the backend boundary and never leave ``sandbox/``.
Every message is safe to show to the tenant: no host frames, no host paths.
"""

from __future__ import annotations

from typing import Literal

LimitName = Literal["cpu", "memory", "output", "result_size", "host_calls", "wall", "recursion"]


class SandboxError(Exception):
    """Root of every error raised by ``sandbox``."""


class LoadError(SandboxError):
    """The tenant's bundle could not be loaded (syntax error, import error, missing ``run``)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")
        self.message = message
        self.file = file
        self.line = line


class TenantError(SandboxError):
    """The tenant's code raised an exception that it did not handle.

    ``type_name`` is the tenant's exception class name (e.g. ``ValueError`` or the tenant's own
    ``PaymentDeclined``), ``traceback`` contains only frames from the tenant's own files.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class LimitExceededError(SandboxError):
    """A sandbox limit fired. The tenant cannot catch or disable it."""

    def __init__(self, limit: LimitName, message: str) -> None:
        super().__init__(f"{limit} limit exceeded: {message}")
        self.limit: LimitName = limit
        self.message = message


class SandboxCrashError(SandboxError):
    """The sandbox failed in a way that is not the tenant's exception: it has been discarded."""


class SandboxClosedError(SandboxError):
    """The sandbox was closed; load a new one."""
