"""The in-process test backend: the real tenant SDK, plain ``exec`` of the tenant's sources.

For unit tests of other layers only (the dispatcher, the engine integration): it is *not* an
isolation boundary and is never selectable by a tenant (it is not in ``TENANT_BACKENDS``). It
implements the whole protocol with the same SDK, JSON boundary, host-call vocabulary, host-call
cap, result and output caps as the real backends, so code written against it behaves the same
on ``wasm``. What it cannot do: stop a CPU loop (the wall limit abandons the worker thread and
discards the sandbox), cap memory, fix the str hash seed, or hide the host from the tenant.

Each sandbox keeps its tenant modules in a private table (never in ``sys.modules``), served by a
per-sandbox ``__import__``; ``print`` writes to the SDK's capped capture.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ._errors import (
    LimitExceededError,
    LimitName,
    LoadError,
    SandboxClosedError,
    SandboxCrashError,
    TenantError,
)
from ._hostcalls import STEP_CALLS
from ._limits import Limits
from ._protocol import JSON, Bundle, HostBridge, HostCallError, InvokeResult

# Imported by name so that mypy does not type-check the guest sources (they run in the guest too).
sdk: Any = importlib.import_module("sandbox._guest._tenantflow_sdk")
_PREFIX = b"tenantflow-inprocess:"
_SDK_FILE = Path(__file__).resolve().parent / "_guest" / "_tenantflow_sdk.py"


class _HostAdapter:
    """The SDK's ``host_call`` for one invocation: JSON copies, the host-call cap, error mapping."""

    def __init__(self, bridge: HostBridge | None, limits: Limits) -> None:
        self.bridge = bridge
        self.limits = limits
        self.calls = 0
        self.suspended = False
        self.limit_hit: LimitName | None = None
        self.crash: BaseException | None = None
        self.stopped = False

    def __call__(self, name: str, args: Any) -> Any:
        if self.stopped or self.limit_hit is not None or self.crash is not None:
            raise sdk.AbortSignal("stopped")
        if self.bridge is None:
            raise sdk.HostCallFailed(
                "RuntimeError", "steps and bindings are not available while the bundle loads"
            )
        self.calls += 1
        if self.calls > self.limits.host_calls:
            self.limit_hit = "host_calls"
            raise sdk.AbortSignal("host_calls")
        payload = json.dumps(args, allow_nan=False)
        if len(payload) > self.limits.result_bytes + 64 * 1024:
            self.limit_hit = "result_size"
            raise sdk.AbortSignal("result_size")
        if self.suspended and name in STEP_CALLS:
            return {"action": "suspend"}
        try:
            # A clean context: the SDK's deterministic clock must not leak into host code.
            answer = contextvars.Context().run(self.bridge.call, name, json.loads(payload))
        except HostCallError as exc:
            raise sdk.HostCallFailed(exc.type_name, exc.message) from None
        except BaseException as exc:
            self.crash = exc
            raise sdk.AbortSignal("host") from None
        if name in STEP_CALLS and isinstance(answer, dict) and answer.get("action") == "suspend":
            self.suspended = True
        return json.loads(json.dumps(answer))


class _Loaded:
    """A bundle's modules loaded privately for one sandbox."""

    def __init__(
        self, sources: Mapping[str, str], entry: str, runtime: Any, printer: Callable[..., None]
    ) -> None:
        self.runtime = runtime
        self.names = sdk.files_to_modules(sources)
        self.codes = {
            name: sdk.compile_tenant(path, sources[path]) for name, (path, _pkg) in self.names.items()
        }
        self.modules: dict[str, ModuleType] = {}
        self.builtins = dict(builtins.__dict__, __import__=self._import, print=printer)
        self.entry_module = next(name for name, (path, _pkg) in self.names.items() if path == entry)

    def load(self, name: str) -> ModuleType:
        module = self.modules.get(name)
        if module is not None:
            return module
        parent, _, child = name.rpartition(".")
        if parent:
            self.load(parent)
        path, is_pkg = self.names[name]
        module = ModuleType(name)
        module.__file__ = path
        module.__package__ = name if is_pkg else parent
        module.__builtins__ = self.builtins  # type: ignore[attr-defined]
        if is_pkg:
            module.__path__ = []
        self.modules[name] = module
        try:
            exec(self.codes[name], module.__dict__)
        except BaseException:
            del self.modules[name]
            raise
        if parent:
            setattr(self.modules[parent], child, module)
        return module

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if level:
            package = (globals or {}).get("__package__") or ""
            base = package.rsplit(".", level - 1)[0] if level > 1 else package
            name = f"{base}.{name}" if name else base
        if name == "tenantflow":
            return self.runtime.tenantflow_module
        top = name.partition(".")[0]
        if top in self.names:
            module = self.load(name)
            for item in fromlist or ():
                sub = f"{name}.{item}"
                if sub in self.names and not hasattr(module, item):
                    self.load(sub)
            return module if fromlist else self.modules[top]
        return builtins.__import__(name, globals, locals, fromlist, level)


class InProcessSandbox:
    """A tenant version loaded in this process. Serves one invocation at a time."""

    def __init__(self, loaded: _Loaded, run: Callable[..., Any], limits: Limits) -> None:
        self._loaded: _Loaded | None = loaded
        self._run = run
        self._limits = limits
        self._lock = asyncio.Lock()
        self._adapter: _HostAdapter | None = None

    @property
    def alive(self) -> bool:
        return self._loaded is not None

    async def invoke(self, event: JSON, bridge: HostBridge) -> InvokeResult:
        event = json.loads(json.dumps(event, allow_nan=False))
        async with self._lock:
            loaded = self._loaded
            if loaded is None:
                raise SandboxClosedError("this sandbox was closed or discarded")
            adapter = _HostAdapter(bridge, self._limits)
            loaded.runtime.configure(host_call=adapter)
            task = asyncio.ensure_future(asyncio.to_thread(loaded.runtime.invoke, self._run, event, False))
            try:
                outcome = await asyncio.wait_for(asyncio.shield(task), self._limits.wall_seconds)
            except TimeoutError:
                adapter.stopped = True
                self._loaded = None  # the worker thread is abandoned with its sandbox
                raise LimitExceededError(
                    "wall", f"the invocation ran longer than {self._limits.wall_seconds} s"
                ) from None
        return self._translate(outcome, adapter)

    def _translate(self, outcome: dict[str, Any], adapter: _HostAdapter) -> InvokeResult:
        if adapter.crash is not None:
            raise SandboxCrashError("the host bridge failed while serving a host call") from adapter.crash
        if adapter.limit_hit is not None:
            raise LimitExceededError(adapter.limit_hit, f"the {adapter.limit_hit} limit was reached")
        stdout, truncated = outcome["stdout"], outcome["stdout_truncated"]
        if adapter.suspended:
            return InvokeResult(None, stdout, truncated, adapter.calls, {}, suspended=True)
        status = outcome["status"]
        if status == "ok":
            return InvokeResult(json.loads(outcome["output_json"]), stdout, truncated, adapter.calls, {})
        if status == "error":
            error = outcome["error"]
            raise TenantError(error["type"], error["message"], error["traceback"])
        if status == "limit":
            if outcome["limit"] == "memory":
                self._loaded = None
            raise LimitExceededError(outcome["limit"], outcome.get("message", ""))
        if status == "suspended":
            raise TenantError("RuntimeError", "the workflow suspended without a suspend answer from the host")
        raise SandboxCrashError(f"unexpected outcome {status!r}")

    async def aclose(self) -> None:
        self._loaded = None

    async def __aenter__(self) -> InProcessSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class InProcessBackend:
    """Runs tenant code in this process with the real SDK. For tests of other layers only."""

    name = "inprocess"

    def __init__(self, *, deterministic: bool = True) -> None:
        if deterministic:
            sdk.install_determinism(patch_datetime=False)
        self._version = "inprocess-" + hashlib.sha256(_SDK_FILE.read_bytes()).hexdigest()[:16]

    @property
    def version(self) -> str:
        return self._version

    async def prepare(self, bundle: Bundle) -> bytes:
        sources = _sources(bundle)
        for path, source in sources.items():
            try:
                sdk.compile_tenant(path, source)
            except sdk.LoadFailure as exc:
                raise LoadError(exc.message, file=exc.file, line=exc.line) from None
        return _PREFIX + json.dumps({"files": sources, "entry": bundle.entry}).encode()

    async def load(self, bundle: Bundle, *, limits: Limits, derived: bytes | None = None) -> InProcessSandbox:
        if not derived or not derived.startswith(_PREFIX):
            derived = await self.prepare(bundle)
        request = json.loads(derived[len(_PREFIX) :])
        runtime = sdk.Runtime(
            _HostAdapter(None, limits), result_bytes=limits.result_bytes, output_bytes=limits.output_bytes
        )

        def tenant_print(
            *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
        ) -> None:
            text = (" " if sep is None else sep).join(str(arg) for arg in args) + (
                "\n" if end is None else end
            )
            (file if file is not None and file is not runtime.output else runtime.output).write(text)

        try:
            loaded = _Loaded(request["files"], request["entry"], runtime, tenant_print)
        except sdk.LoadFailure as exc:
            raise LoadError(exc.message, file=exc.file, line=exc.line) from None
        except StopIteration:
            raise LoadError(f"the bundle has no entry module {bundle.entry!r}", file=bundle.entry) from None
        runtime.configure(tenant_files={path for path, _pkg in loaded.names.values()})
        try:
            module = await asyncio.to_thread(loaded.load, loaded.entry_module)
        except Exception as exc:
            failure = sdk.load_failure_from(exc, runtime._tenant_files)
            raise LoadError(failure.message, file=failure.file, line=failure.line) from None
        run = getattr(module, "run", None)
        if not callable(run):
            raise LoadError("the entry module must define run(event, step)", file=bundle.entry)
        return InProcessSandbox(loaded, run, limits)

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> InProcessBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _sources(bundle: Bundle) -> dict[str, str]:
    sources: dict[str, str] = {}
    for path, content in bundle.files.items():
        if path.endswith(".py"):
            try:
                sources[path] = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LoadError(f"not valid UTF-8 ({exc.reason})", file=path) from None
    if bundle.entry not in sources:
        raise LoadError(f"the bundle has no entry module {bundle.entry!r}", file=bundle.entry)
    return sources
