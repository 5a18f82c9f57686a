"""The worker's use of the shared tenant SDK (``sandbox/_guest/_tenantflow_sdk.py``).

The SDK is identical in every backend: it builds the ``step``/``event``/``env`` facades, makes
time, ``random`` and ``uuid4`` deterministic outside step callbacks, checks JSON at the boundary
and formats tenant-only tracebacks. This module wires it into a worker: one ``sdk.Runtime`` per
loaded tenant, the SDK's ``tenantflow`` module and the deterministic stdlib entry points handed
to tenant code as read-only proxies (never the real module objects), and per-tenant generators
for ``random`` inside step callbacks (the SDK falls back to the process-wide ``random`` there,
which two tenants on one worker would share).
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

sdk: Any = importlib.import_module("sandbox._guest._tenantflow_sdk")

Provider = Callable[[], Mapping[str, Any]]

_RANDOM_METHODS = [
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "triangular",
    "gauss",
    "normalvariate",
    "lognormvariate",
    "expovariate",
    "vonmisesvariate",
    "gammavariate",
    "betavariate",
    "paretovariate",
    "weibullvariate",
    "getrandbits",
    "randbytes",
    "seed",
]


def install() -> None:
    """Once per worker process: the SDK's deterministic clock/random/uuid/datetime patches."""
    sdk.install_determinism(patch_datetime=True)


def _random_members() -> dict[str, Any]:
    """``random`` for one tenant: the SDK's deterministic generator in the workflow body, a
    private generator inside step callbacks; never the process-wide instance."""
    own = random.Random()
    det_rng = sdk._det_rng

    def member(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(det_rng() or own, name)(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    members: dict[str, Any] = {name: member(name) for name in _RANDOM_METHODS}
    members["Random"] = random.Random
    return members


def _time_members() -> dict[str, Any]:
    """``time``: the SDK-patched ``time()``/``time_ns()`` (the journal's clock in the body), and
    the derived helpers computed from it, so no entry point reads the host clock behind its back."""
    clock = time.time
    clock_ns = time.time_ns

    def gmtime(secs: float | None = None) -> time.struct_time:
        return time.gmtime(clock() if secs is None else secs)

    def strftime(fmt: str, t: Any = None) -> str:
        return time.strftime(fmt, gmtime() if t is None else t)

    def monotonic() -> float:
        return clock()

    def monotonic_ns() -> int:
        return int(clock_ns())

    return {
        "time": clock,
        "time_ns": clock_ns,
        "gmtime": gmtime,
        "strftime": strftime,
        "monotonic": monotonic,
        "monotonic_ns": monotonic_ns,
        "perf_counter": monotonic,
        "struct_time": time.struct_time,
    }


def providers(tenant_runtime: Any) -> dict[str, Provider]:
    """Per-tenant modules: ``tenantflow`` from the tenant's SDK runtime, ``random``, ``time``."""

    def tenantflow() -> Mapping[str, Any]:
        module = tenant_runtime.tenantflow_module
        return {name: getattr(module, name) for name in module.__all__}

    return {"tenantflow": tenantflow, "random": _random_members, "time": _time_members}


def new_runtime(host_call: Callable[[str, Any], Any], tenant_files: frozenset[str]) -> Any:
    runtime = sdk.Runtime(host_call)
    # The SDK learns tenant files in load_entry(), which this backend does not use (it loads
    # RestrictedPython-compiled modules itself); tracebacks need them to keep tenant frames only.
    try:
        runtime.configure(tenant_files=tenant_files)
    except TypeError:  # an SDK without the tenant_files option
        runtime._tenant_files = tenant_files
    return runtime
