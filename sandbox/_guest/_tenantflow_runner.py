"""The generic wasm runner app (componentize-py), built once per install; tenant code is data.

Exports (see runner.wit): ``compile`` turns a bundle's sources into marshalled code objects (the
backend's derived form), ``load`` installs them and imports the entry module, ``invoke`` runs
``run(event, step)`` through the shared tenant SDK and returns its outcome as JSON text. The host
call import carries JSON text both ways. Everything imported here is snapshotted at build time.
"""

import base64
import json
import marshal

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
        if not derived.startswith(_DERIVED_MAGIC):
            raise Err(_dumps({"message": "derived form from another runner version"}))
        data = marshal.loads(base64.b64decode(derived[len(_DERIVED_MAGIC) :]))
        opts = _loads(options)
        runtime = sdk.Runtime(
            _host_call, result_bytes=int(opts["result_bytes"]), output_bytes=int(opts["output_bytes"])
        )
        try:
            run = runtime.load_entry(sdk.TenantImporter(data["modules"]), data["entry"])
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
