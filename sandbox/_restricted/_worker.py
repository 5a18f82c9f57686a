"""The worker process: runs RestrictedPython-compiled tenant code under rlimits.

Started by ``_pool.py`` with ``python -s -P -B -c`` (a fresh interpreter, never a fork of the
threaded parent), an environment holding only ``PYTHONHASHSEED=0`` (the SDK's replay guarantee
needs a fixed str hash seed; it is removed from ``os.environ`` at startup), its own session and
process group, and the IPC pipe on stdin/stdout. At startup it sets ``PR_SET_NO_NEW_PRIVS``,
``PR_SET_DUMPABLE`` 0, ``RLIMIT_CORE`` 0, ``RLIMIT_FSIZE`` 0, ``RLIMIT_NPROC`` 0, a small
``RLIMIT_NOFILE`` and hard ceilings for ``RLIMIT_AS`` and
``RLIMIT_CPU``; per invocation it lowers the soft limits to the sandbox's ``Limits`` and arms
``ITIMER_PROF`` with the CPU budget (``SIGPROF`` keeps its default action: the kernel ends the
process when the budget is spent, and nothing in Python can catch it). A ``MemoryError`` anywhere
ends the process with ``EXIT_MEMORY`` (see ``_policy.exc_guard``).

Everything the parent sends is trusted; everything this process sends is treated by the parent as
untrusted (a tenant that escaped RestrictedPython controls this process).
"""

from __future__ import annotations

import base64
import collections
import decimal
import json
import math
import os
import resource
import signal
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from . import _frames, _runtime
from ._compile import Derived, load_derived
from ._modules import Importer, TenantModule, preload
from ._policy import (
    ForeignTenantSignal,
    LimitSignal,
    die_of_memory,
    exc_guard,
    make_builtins,
    make_globals,
    tenant_guard,
    tenant_owner_check,
)

MAX_INBOUND_FRAME = 256 * 1024 * 1024
_CALL_OVERHEAD = 64 * 1024
"""Room for a host call's name and keys around an argument of the full result size."""
TENANT_MODULE_PREFIX = "tenantflow_tenant."
_STANDIN = types.ModuleType("tenantflow_tenant")
_sdk = _runtime.sdk


def make_print_factory(worker: Worker, tenant: Tenant) -> Callable[..., Any]:
    """``_print_`` for RestrictedPython: the tenant's ``print`` lands in its invocation's capture
    (and nowhere while another tenant's invocation is current)."""

    class _Printer:
        __slots__ = ("_getattr",)
        _tf_opaque = True

        def __init__(self, _getattr_: Any = None) -> None:
            self._getattr = _getattr_

        def write(self, text: str) -> None:
            if worker.current is tenant:
                worker.output.write(text)

        def __call__(self) -> str:
            return ""

        def _call_print(self, *objects: Any, **kwargs: Any) -> None:
            if kwargs.get("file") is None:
                kwargs["file"] = self
            else:
                self._getattr(kwargs["file"], "write")
            kwargs.pop("flush", None)
            print(*objects, **kwargs)

    return _Printer


def _load_failure_from(exc: BaseException, files: frozenset[str]) -> Any:
    """The SDK's LoadFailure (file, line, message) for an exception raised while importing."""
    public = getattr(_sdk, "load_failure_from", None)
    if public is not None:
        return public(exc, files)
    file, line = _sdk._innermost_tenant_frame(exc.__traceback__, files)
    return _sdk.LoadFailure(f"{type(exc).__name__}: {_sdk._safe_str(exc)}", file, line)


class LoadFailure(Exception):
    def __init__(self, message: str, file: str | None, line: int | None) -> None:
        super().__init__(message)
        self.message, self.file, self.line = message, file, line


class Tenant:
    """One loaded bundle in this worker: modules, builtins, importer, SDK runtime (never shared)."""

    def __init__(self, derived: Derived, worker: Worker) -> None:
        self.derived = derived
        self.files = frozenset(path for path, _code, _src in derived.modules.values())
        self.modules: dict[str, TenantModule] = {}
        self.runtime = _runtime.new_runtime(self._host_call, self.files)
        self._worker = worker
        self._guard = tenant_guard(self._is_current)
        self.importer = Importer(_runtime.providers(self.runtime), self._module)
        self.builtins = make_builtins(self.importer)
        self._print_factory = make_print_factory(worker, self)
        self._owner = tenant_owner_check(self._is_current)
        self.run: Any = None

    def _is_current(self) -> bool:
        return self._worker.current is self

    def _host_call(self, name: str, args: Any) -> Any:
        if self._worker.current is not self:
            raise ForeignTenantSignal()
        return self._worker.host_call(name, args)

    def _module(self, name: str) -> TenantModule | None:
        module = self.modules.get(name)
        if module is not None:
            return module
        spec = self.derived.modules.get(name)
        if spec is None:
            return None
        # RestrictedPython compiles with postponed annotations (PEP 563), and dataclasses resolve
        # string annotations through sys.modules[cls.__module__]: give tenant modules a private
        # name with an empty stand-in there (tenant code can read neither).
        internal_name = f"{TENANT_MODULE_PREFIX}{name}"
        sys.modules.setdefault(internal_name, _STANDIN)
        namespace = make_globals(internal_name, self.builtins, self._print_factory, self._guard, self._owner)
        is_package = spec[0] == "__init__.py" or spec[0].endswith("/__init__.py")
        namespace["__package__"] = name if is_package else name.rpartition(".")[0]
        module = TenantModule(name, namespace)
        self.modules[name] = module
        if "." in name:
            parent, child = name.rsplit(".", 1)
            parent_module = self._module(parent)
            if parent_module is not None:
                object.__getattribute__(parent_module, "_TenantModule__globals").setdefault(child, module)
        exec(spec[1], namespace)
        return module

    def load(self) -> None:
        """Execute the entry module (and what it imports); find ``run``. Raises LoadFailure."""
        token = _sdk._ACTIVE.set(self.runtime)  # deterministic clock/random at import, as in wasm
        try:
            entry = self._module(self.derived.entry)
        except BaseException as exc:
            exc_guard()  # memory ends the worker; recursion and other signals propagate
            failure = _load_failure_from(exc, self.files)
            raise LoadFailure(failure.message, failure.file, failure.line) from None
        finally:
            _sdk._ACTIVE.reset(token)
        assert entry is not None
        run = object.__getattribute__(entry, "_TenantModule__globals").get("run")
        if not callable(run):
            path = self.derived.modules[self.derived.entry][0]
            raise LoadFailure("the entry module must define run(event, step)", path, None)
        self.run = run


class Worker:
    def __init__(
        self, config: dict[str, Any], reader: _frames.FrameReader, write_fd: int, statm_fd: int
    ) -> None:
        self.reader = reader
        self.spin = _frames.Spin(int(config.get("spin_us", 0)) / 1e6)
        """Waiting for a host call's answer polls first (``PoolConfig.spin_us``); idle waits never do."""
        self.write_fd = write_fd
        self.statm_fd = statm_fd
        self.lru_size = int(config["lru_size"])
        self.as_hard = int(config["as_hard"])
        self.cpu_hard = int(config["cpu_hard"])
        self.tenants: collections.OrderedDict[str, Tenant] = collections.OrderedDict()
        self.output: Any = _sdk.OutputCapture(0)
        self.cpu_soft = 0
        self.current: Tenant | None = None
        self.page_size = resource.getpagesize()
        self.result_bytes = 1 << 20
        self.max_call_bytes = self.result_bytes + _CALL_OVERHEAD

    # --- IPC ---------------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        _frames.write_all(self.write_fd, _frames.encode(message))

    def receive(self, spin: _frames.Spin | None = None) -> Any:
        return self.reader.read(MAX_INBOUND_FRAME, spin)[0]

    def host_call(self, name: str, args: Any) -> Any:
        """The SDK's transport: one synchronous round trip to the parent's bridge."""
        exc_guard()  # the SDK may be reporting a limit it caught from a step callback
        try:
            frame = _frames.encode({"t": "call", "n": name, "a": args})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"host call arguments must be JSON: {exc}") from None
        if len(frame) > self.max_call_bytes:  # the same limit as the wasm backend's, not catchable
            raise LimitSignal("result_size", f"a host call argument exceeds {self.result_bytes} bytes")
        _frames.write_all(self.write_fd, frame)
        reply = self.receive(self.spin)
        if reply is None:
            os._exit(0)
        if "v" in reply:
            return reply["v"]
        if "limit" in reply:
            raise LimitSignal(reply["limit"], reply.get("m", ""))
        raise _sdk.HostCallFailed(str(reply.get("type", "HostError")), str(reply.get("m", "")))

    # --- limits ------------------------------------------------------------------------------

    def arm(self, limits: dict[str, Any]) -> None:
        cpu = float(limits["cpu"])
        # RLIMIT_CPU is the kernel's backstop (whole seconds); ITIMER_PROF is the precise budget.
        needed = math.ceil(time.process_time() + cpu) + 1
        if needed > self.cpu_soft or self.cpu_soft > needed + 60:
            self.cpu_soft = min(self.cpu_hard - 1, needed)  # below hard: SIGXCPU, not SIGKILL
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_soft, self.cpu_hard))
        vm = int(os.pread(self.statm_fd, 32, 0).split(maxsplit=1)[0]) * self.page_size
        resource.setrlimit(resource.RLIMIT_AS, (min(self.as_hard, vm + int(limits["mem"])), self.as_hard))
        decimal.setcontext(decimal.Context())
        signal.setitimer(signal.ITIMER_PROF, cpu)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        resource.setrlimit(resource.RLIMIT_AS, (self.as_hard, self.as_hard))

    # --- requests ----------------------------------------------------------------------------

    def tenant(self, message: dict[str, Any]) -> Tenant | None:
        digest = message["d"]
        tenant = self.tenants.get(digest)
        if tenant is not None:
            self.tenants.move_to_end(digest)
            return tenant
        code = message.get("code")
        if code is None:
            return None
        tenant = Tenant(load_derived(base64.b64decode(code), digest), self)
        self.current = tenant
        tenant.load()
        self.tenants[digest] = tenant
        while len(self.tenants) > self.lru_size:
            self.tenants.popitem(last=False)
        return tenant

    def handle_load(self, message: dict[str, Any]) -> dict[str, Any]:
        self.output = _sdk.OutputCapture(int(message["limits"]["out"]))
        self.arm(message["limits"])
        try:
            self.tenant(message)
        except LoadFailure as exc:
            return {"t": "load_error", "m": exc.message, "file": exc.file, "line": exc.line}
        except LimitSignal as sig:
            return {"t": "limit", "limit": sig.limit, "m": sig.message}
        except RecursionError:
            return {"t": "limit", "limit": "recursion", "m": "maximum recursion depth exceeded"}
        except MemoryError:
            die_of_memory()
        except BaseException as exc:
            return {"t": "load_error", "m": f"{type(exc).__name__} while loading the bundle"}
        finally:
            self.current = None
            self.disarm()
        return {"t": "loaded"}

    def handle_invoke(self, message: dict[str, Any]) -> bytes:
        started = time.perf_counter()
        cpu_start = time.process_time()
        limits = message["limits"]
        self.result_bytes = int(limits["res"])
        self.max_call_bytes = self.result_bytes + _CALL_OVERHEAD
        self.output = _sdk.OutputCapture(int(limits["out"]))
        self.arm(limits)
        tenant = None
        try:
            try:
                tenant = self.tenant(message)
            except LoadFailure as exc:
                where = f"{exc.file}:{exc.line}: " if exc.file and exc.line else ""
                return _frames.encode(
                    {"status": "error", "error": {"type": "ImportError", "message": where + exc.message}}
                )
            if tenant is None:
                return _frames.encode({"status": "missing"})
            self.current = tenant
            runtime = tenant.runtime
            runtime.configure(result_bytes=int(limits["res"]), output_bytes=int(limits["out"]))
            self.output = runtime.output
            outcome = runtime.invoke(tenant.run, message["event"], capture_stdio=False)
        except LimitSignal as sig:
            outcome = {"status": "limit", "limit": sig.limit, "message": sig.message}
        except RecursionError:
            outcome = {"status": "limit", "limit": "recursion", "message": "maximum recursion depth exceeded"}
        except MemoryError:
            die_of_memory()
        except BaseException as exc:  # e.g. ``raise GeneratorExit()``: the SDK only owns Exception
            outcome = {"status": "error", "error": tenant.runtime.describe_error(exc) if tenant else {}}
        finally:
            self.current = None
            self.disarm()
        if outcome.get("status") == "limit" and outcome.get("limit") == "memory":
            die_of_memory()
        error = outcome.get("error")
        if isinstance(error, dict) and error.get("type") == "RecursionError":
            outcome = {"status": "limit", "limit": "recursion", "message": "maximum recursion depth exceeded"}
        outcome["stdout"] = self.output.getvalue()
        outcome["stdout_truncated"] = self.output.truncated
        outcome["stats"] = {
            "guest_ms": (time.perf_counter() - started) * 1000.0,
            "cpu_ms": (time.process_time() - cpu_start) * 1000.0,
        }
        output_json = outcome.pop("output_json", None)
        if output_json is None:
            return _frames.encode(outcome)
        head = _frames.encode_text(outcome)
        body = (head[:-1] + ',"output":' + output_json + "}").encode("utf-8")
        return _frames.pack(body)

    def serve(self) -> None:
        self.send({"t": "ready", "pid": os.getpid()})
        while True:
            message = self.receive()
            if message is None or message["t"] == "exit":
                return
            kind = message["t"]
            if kind == "invoke":
                _frames.write_all(self.write_fd, self.handle_invoke(message))
            elif kind == "load":
                self.send(self.handle_load(message))


def _set_limit(which: int, soft: int, hard: int) -> None:
    try:
        resource.setrlimit(which, (soft, hard))
    except (ValueError, OSError):  # e.g. a container that already set a lower hard limit
        _soft, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft = min(soft, current_hard)
            hard = current_hard
        resource.setrlimit(which, (soft, hard))


def _unraisable(info: Any) -> None:
    """Errors nobody can catch (in finalizers): a MemoryError is still the memory limit."""
    if isinstance(info.exc_value, MemoryError):
        die_of_memory()


def _harden_process() -> None:
    """No new privileges (setuid binaries) and not dumpable: a tenant that escaped into another
    worker of the same user cannot ptrace this one or read its memory through /proc."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    except (OSError, AttributeError):  # not Linux: rlimits still apply
        pass


def main() -> None:
    config = json.loads(sys.argv[1])
    os.environ.clear()
    _harden_process()
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _set_limit(resource.RLIMIT_FSIZE, 0, 0)
    _set_limit(resource.RLIMIT_NPROC, 0, 0)  # no fork/clone (ignored for root)
    read_fd, write_fd = os.dup(0), os.dup(1)
    null_fd = os.open(os.devnull, os.O_RDWR)
    os.dup2(null_fd, 0)
    os.dup2(null_fd, 1)
    os.close(null_fd)
    sys.stdout = sys.stderr
    sys.unraisablehook = _unraisable
    _runtime.install()
    preload()
    statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
    nofile = max(read_fd, write_fd, statm_fd) + 4
    _set_limit(resource.RLIMIT_NOFILE, nofile, nofile)
    vm = int(os.pread(statm_fd, 64, 0).split()[0]) * resource.getpagesize()
    config["as_hard"] = vm + int(config["memory_ceiling"])
    _set_limit(resource.RLIMIT_AS, config["as_hard"], config["as_hard"])
    config["cpu_hard"] = int(config["cpu_ceiling"])
    _set_limit(resource.RLIMIT_CPU, config["cpu_hard"], config["cpu_hard"])
    worker = Worker(config, _frames.FrameReader(read_fd), write_fd, statm_fd)
    try:
        worker.serve()
    except MemoryError:
        die_of_memory()
    os._exit(0)
