"""The tenant SDK, guest side: what tenant code sees, identical in every backend.

This module is pure Python (3.11-compatible syntax) and imports only the standard library. It runs
inside the wasm guest (CPython 3.14, as the top-level module ``_tenantflow_sdk``) and in the
restricted backend's worker processes (CPython 3.11+, as ``sandbox._guest._tenantflow_sdk``). It
must not import anything from ``sandbox`` or any other tenantflow package.

Everything the SDK does on the host goes through ONE function the backend supplies::

    host_call(name: str, args: JSON) -> JSON

``name`` and the JSON shapes are the vocabulary of ``sandbox/_hostcalls.py``. The function returns
the host's JSON answer (a fresh object: the SDK may keep or mutate it) or raises:

* ``HostCallFailed(type_name, message)``: the host refused the call (``HostCallError`` on the
  host). The SDK re-raises it to the tenant as an ``Exception`` whose class name is ``type_name``.
* ``AbortSignal(reason)``: the host wants this invocation to stop now (host-call cap reached,
  wall deadline, ...). It is a ``BaseException``; the host already knows why and is authoritative.

How a backend wires it
----------------------

1. Once per process: ``install_determinism(patch_datetime=True)`` patches ``time.time``,
   ``time.time_ns``, the module-level ``random`` functions, ``uuid.uuid4`` and (optionally)
   ``datetime.datetime`` with wrappers that consult the runtime active *in the current context*
   (a ``ContextVar``), and fall through to the real functions otherwise (other threads, step
   callbacks, no invocation running). Patching is idempotent. Optionally
   ``install_memory_watch()`` (CPython >= 3.12, ``sys.monitoring``) so that a ``MemoryError``
   fails the invocation even when the tenant catches it. The str hash seed must be fixed by the
   backend itself (``PYTHONHASHSEED=0`` for a worker process; the wasm build bakes one seed).
2. Per sandbox: ``rt = Runtime(host_call, result_bytes=..., output_bytes=...)``. Put
   ``rt.tenantflow_module`` into the tenant's import system as ``tenantflow``
   (``from tenantflow import env, NonRetryableError``).
3. Tenant modules: ``files_to_modules(files)`` maps bundle paths to module names;
   ``compile_tenant(path, source)`` compiles one file with the tenant-visible filename (raises
   ``LoadFailure`` with file/line); ``TenantImporter(modules)`` is a ``sys.meta_path`` finder
   serving those code objects (``import helpers``); ``rt.load_entry(importer, entry_module)``
   imports the entry module and returns its ``run`` (raises ``LoadFailure``). A backend with its
   own compiler (RestrictedPython) may skip these and hand any ``run`` callable to ``invoke``.
4. Per invocation: ``outcome = rt.invoke(run, event)``. It builds fresh ``step`` and ``event``
   facades, activates the deterministic context, redirects ``sys.stdout``/``sys.stderr`` to the
   capped capture (pass ``capture_stdio=False`` if the backend captures output itself and feeds
   ``rt.output.write``), calls ``run(event, step)``, checks the return value is exact JSON under
   the size cap, and never raises (except for a ``BaseException`` the SDK does not own, such as
   ``KeyboardInterrupt``). The outcome is a JSON-able dict:

   * ``{"status": "ok", "output_json": str}``            ``run`` returned; the value, encoded
   * ``{"status": "error", "error": {"type", "message", "traceback"}}``  tenant exception
   * ``{"status": "suspended"}``                          a step answered ``suspend``
   * ``{"status": "aborted", "reason": str}``            the host raised ``AbortSignal``
   * ``{"status": "limit", "limit": name, "message": str}``  ``result_size`` or ``memory``

   plus always ``"stdout": str`` and ``"stdout_truncated": bool``. The host must still treat its
   own records as authoritative (suspension, host-call counts, sizes): a hostile guest can forge
   any outcome. Tracebacks contain only frames whose filename is a tenant file.

Deterministic replay: outside step callbacks the clock reads the journal's boundary time (the
``time`` field of every step answer, initially ``event["timestamp"]``), ``random`` is seeded from
``event["instanceId"]`` and the position in the journal (number of step operations answered so far)
and ``uuid.uuid4`` draws from that generator. Inside step callbacks they are real.
"""

import builtins
import contextvars
import random as _random_module
import sys
import time as _time_module
import uuid as _uuid_module

try:  # Python 3.11 in workers and 3.14 in the guest both have it; keep the import cheap.
    import json as _json
except ImportError:  # pragma: no cover
    raise

__all__ = [
    "AbortSignal",
    "BindingNotGranted",
    "HostCallFailed",
    "LimitSignal",
    "LoadFailure",
    "NonRetryableError",
    "OutputCapture",
    "Runtime",
    "SuspendSignal",
    "TenantImporter",
    "check_json",
    "compile_tenant",
    "files_to_modules",
    "install_determinism",
    "install_memory_watch",
    "load_failure_from",
]

MAX_JSON_DEPTH = 64
"""Nesting depth allowed in a step result or run output."""
MAX_MESSAGE_CHARS = 4096
"""Tenant exception messages are cut to this length."""
TRUNCATION_MARKER = "\n[tenantflow: output truncated at {limit} bytes]\n"


# --------------------------------------------------------------------------- errors and signals


class NonRetryableError(Exception):
    """Raise from a step callback to fail the step at once, without retries."""


class HostCallFailed(Exception):
    """Raised by a backend's ``host_call`` when the host refused the call."""

    def __init__(self, type_name, message):
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message


class BindingNotGranted(AttributeError):
    """``env.<name>`` for a binding the tenant's policy does not grant (``hasattr`` is False)."""


class SuspendSignal(BaseException):
    """The host answered ``suspend``: unwind the workflow body. Not an ``Exception``."""


class AbortSignal(BaseException):
    """The host wants the invocation to stop now. Not an ``Exception``."""

    def __init__(self, reason="aborted"):
        BaseException.__init__(self, reason)
        self.reason = reason


class LimitSignal(BaseException):
    """A guest-side limit fired (result size). Not an ``Exception``."""

    def __init__(self, limit, message):
        BaseException.__init__(self, message)
        self.limit = limit
        self.message = message


class LoadFailure(Exception):
    """The bundle cannot be loaded; ``file``/``line`` point into the tenant's code."""

    def __init__(self, message, file=None, line=None):
        Exception.__init__(self, message)
        self.message = message
        self.file = file
        self.line = line

    def to_json(self):
        return {"message": self.message, "file": self.file, "line": self.line}


_ERROR_CLASSES = {}
_ERROR_CLASSES["BindingNotGranted"] = BindingNotGranted  # one class, raised by the host or by env


def _error_class(type_name):
    """The exception class the tenant sees for a host/step error called ``type_name``."""
    if type_name == "NonRetryableError":
        return NonRetryableError
    known = getattr(builtins, type_name, None)
    if isinstance(known, type) and issubclass(known, Exception):
        return known
    cls = _ERROR_CLASSES.get(type_name)
    if cls is None:
        safe = type_name if type_name.isidentifier() else "HostError"
        cls = type(safe, (Exception,), {"__module__": "tenantflow"})
        _ERROR_CLASSES[type_name] = cls
    return cls


def _raise_error(error):
    name = str(error.get("name") or "Error") if isinstance(error, dict) else "Error"
    message = str(error.get("message") or "") if isinstance(error, dict) else str(error)
    raise _error_class(name)(message)


# --------------------------------------------------------------------------- JSON boundary


_SCALARS = (str, int, float, bool, type(None))


def check_json(value, limit_bytes, what="step result"):
    """Encode ``value`` after checking it is made only of exact JSON types.

    Returns the compact JSON text. Raises ``TypeError``/``ValueError`` for non-JSON values (the
    tenant's bug) and ``LimitSignal("result_size")`` when the encoding exceeds ``limit_bytes``.
    The walk estimates a lower bound of the size, so a huge value is refused before it is encoded.
    """
    budget = 0
    stack = [(value, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            budget += len(item) + 3
        elif kind is dict:
            if depth >= MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
            budget += 2
            for key, sub in item.items():
                if type(key) is not str:
                    raise TypeError(f"{what} must be JSON: dict keys must be str, got {type(key).__name__}")
                budget += len(key) + 4
                push((sub, depth + 1))
        elif kind is list:
            if depth >= MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
            budget += 2 + len(item)
            for sub in item:
                push((sub, depth + 1))
        elif kind is int or kind is bool or item is None:
            budget += 1
        elif kind is float:
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError(f"{what} must be JSON: {item!r} is not a JSON number")
            budget += 1
        else:
            raise TypeError(
                f"{what} must be JSON (dict, list, str, int, float, bool, None), got {_type_label(kind)}"
            )
        if budget > limit_bytes:
            raise LimitSignal("result_size", f"{what} is larger than {limit_bytes} bytes")
    text = _json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(text) > limit_bytes // 4 and len(text.encode("utf-8")) > limit_bytes:
        raise LimitSignal("result_size", f"{what} is larger than {limit_bytes} bytes")
    return text


def _type_label(kind):
    for base in (dict, list, str, int, float, tuple):
        if issubclass(kind, base) and kind is not base:
            return f"a {base.__name__} subclass ({kind.__name__})"
    return kind.__name__


# --------------------------------------------------------------------------- output capture


class OutputCapture:
    """A write-only text sink with a byte cap; the excess is dropped and a marker appended."""

    def __init__(self, limit_bytes):
        self._limit = limit_bytes
        self._parts = []
        self._size = 0
        self.truncated = False

    def write(self, text):
        if type(text) is not str:
            text = str(text)
        if self.truncated:
            return len(text)
        size = len(text.encode("utf-8", "replace")) if not text.isascii() else len(text)
        room = self._limit - self._size
        if size <= room:
            self._parts.append(text)
            self._size += size
        else:
            keep = text.encode("utf-8", "replace")[: max(room, 0)].decode("utf-8", "ignore")
            self._parts.append(keep)
            self._parts.append(TRUNCATION_MARKER.format(limit=self._limit))
            self._size = self._limit
            self.truncated = True
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def reset(self):
        self._parts = []
        self._size = 0
        self.truncated = False

    def getvalue(self):
        return "".join(self._parts)


# --------------------------------------------------------------------------- tenant modules


def files_to_modules(paths):
    """Map bundle paths (``helpers.py``, ``pkg/__init__.py``) to ``{module_name: (path, is_pkg)}``.

    Paths that are not ``.py`` files, or that do not form valid module names, are skipped.
    """
    modules = {}
    for path in paths:
        if not path.endswith(".py"):
            continue
        parts = path[:-3].split("/")
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        if not parts or not all(part.isidentifier() for part in parts):
            continue
        modules[".".join(parts)] = (path, is_pkg)
    return modules


def compile_tenant(path, source):
    """Compile one tenant file; the code's filename is the bundle path (shown in tracebacks)."""
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadFailure(f"not valid UTF-8 ({exc.reason})", path) from None
    try:
        return compile(source, path, "exec", dont_inherit=True, optimize=0)
    except SyntaxError as exc:
        raise LoadFailure(f"{type(exc).__name__}: {exc.msg}", path, exc.lineno) from None
    except (ValueError, OverflowError, MemoryError, RecursionError) as exc:
        raise LoadFailure(f"{type(exc).__name__}: {exc}", path) from None


class TenantImporter:
    """A ``sys.meta_path`` finder and loader serving the tenant's own modules from code objects."""

    def __init__(self, modules):
        # modules: {module_name: (path, is_pkg, code)}
        self._modules = dict(modules)

    def find_spec(self, fullname, path=None, target=None):
        entry = self._modules.get(fullname)
        if entry is None:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, self, origin=entry[0], is_package=entry[1])

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        filename, is_pkg, code = self._modules[module.__name__]
        module.__file__ = filename
        if is_pkg:
            module.__path__ = []
        exec(code, module.__dict__)

    def import_module(self, fullname):
        """Import a tenant module without the import system's Python-level machinery (fast path)."""
        module = sys.modules.get(fullname)
        if module is not None:
            return module
        parent, _, _ = fullname.rpartition(".")
        if parent:
            self.import_module(parent)
        filename, is_pkg, code = self._modules[fullname]
        module = type(sys)(fullname)
        module.__spec__ = self.find_spec(fullname)
        module.__loader__ = self
        module.__package__ = fullname if is_pkg else parent
        sys.modules[fullname] = module
        try:
            self.exec_module(module)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        if parent:
            setattr(sys.modules[parent], fullname.rpartition(".")[2], module)
        return module

    def install(self):
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def tenant_files(self):
        return {entry[0] for entry in self._modules.values()}


# --------------------------------------------------------------------------- determinism

_ACTIVE = contextvars.ContextVar("tenantflow_active_runtime", default=None)
_REAL = {}


def _det_rng():
    """The deterministic generator when the current context runs a workflow body, else None."""
    rt = _ACTIVE.get()
    if rt is None or rt._in_callback:
        return None
    return rt._body_rng()


def install_determinism(patch_datetime=True):
    """Patch clock/random/uuid entry points to follow the active runtime (idempotent)."""
    if _REAL:
        return
    real_time = _time_module.time
    real_time_ns = _time_module.time_ns
    _REAL["time"] = real_time
    _REAL["time_ns"] = real_time_ns

    def time():
        rt = _ACTIVE.get()
        if rt is None or rt._in_callback:
            return real_time()
        return rt._now_ms / 1000.0

    def time_ns():
        rt = _ACTIVE.get()
        if rt is None or rt._in_callback:
            return real_time_ns()
        return int(rt._now_ms) * 1_000_000

    _time_module.time = time
    _time_module.time_ns = time_ns

    inst = _random_module._inst
    for name in dir(_random_module):
        fn = getattr(_random_module, name)
        if getattr(fn, "__self__", None) is inst and callable(fn) and not name.startswith("_"):
            _REAL["random." + name] = fn
            setattr(_random_module, name, _random_wrapper(name, fn))

    real_uuid4 = _uuid_module.uuid4
    _REAL["uuid4"] = real_uuid4

    def uuid4():
        rng = _det_rng()
        if rng is None:
            return real_uuid4()
        return _uuid_module.UUID(int=rng.getrandbits(128), version=4)

    _uuid_module.uuid4 = uuid4

    if patch_datetime:
        import datetime as _datetime_module

        base = _datetime_module.datetime
        _REAL["datetime"] = base

        class datetime(base):
            __slots__ = ()

            @classmethod
            def now(cls, tz=None):
                rt = _ACTIVE.get()
                if rt is None or rt._in_callback:
                    return cls.fromtimestamp(real_time(), tz)
                return cls.fromtimestamp(rt._now_ms / 1000.0, tz)

            @classmethod
            def utcnow(cls):
                return cls.now(_datetime_module.timezone.utc).replace(tzinfo=None)

            @classmethod
            def today(cls):
                return cls.now()

        datetime.__module__ = "datetime"
        datetime.__qualname__ = "datetime"
        _datetime_module.datetime = datetime


def _random_wrapper(name, real):
    def wrapper(*args, **kwargs):
        rt = _ACTIVE.get()
        if rt is None or rt._in_callback:
            return real(*args, **kwargs)
        return getattr(rt._body_rng(), name)(*args, **kwargs)

    wrapper.__name__ = name
    wrapper.__qualname__ = name
    wrapper.__doc__ = real.__doc__
    return wrapper


def install_memory_watch():
    """Fail the invocation on any ``MemoryError``, even one the tenant catches (Python >= 3.12)."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None or "memory_watch" in _REAL:
        return False
    tool = 4
    try:
        monitoring.use_tool_id(tool, "tenantflow")
    except ValueError:
        return False
    memory_error = MemoryError

    def on_raise(code, offset, exc):
        if exc.__class__ is memory_error:
            rt = _ACTIVE.get()
            if rt is not None:
                rt._memory_exhausted = True

    monitoring.register_callback(tool, monitoring.events.RAISE, on_raise)
    monitoring.set_events(tool, monitoring.events.RAISE)
    _REAL["memory_watch"] = on_raise
    return True


def _parse_time_ms(value):
    """Epoch milliseconds from a number (ms) or an ISO-8601 string; None when unusable."""
    if type(value) is int or type(value) is float:
        return float(value)
    if isinstance(value, str):
        import datetime as _dt

        try:
            parsed = _REAL.get("datetime", _dt.datetime).fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_dt.timezone.utc)
        return parsed.timestamp() * 1000.0
    return None


# --------------------------------------------------------------------------- the runtime


class Runtime:
    """One sandbox's SDK state: the host-call function, limits and the deterministic context."""

    def __init__(self, host_call, result_bytes=1 << 20, output_bytes=1 << 20):
        self._host_call = host_call
        self.result_bytes = result_bytes
        self.output = OutputCapture(output_bytes)
        self._now_ms = 0.0
        self._position = 0
        self._seed_base = ""
        self._rng = _random_module.Random(0)
        self._rng_position = None
        self._step = _make_step(self)
        self._in_callback = 0
        self._suspended = False
        self._memory_exhausted = False
        self._tenant_files = frozenset()
        self.tenantflow_module = _make_tenantflow_module(self)

    def configure(self, result_bytes=None, output_bytes=None, host_call=None, tenant_files=None):
        """Change limits, the host-call function or the tenant file names (for tracebacks)."""
        if tenant_files is not None:
            self._tenant_files = frozenset(tenant_files)
        if result_bytes is not None:
            self.result_bytes = result_bytes
        if output_bytes is not None:
            self.output = OutputCapture(output_bytes)
        if host_call is not None:
            self._host_call = host_call

    # ----------------------------------------------------------------- loading

    def load_entry(self, importer, entry_module):
        """Import the entry module through ``importer`` and return its ``run`` function."""
        importer.install()
        self._tenant_files = frozenset(importer.tenant_files())
        sys.modules["tenantflow"] = self.tenantflow_module
        token = _ACTIVE.set(self)
        try:
            module = importer.import_module(entry_module)
        except (SuspendSignal, AbortSignal, LimitSignal) as exc:
            raise LoadFailure(f"{type(exc).__name__} while importing {entry_module}") from None
        except BaseException as exc:  # SystemExit at import time is a load failure too
            raise load_failure_from(exc, self._tenant_files) from None
        finally:
            _ACTIVE.reset(token)
        run = getattr(module, "run", None)
        if not callable(run):
            path = importer._modules[entry_module][0]
            raise LoadFailure("the entry module must define run(event, step)", path)
        return run

    # ----------------------------------------------------------------- invoking

    def invoke(self, run, event, capture_stdio=True):
        """Run ``run(event, step)`` once and return the outcome dict (see the module docstring)."""
        self.output.reset()
        self._granted = None
        self._suspended = False
        self._memory_exhausted = False
        self._in_callback = 0
        self._position = 0
        self._rng_position = None
        if not isinstance(event, dict):
            event = {"payload": event}
        now = _parse_time_ms(event.get("timestamp"))
        self._now_ms = now if now is not None else _REAL.get("time", _time_module.time)() * 1000.0
        self._seed_base = str(event.get("instanceId", ""))
        step = self._step
        old_out, old_err = sys.stdout, sys.stderr
        if capture_stdio:
            sys.stdout = sys.stderr = self.output
        token = _ACTIVE.set(self)
        try:
            outcome = self._run(run, event, step)
        finally:
            _ACTIVE.reset(token)
            if capture_stdio:
                sys.stdout, sys.stderr = old_out, old_err
        if self._memory_exhausted and outcome["status"] != "limit":
            outcome = {"status": "limit", "limit": "memory", "message": "guest memory limit reached"}
        outcome["stdout"] = self.output.getvalue()
        outcome["stdout_truncated"] = self.output.truncated
        return outcome

    def _run(self, run, event, step):
        try:
            value = run(event, step)
            if self._suspended:
                return {"status": "suspended"}
            return {"status": "ok", "output_json": check_json(value, self.result_bytes, "run() output")}
        except SuspendSignal:
            return {"status": "suspended"}
        except AbortSignal as exc:
            return {"status": "aborted", "reason": str(exc.reason)}
        except LimitSignal as exc:
            return {"status": "limit", "limit": exc.limit, "message": exc.message}
        except MemoryError:
            return {"status": "limit", "limit": "memory", "message": "guest memory limit reached"}
        except BaseException as exc:  # the tenant's own, SystemExit and KeyboardInterrupt included
            if self._suspended:
                return {"status": "suspended"}
            return {"status": "error", "error": self.describe_error(exc)}

    def describe_error(self, exc):
        """``{"type", "message", "traceback"}`` of a tenant exception, tenant frames only."""
        return {
            "type": type(exc).__name__,
            "message": _safe_str(exc),
            "traceback": _format_tenant_traceback(exc, self._tenant_files),
        }

    # ----------------------------------------------------------------- host calls

    def granted_bindings(self):
        """The names of the bindings the host grants (asked once per invocation), or None if unknown."""
        granted = getattr(self, "_granted", None)
        if granted is None:
            try:
                answer = self._host_call("env.bindings", {})
            except Exception:
                return None  # an older host: every binding call is still checked on the host
            if type(answer) is not list or not all(type(name) is str for name in answer):
                return None
            granted = self._granted = tuple(answer)
        return granted

    def call(self, name, args):
        """One host call. Converts host refusals into tenant-visible exceptions."""
        if self._suspended and name.startswith("step."):
            raise SuspendSignal()
        try:
            return self._host_call(name, args)
        except HostCallFailed as exc:
            raise _error_class(exc.type_name)(exc.message) from None

    def _boundary(self, answer, advance):
        """Move the deterministic clock (and, for a new step operation, the journal position)."""
        if advance:
            self._position += 1
        t = answer.get("time") if type(answer) is dict else None
        if type(t) is int or type(t) is float:
            self._now_ms = float(t)

    def _body_rng(self):
        """The workflow body's generator, (re)seeded lazily for the current journal position."""
        if self._rng_position != self._position:
            self._rng.seed(f"{self._seed_base}:{self._position}", version=2)
            self._rng_position = self._position
        return self._rng

    def _suspend(self):
        self._suspended = True
        raise SuspendSignal()

    def _answer(self, name, args):
        if self._in_callback and name != "step.fail":
            raise RuntimeError("step operations cannot run inside a step callback")
        answer = self.call(name, args)
        if type(answer) is not dict:
            raise _error_class("HostError")(f"malformed host answer to {name}")
        if answer.get("action") == "suspend":
            self._suspend()
        # One journal position per step operation: step.commit/step.fail only move the clock,
        # so a first run and its replay (which gets "cached") see the same positions.
        self._boundary(answer, name != "step.commit" and name != "step.fail")
        return answer

    def do_step(self, name, fn, config):
        if self._in_callback:
            raise RuntimeError("step operations cannot run inside a step callback")
        answer = self._answer("step.do", {"name": name, "config": config})
        action = answer.get("action")
        if action == "cached":
            return answer.get("result")
        if action == "failed":
            _raise_error(answer.get("error"))
        if action != "run":
            raise _error_class("HostError")(f"unexpected step.do answer {action!r}")
        count = answer.get("count", 1)
        attempt = answer.get("attempt", 1)
        step_config = answer.get("config", config)
        wants_context = _accepts_argument(fn)
        while True:
            ctx = {"step": {"name": name, "count": count}, "attempt": attempt, "config": step_config}
            self._in_callback += 1
            try:
                result = fn(ctx) if wants_context else fn()
            except MemoryError:
                self._in_callback -= 1
                raise
            except Exception as exc:
                self._in_callback -= 1
                answer = self._fail(name, count, exc, isinstance(exc, NonRetryableError))
                if answer.get("action") == "retry":
                    attempt = answer.get("attempt", attempt + 1)
                    continue
                error = answer.get("error") or {}
                if exc.__class__.__name__ == error.get("name", exc.__class__.__name__):
                    raise
                _raise_error(error)
            except BaseException:
                self._in_callback -= 1
                raise
            self._in_callback -= 1
            try:
                check_json(result, self.result_bytes, f"result of step {name!r}")
            except (TypeError, ValueError) as exc:
                # A non-JSON result is a bug in the step, not a transient failure: no retries.
                self._fail(name, count, exc, True)
                raise exc.with_traceback(None) from None
            self._answer("step.commit", {"name": name, "count": count, "result": result})
            return result

    def _fail(self, name, count, exc, non_retryable):
        failure = {
            "name": name,
            "count": count,
            "error": {"name": type(exc).__name__, "message": _safe_str(exc)},
            "non_retryable": non_retryable,
        }
        return self._answer("step.fail", failure)


def _accepts_argument(fn):
    """True when ``fn`` has a *required* positional parameter (or ``*args``) for the step context.

    Parameters with defaults do not count: ``lambda i=i: ...`` is the idiom for capturing a loop value.
    """
    code = getattr(fn, "__code__", None)
    if code is not None and not isinstance(fn, type):
        positional = code.co_argcount - len(getattr(fn, "__defaults__", None) or ())
        if getattr(fn, "__self__", None) is not None:
            positional -= 1
        return positional >= 1 or bool(code.co_flags & 0x04)
    try:
        import inspect

        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind == p.VAR_POSITIONAL
        or (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)
        for p in params
    )


def load_failure_from(exc, tenant_files):
    """A ``LoadFailure`` for an exception raised while importing tenant modules."""
    file, line = _innermost_tenant_frame(exc.__traceback__, tenant_files)
    return LoadFailure(f"{type(exc).__name__}: {_safe_str(exc)}", file, line)


def _safe_str(exc):
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable exception>"
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "..."
    return text


def _innermost_tenant_frame(tb, tenant_files):
    file = line = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in tenant_files:
            file, line = filename, tb.tb_lineno
        tb = tb.tb_next
    return file, line


def _format_tenant_traceback(exc, tenant_files):
    lines = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in tenant_files:
            lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        tb = tb.tb_next
    head = "Traceback (most recent call last):\n" if lines else ""
    return head + "".join(lines) + f"{type(exc).__name__}: {_safe_str(exc)}\n"


# --------------------------------------------------------------------------- facades


def _json_arg(value, what, rt):
    check_json(value, rt.result_bytes, what)
    return value


def _make_step(rt):
    """The ``step`` facade: methods are closures; the object has no attributes to walk."""

    def do(name=None, fn=None, *, retries=None, timeout=None, config=None):
        if callable(name) and fn is None:
            # @step.do without arguments: the function's name is the step name.
            return _declare(name.__name__, name, retries, timeout, config)
        if not isinstance(name, str) and name is not None:
            raise TypeError("step.do(name, fn): name must be a str")
        if fn is None:
            return lambda func: _declare(
                name if name is not None else func.__name__, func, retries, timeout, config
            )
        if not callable(fn):
            raise TypeError("step.do(name, fn): fn must be callable")
        return rt.do_step(name, fn, _step_config(retries, timeout, config))

    def _declare(name, func, retries, timeout, config):
        if not callable(func):
            raise TypeError("@step.do must decorate a function")
        cfg = _step_config(retries, timeout, config)

        def run_step():
            return rt.do_step(name, func, cfg)

        run_step.__name__ = getattr(func, "__name__", "step")
        return run_step

    def _step_config(retries, timeout, config):
        cfg = {}
        if config is not None:
            if type(config) is not dict:
                raise TypeError("step config must be a dict")
            cfg.update(config)
        if retries is not None:
            cfg["retries"] = retries
        if timeout is not None:
            cfg["timeout"] = timeout
        return _json_arg(cfg, "step config", rt)

    def sleep(name, duration):
        rt._answer("step.sleep", {"name": _name(name), "duration": _json_arg(duration, "duration", rt)})

    def sleep_until(name, until):
        if hasattr(until, "timestamp") and callable(until.timestamp):
            until = int(until.timestamp() * 1000)
        rt._answer("step.sleep_until", {"name": _name(name), "until": _json_arg(until, "until", rt)})

    def wait_for_event(name, type=None, timeout=None, **options):
        event_type = type if type is not None else options.pop("event_type", None)
        if options:
            raise TypeError(f"unexpected options: {', '.join(sorted(options))}")
        if not isinstance(event_type, str):
            raise TypeError("step.wait_for_event(name, type): type must be a str")
        answer = rt._answer(
            "step.wait_for_event",
            {"name": _name(name), "type": event_type, "timeout": _json_arg(timeout, "timeout", rt)},
        )
        if answer.get("action") == "event":
            return answer.get("event")
        if answer.get("action") == "timeout":
            _raise_error(answer.get("error") or {"name": "TimeoutError", "message": "event wait timed out"})
        raise _error_class("HostError")("unexpected step.wait_for_event answer")

    def _name(name):
        if not isinstance(name, str):
            raise TypeError("step names must be str")
        return name

    namespace = {
        "__slots__": (),
        "do": staticmethod(do),
        "sleep": staticmethod(sleep),
        "sleep_until": staticmethod(sleep_until),
        "wait_for_event": staticmethod(wait_for_event),
        "__repr__": lambda self: "<step>",
        "__module__": "tenantflow",
    }
    return type("Step", (), namespace)()


def _binding_args(args, kwargs, rt):
    """Binding call arguments as sent to the host: plain kwargs, or {"args", "kwargs"} with positionals."""
    payload = {"args": list(args), "kwargs": kwargs} if args else kwargs
    return _json_arg(payload, "binding arguments", rt)


def _make_env(rt):
    """The ``env`` facade: ``env.<binding>.<method>(...)`` and ``env.<binding>(...)`` are one host
    call each (``env.<binding>.<method>`` / ``env.<binding>``), checked on the host. Arguments: the
    keyword arguments as an object, or ``{"args": [...], "kwargs": {...}}`` when positional ones
    are given.

    Binding facades keep their name in a closure, not an attribute, so they expose nothing.
    """
    bindings = {}

    def binding_facade(binding):
        def method_facade(method):
            def call(*args, **kwargs):
                return rt.call(f"env.{binding}.{method}", _binding_args(args, kwargs, rt))

            call.__name__ = method
            call.__qualname__ = f"env.{binding}.{method}"
            return call

        def call_binding(self, *args, **kwargs):
            # Callable bindings, e.g. env.fetch(url, method="POST"): the host call is "env.<binding>".
            return rt.call(f"env.{binding}", _binding_args(args, kwargs, rt))

        def getattr_(self, method):
            if method.startswith("_"):
                raise AttributeError(method)
            return method_facade(method)

        namespace = {
            "__slots__": (),
            "__getattr__": getattr_,
            "__call__": call_binding,
            "__repr__": lambda self: f"<binding {binding}>",
            "__module__": "tenantflow",
        }
        return type("Binding", (), namespace)()

    def env_getattr(self, binding):
        if binding.startswith("_"):
            raise AttributeError(binding)
        granted = rt.granted_bindings()
        if granted is not None and binding not in granted:
            raise BindingNotGranted(
                f"binding {binding!r} is not granted to this tenant; an operator can grant it in the "
                f"tenant policy (granted: {', '.join(granted) or 'none'})"
            )
        facade = bindings.get(binding)
        if facade is None:
            facade = bindings[binding] = binding_facade(binding)
        return facade

    namespace = {
        "__slots__": (),
        "__getattr__": env_getattr,
        "__dir__": lambda self: list(rt.granted_bindings() or ()),
        "__repr__": lambda self: "<env>",
        "__module__": "tenantflow",
    }
    return type("Env", (), namespace)()


def _make_tenantflow_module(rt):
    module = type(sys)("tenantflow")
    module.__doc__ = "The tenantflow SDK: env (granted bindings), NonRetryableError, log."
    module.env = _make_env(rt)
    module.NonRetryableError = NonRetryableError
    module.EventTimeoutError = _error_class("EventTimeoutError")
    module.BindingNotGranted = BindingNotGranted

    def log(message, *, level="info"):
        rt.call("log", {"level": str(level), "message": str(message)})

    module.log = log
    module.__all__ = ["BindingNotGranted", "EventTimeoutError", "NonRetryableError", "env", "log"]
    return module
