"""The generic wasm runner app (componentize-py), built once per install; tenant code is data.

Exports (see runner.wit): ``compile`` turns a bundle's sources into marshalled code objects (the
backend's derived form), ``load`` installs them and imports the entry module, ``invoke`` runs
``run(event, step)`` through the shared tenant SDK and returns its outcome as JSON text. The host
call import carries JSON text both ways. Everything imported here is snapshotted at build time.
"""

import base64
import json
import marshal
import sys

import _tenantflow_preload  # noqa: F401  (the tenant-visible stdlib)
import _tenantflow_sdk as sdk
import wit_world
from componentize_py_types import Err
from wit_world.imports import host

sdk.install_determinism(patch_datetime=True)
sdk.install_memory_watch()

# The runner's own modules stay importable by the tenant: harmless, since everything they can do
# is a host call that the host checks (the guest holds no authority of its own).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
_host_call_raw = host.call
_DERIVED_MAGIC = "tfw1:"


def _host_call(name, args):
    try:
        return _loads(_host_call_raw(name, _dumps(args)))
    except Err as err:
        payload = err.value
        if payload[:1] == "A":
            raise sdk.AbortSignal(payload[1:]) from None
        type_name, _, message = payload[1:].partition("\n")
        raise sdk.HostCallFailed(type_name or "HostError", message) from None


def _load_failure(exc):
    return Err(_dumps(exc.to_json()))


class _State:
    runtime = None
    run = None


# Created while the runner is pre-initialized, so a load does not pay for building the facades.
_RUNTIME = sdk.Runtime(_host_call)


class WitWorld(wit_world.WitWorld):
    def compile(self, files):
        request = _loads(files)
        sources = request["files"]
        entry = request["entry"]
        names = sdk.files_to_modules(sources)
        entry_module = None
        modules = {}
        try:
            for module_name, (path, is_pkg) in names.items():
                modules[module_name] = (path, is_pkg, sdk.compile_tenant(path, sources[path]))
                if path == entry:
                    entry_module = module_name
            if entry_module is None:
                raise sdk.LoadFailure(f"the bundle has no importable entry module {entry!r}", entry)
        except sdk.LoadFailure as exc:
            raise _load_failure(exc) from None
        blob = marshal.dumps({"entry": entry_module, "modules": modules})
        return _DERIVED_MAGIC + base64.b64encode(blob).decode("ascii")

    def load(self, options, derived):
        if _State.runtime is not None:
            raise Err(_dumps({"message": "this sandbox is already loaded"}))
        try:
            if not derived.startswith(_DERIVED_MAGIC):
                raise ValueError("not a derived form of this runner")
            data = marshal.loads(base64.b64decode(derived[len(_DERIVED_MAGIC) :]))
            modules, entry = data["modules"], data["entry"]
        except Exception as exc:  # a corrupt or foreign derived form: the host recompiles
            raise Err(
                _dumps({"message": f"unusable derived form ({type(exc).__name__})", "derived": True})
            ) from None
        opts = _loads(options)
        runtime = _RUNTIME
        runtime.configure(result_bytes=int(opts["result_bytes"]), output_bytes=int(opts["output_bytes"]))
        try:
            run = runtime.load_entry(sdk.TenantImporter(modules), entry)
        except sdk.LoadFailure as exc:
            raise _load_failure(exc) from None
        _State.runtime = runtime
        _State.run = run

    def invoke(self, event):
        runtime = _State.runtime
        if runtime is None:
            return _dumps({"status": "error", "error": {"type": "RuntimeError", "message": "not loaded"}})
        outcome = runtime.invoke(_State.run, _loads(event))
        output = outcome.pop("output_json", None)
        text = _dumps(outcome)
        if output is not None:
            text = text[:-1] + ',"output":' + output + "}"
        return text


_WARM_HELPERS = """
import dataclasses, enum, re, json, datetime, decimal, typing, collections, functools

x = [1, 2]


def exercise(n):
    # The stdlib paths tenant modules commonly run at import time, specialized before the snapshot.
    @dataclasses.dataclass
    class Item:
        sku: str
        qty: int = 1
        tags: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        a: int
        b: typing.Optional[str] = None

    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    class Plain:
        def __init__(self, v):
            self.v = v

        def __repr__(self):
            return f"Plain({self.v!r})"

    Point = collections.namedtuple("Point", "x y")
    pattern = re.compile(r"^(?P<user>[^@]+)@(?P<host>[a-z.]+)$" + "x" * n, re.I)
    pattern.match("a@b.c")
    re.sub(r"\\s+", " ", "a  b")
    data = json.loads(json.dumps({"items": [dataclasses.asdict(Item("a", 2))], "n": n}))
    stamp = datetime.datetime.fromisoformat("2024-01-02T03:04:05+00:00").strftime("%Y-%m-%d")
    total = sum(decimal.Decimal("1.10") for _ in range(3))
    try:
        raise ValueError(f"{n}")
    except ValueError as exc:
        message = str(exc)
    cached = functools.lru_cache(maxsize=8)(lambda k: k * 2)
    return [repr(Item("s")), Frozen(1), Color.RED.name, repr(Plain(n)), Point(1, 2), data, stamp,
            str(total), message, cached(3), sorted({"b": 1, "a": 2}.items(), key=lambda kv: kv[1])]
"""

_WARM_MAIN = """
import random, time, uuid, datetime, json
import _tf_warm_helpers as helpers
from tenantflow import env, NonRetryableError

def run(event, step):
    @step.do("one")
    def one(ctx):
        return {"n": ctx["attempt"], "r": random.random(), "t": time.time()}

    a = one()
    b = step.do("two", lambda: [helpers.x, str(uuid.uuid4())], retries={"limit": 1})
    step.sleep("nap", 1000)
    print("warm", a["n"], random.random(), time.time(), datetime.datetime.now(), file=None)
    try:
        env.kv.get(key="k")
    except Exception:
        pass
    helpers.exercise(int(event["payload"]))
    return {"a": a, "b": b, "u": str(uuid.uuid4()), "j": json.dumps({"x": 1})}
"""


def _warm_up():
    """Run the whole load/invoke path once while componentize-py pre-initializes the runner.

    The snapshot then holds already-specialized bytecode and warm caches, so a fresh instance
    writes (and so copies) fewer of its memory image's pages: faster cold starts, less memory.
    """
    import gc

    def fake_host_call(name, args):
        if name == "step.do":
            return {"action": "run", "count": 1, "attempt": 1, "config": {}, "time": 1000}
        if name.startswith("env."):
            raise sdk.HostCallFailed("PermissionError", "not granted")
        return {"action": "continue", "time": 2000}

    world = WitWorld()
    derived = world.compile(
        _dumps({"files": {"main.py": _WARM_MAIN, "_tf_warm_helpers.py": _WARM_HELPERS}, "entry": "main.py"})
    )
    runtime = _RUNTIME
    runtime.configure(host_call=fake_host_call)
    data = marshal.loads(base64.b64decode(derived[len(_DERIVED_MAGIC) :]))
    importer = sdk.TenantImporter(data["modules"])
    run = runtime.load_entry(importer, data["entry"])
    for i in range(4):
        outcome = runtime.invoke(run, {"payload": i, "timestamp": 0, "instanceId": "warm"})
        assert outcome["status"] == "ok", outcome
        _dumps(outcome)
    _loads(_dumps({"status": "ok", "x": [1, 2.5, "s", None, True]}))
    # Leave no trace of the warm-up tenant behind.
    for name in ("main", "_tf_warm_helpers", "tenantflow"):
        sys.modules.pop(name, None)
    sys.meta_path.remove(importer)
    runtime.configure(host_call=_host_call)
    runtime._tenant_files = frozenset()
    gc.collect()
    # Fill the free slots left in the allocator's partly used pools: otherwise every sandbox's
    # first allocations land in holes scattered over the snapshot and each copies a page.
    global _HOLE_FILLER
    _HOLE_FILLER = [bytes(size) for size in range(1, 480) for _ in range(64)]
    _HOLE_FILLER += [float(i) for i in range(4096)]
    gc.freeze()  # the snapshot's objects are never scanned (and so never dirtied) by the GC


_warm_up()
