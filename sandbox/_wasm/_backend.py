"""The wasm backend: CPython (componentize-py runner) in wasmtime, one Store per sandbox.

Design note. Approaches measured (see ``shared/reference/wasm-sandbox.md``): a ready-made
``python.wasm`` exports only ``_start`` (no host calls, one shot), and building one component per
tenant costs ~10 s each. So one generic runner is built per install and tenant code is *data*:
``prepare`` compiles a bundle's sources to marshalled code objects inside a throwaway guest (the
derived form, cached by the platform), and ``load`` instantiates the runner from its copy-on-write
memory image (~0.7 ms) and unmarshals/execs that code. Guest code runs on the backend's worker
threads (wasmtime releases the GIL), never on the event loop; host calls arrive on that thread and
are routed to the invocation it is serving through a thread-local handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Linker

from .._errors import LimitExceededError, LoadError, SandboxClosedError, SandboxCrashError, SandboxError
from .._limits import DEFAULT_LIMITS, Limits
from .._protocol import Bundle
from . import _build
from ._ffi import HostFunction, HostHandler, call_export
from ._sandbox import Invocation, WasmSandbox, translate_trap
from ._threads import GuestThreads
from ._ticker import EpochTicker

_DERIVED_PREFIX = b"tenantflow-wasm:"
_SPARE_MIN_MEMORY = 48 * 1024 * 1024
_ENGINE_SETTINGS = {"epoch_interruption": True, "memory_init_cow": True}
"""The engine ``Config``; it is part of the ``.cwasm`` cache key (compiled code depends on it)."""
_PREPARE_LIMITS = DEFAULT_LIMITS.override(memory_bytes=256 * 1024 * 1024, cpu_seconds=20.0, wall_seconds=30.0)


def _refusing_handler(name: str, payload: str, ctx: Any) -> tuple[bool, str]:
    return False, "ERuntimeError\nsteps and bindings are not available while the bundle loads"


class _Runtime:
    """What every sandbox of one backend shares: engine, compiled runner, linker, export indices."""

    def __init__(self, cache_dir: Path | None, current: Any) -> None:
        config = Config()
        for setting, value in _ENGINE_SETTINGS.items():
            setattr(config, setting, value)
        self.engine = Engine(config)
        wasm = _build.ensure_runner_wasm(cache_dir)
        self.component = self._compiled(wasm, cache_dir or _build.cache_dir())
        self.host_function = HostFunction(current)
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        with self.linker.root() as root, root.add_instance(_build.HOST_INTERFACE) as host:
            self.host_function.define(host, "call")
        self.exports = {name: self.component.get_export_index(name) for name in ("compile", "load", "invoke")}

    def _compiled(self, wasm: Path, directory: Path) -> Component:
        config_key = hashlib.sha256(json.dumps(_ENGINE_SETTINGS, sort_keys=True).encode()).hexdigest()[:12]
        version = _build.tool_version("wasmtime")
        cwasm = directory / f"{wasm.stem}-wasmtime{version}-{config_key}.cwasm"
        if _build.verified(cwasm):
            with contextlib.suppress(WasmtimeError):
                return Component.deserialize_file(self.engine, str(cwasm))
        with _build.build_lock(directory):
            if _build.verified(cwasm):
                with contextlib.suppress(WasmtimeError):
                    return Component.deserialize_file(self.engine, str(cwasm))
            print(
                "tenantflow: compiling the wasm runner for this machine (first use, ~5 s)...", file=sys.stderr
            )
            component = Component.from_file(self.engine, str(wasm))
            tmp = directory / f".{cwasm.name}.{threading.get_ident()}.tmp"
            tmp.write_bytes(component.serialize())
            _build.publish(tmp, cwasm)
        return Component.deserialize_file(self.engine, str(cwasm))


class WasmBackend:
    """Sandboxes running tenant Python on CPython-in-wasmtime. See the module docstring."""

    name = "wasm"

    def __init__(
        self, *, cache_dir: str | Path | None = None, max_threads: int = 8, spare_instances: int = 2
    ) -> None:
        """``cache_dir`` overrides ``$TENANTFLOW_CACHE_DIR``; ``max_threads`` bounds guest threads;
        ``spare_instances`` runner instances are kept instantiated ahead of ``load`` (0: none)."""
        self._cache_dir = Path(cache_dir) / "wasm" if cache_dir is not None else None
        self.threads = GuestThreads(max_threads)
        self._refill_threads = GuestThreads(1, name="tenantflow-wasm-spares", nice=19)
        self.local = threading.local()
        self._spare_target = spare_instances
        self._spares: deque[tuple[Store, Any]] = deque()
        self._spare_lock = threading.Lock()
        self._refilling = False
        self._runtime: _Runtime | None = None
        self._init_lock = threading.Lock()
        self._ticker: EpochTicker | None = None
        self._closed = False
        self._version: str | None = None

    # ------------------------------------------------------------------ setup

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = f"{_build.runner_key()}-wasmtime{_build.tool_version('wasmtime')}"
        return self._version

    def warm_up(self) -> None:
        """Build/compile the runner now (blocking; the first ``prepare``/``load`` does it otherwise)."""
        self._rt()

    def _rt(self) -> _Runtime:
        runtime = self._runtime
        if runtime is not None:
            return runtime
        with self._init_lock:
            if self._closed:
                raise SandboxError("the wasm backend is closed")
            if self._runtime is None:
                runtime = _Runtime(self._cache_dir, self._current_handler)
                self._ticker = EpochTicker(runtime.engine)
                self._ticker.start()
                self._runtime = runtime
            return self._runtime

    def _current_handler(self) -> Any:
        return getattr(self.local, "handler", None)

    @contextlib.contextmanager
    def serving(self, handler: HostHandler) -> Iterator[None]:
        """Route host calls made on this thread to ``handler`` while the guest runs."""
        local = self.local
        previous = getattr(local, "handler", None)
        local.handler = handler
        try:
            yield
        finally:
            local.handler = previous

    def _instantiate(self, limits: Limits) -> tuple[Store, Any]:
        runtime = self._rt()
        store = Store(runtime.engine)
        store.set_wasi(WasiConfig())  # nothing granted: no preopens, env, args, network, stdio
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_epoch_deadline(Invocation(None, limits).deadline_ticks())
        try:
            instance = runtime.linker.instantiate(store, runtime.component)
        except WasmtimeError as exc:
            store.close()
            if "memory" in str(exc):
                raise LimitExceededError(
                    "memory", f"{limits.memory_bytes} bytes is below the runner's baseline memory"
                ) from None
            raise SandboxCrashError("could not instantiate the wasm runner") from exc
        return store, instance

    def _new_store(self, limits: Limits) -> tuple[Store, Any]:
        """A fresh runner instance: a spare one when available (then refilled in the background)."""
        spare = None
        # Small caps go the slow way so that a cap below the runner's baseline fails cleanly.
        if self._spare_target and limits.memory_bytes >= _SPARE_MIN_MEMORY:
            with self._spare_lock:
                if self._spares:
                    spare = self._spares.popleft()
        if spare is None:
            return self._instantiate(limits)
        store, instance = spare
        try:
            store.set_limits(memory_size=limits.memory_bytes)
        except WasmtimeError:
            store.close()
            return self._instantiate(limits)
        return store, instance

    def _schedule_refill(self) -> None:
        """Refill the spares *after* a load: instantiating (mmap-heavy) while a load runs would
        stall that load's page faults on the process's memory-map lock."""
        if not self._spare_target:
            return
        with self._spare_lock:
            if self._refilling or self._closed or len(self._spares) >= self._spare_target:
                return
            self._refilling = True
        self._refill_threads.submit_background(self._refill)

    def _refill(self) -> None:
        """Keep ``spare_instances`` instantiated, already-entered runners ready for ``load``."""
        try:
            while not self._closed:
                with self._spare_lock:
                    if len(self._spares) >= self._spare_target:
                        return
                store, instance = self._instantiate(DEFAULT_LIMITS)
                # Enter the guest once (a no-op call): the first entry into a fresh instance costs
                # ~0.4 ms of page faults that a cold start should not pay.
                func = instance.get_func(store, self._rt().exports["invoke"])
                with self.serving(_refusing_handler):
                    call_export(store, func, "{}")
                with self._spare_lock:
                    if self._closed:
                        store.close()
                        return
                    self._spares.append((store, instance))
        except (WasmtimeError, SandboxError):
            return
        finally:
            with self._spare_lock:
                self._refilling = False

    def release(self, store: Any) -> None:
        store.close()

    # ------------------------------------------------------------------ protocol

    async def prepare(self, bundle: Bundle) -> bytes:
        request = _bundle_request(bundle)
        try:
            future = self.threads.submit(asyncio.get_running_loop(), self._prepare_sync, request)
        except RuntimeError:
            raise SandboxClosedError("the wasm backend is closed") from None
        payload = await future
        return _DERIVED_PREFIX + self.version.encode() + b"\n" + payload.encode("ascii")

    def _prepare_sync(self, request: str) -> str:
        store, instance = self._instantiate(_PREPARE_LIMITS)
        inv = Invocation(None, _PREPARE_LIMITS)
        try:
            func = instance.get_func(store, self._rt().exports["compile"])
            with self.serving(_refusing_handler):
                ok, text = call_export(store, func, request, result="result")
        except WasmtimeError as exc:
            error = translate_trap(exc, inv)
            raise LoadError(f"compiling the bundle failed: {error}") from None
        finally:
            store.close()
        if not ok:
            raise _load_error(text)
        return str(text)

    async def load(self, bundle: Bundle, *, limits: Limits, derived: bytes | None = None) -> WasmSandbox:
        payload = self._derived_payload(derived)
        if payload is not None:
            try:
                return await self._load_payload(bundle, payload, limits)
            except _UnusableDerivedForm:
                pass  # corrupt cache entry: compile the bundle again below
        payload = self._derived_payload(await self.prepare(bundle))
        assert payload is not None
        return await self._load_payload(bundle, payload, limits)

    async def _load_payload(self, bundle: Bundle, payload: str, limits: Limits) -> WasmSandbox:
        loop = asyncio.get_running_loop()
        try:
            future = self.threads.submit(loop, self._load_sync, bundle.digest, payload, limits)
        except RuntimeError:
            raise SandboxClosedError("the wasm backend is closed") from None
        try:
            return await future
        finally:
            # Only now: instantiating while the load ran (or while its result travelled back to
            # the loop) would slow this cold start down instead of the next one.
            self._schedule_refill()

    def _derived_payload(self, derived: bytes | None) -> str | None:
        """The runner payload of a derived form made by this runner version, else None (recompile)."""
        if not derived or not derived.startswith(_DERIVED_PREFIX):
            return None
        header, _, payload = derived.partition(b"\n")
        if header[len(_DERIVED_PREFIX) :].decode("ascii", "replace") != self.version:
            return None
        return payload.decode("ascii")

    def _load_sync(self, digest: str, payload: str, limits: Limits) -> WasmSandbox:
        runtime = self._rt()
        store, instance = self._new_store(limits)
        options = json.dumps({"result_bytes": limits.result_bytes, "output_bytes": limits.output_bytes})
        inv = Invocation(None, limits)
        store.set_epoch_deadline(inv.deadline_ticks())  # importing tenant code is guest CPU too
        try:
            load = instance.get_func(store, runtime.exports["load"])
            invoke = instance.get_func(store, runtime.exports["invoke"])
            with self.serving(inv.handle):
                ok, text = call_export(store, load, options, payload, result="result")
        except WasmtimeError as exc:
            store.close()
            error = translate_trap(exc, inv)
            if isinstance(error, LimitExceededError):
                raise error from None
            raise LoadError(f"loading the bundle failed: {error}") from None
        except BaseException:
            store.close()
            raise
        if not ok:
            store.close()
            raise _load_error(text)
        return WasmSandbox(self, store, invoke, limits, digest)

    async def aclose(self) -> None:
        with self._init_lock:
            self._closed = True
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            await asyncio.to_thread(ticker.stop)
        with self._spare_lock:
            spares, self._spares = list(self._spares), deque()
        for store, _instance in spares:
            store.close()
        self.threads.close()
        self._refill_threads.close()

    async def __aenter__(self) -> WasmBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _bundle_request(bundle: Bundle) -> str:
    sources: dict[str, str] = {}
    for path, content in bundle.files.items():
        if not path.endswith(".py"):
            continue
        try:
            sources[path] = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"not valid UTF-8 ({exc.reason})", file=path) from None
    if bundle.entry not in sources:
        raise LoadError(f"the bundle has no entry module {bundle.entry!r}", file=bundle.entry)
    return json.dumps({"files": sources, "entry": bundle.entry})


class _UnusableDerivedForm(LoadError):
    """The runner could not decode a derived form (corrupt cache entry): recompile the bundle."""


def _load_error(text: str | None) -> LoadError:
    try:
        data = json.loads(text or "{}")
        if isinstance(data, dict) and data.get("derived") is True:
            return _UnusableDerivedForm("the derived form is unusable")
        message = str(data.get("message") or "the bundle could not be loaded")[:4096]
        file = data.get("file") if isinstance(data.get("file"), str) else None
        line = data.get("line") if type(data.get("line")) is int else None
    except (ValueError, AttributeError):
        message, file, line = "the bundle could not be loaded", None, None
    return LoadError(message, file=file, line=line)
