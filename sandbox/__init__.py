"""Run untrusted tenant code under hard limits with no ambient authority.

One protocol (``SandboxBackend`` -> ``Sandbox``), several backends: ``wasm`` (CPython in wasmtime,
the strong boundary), ``restricted`` (RestrictedPython in rlimited worker processes) and an
in-process test backend for unit tests of other layers. See ``_protocol.py`` and ``_hostcalls.py``.
"""

from ._errors import (
    LimitExceededError,
    LimitName,
    LoadError,
    SandboxClosedError,
    SandboxCrashError,
    SandboxError,
    TenantError,
)
from ._limits import DEFAULT_LIMITS, Limits
from ._protocol import (
    JSON,
    Bundle,
    HostBridge,
    HostCallError,
    InvokeResult,
    LoopBridge,
    Sandbox,
    SandboxBackend,
)
from ._registry import TENANT_BACKENDS, create_backend

__all__ = [
    "DEFAULT_LIMITS",
    "JSON",
    "TENANT_BACKENDS",
    "Bundle",
    "HostBridge",
    "HostCallError",
    "InvokeResult",
    "LimitExceededError",
    "LimitName",
    "Limits",
    "LoadError",
    "LoopBridge",
    "Sandbox",
    "SandboxBackend",
    "SandboxClosedError",
    "SandboxCrashError",
    "SandboxError",
    "TenantError",
    "create_backend",
]
