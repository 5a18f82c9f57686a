"""String-in/string-out fast paths around wasmtime's component C API.

Design note. wasmtime-py's generic ``Func.__call__`` and ``LinkerInstance.add_func`` rebuild the
function's type description through a dozen ctypes calls on *every* call (params, result type,
case tests), which costs ~30 µs per host call. Our WIT world only ever passes strings and returns
``string`` or ``result<string, string>``, so these helpers convert exactly those shapes directly.
They use only wasmtime-py's own ctypes bindings (``wasmtime._ffi``), pinned by ``wasmtime==50.0.1``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from wasmtime import WasmtimeError
from wasmtime import _ffi as ffi

_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
_string_at = ctypes.string_at
_byref = ctypes.byref
_val_t = ffi.wasmtime_component_val_t
_byte_vec_delete = ffi.wasm_byte_vec_delete
# Our own prototype of wasm_byte_vec_new taking bytes directly (wasmtime-py's wants a ctypes array).
_byte_vec_new = ctypes.CFUNCTYPE(None, ctypes.POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p)(
    ("wasm_byte_vec_new", ffi.dll)
)
_val_new = ffi.wasmtime_component_val_new
_val_delete = ffi.wasmtime_component_val_delete
_func_call = ffi.wasmtime_component_func_call

HostHandler = Callable[[str, str, Any], tuple[bool, str]]
"""``(name, args_json, store_context) -> (ok, payload)``; must never raise."""


def _take_string(val: Any) -> str:
    vec = val.of.string
    text = _string_at(vec.data, vec.size).decode("utf-8")
    _byte_vec_delete(_byref(vec))
    return text


def _string_vec(text: str) -> Any:
    data = text.encode("utf-8")
    vec = ffi.wasm_byte_vec_t()
    _byte_vec_new(_byref(vec), len(data), data)
    return vec


class HostFunction:
    """A ``(string, string) -> result<string, string>`` host function backed by ``handler``.

    ``handler`` is looked up through ``current()`` on each call so one linker definition serves
    every store; the handler belongs to the invocation running on the calling thread.
    """

    def __init__(self, current: Callable[[], HostHandler | None]) -> None:
        self._current = current
        self.callback = ffi.wasmtime_component_func_callback_t(self._call)
        self.finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)

    def _call(self, _data: Any, ctx: Any, _ty: Any, args: Any, nargs: int, results: Any, _n: int) -> int:
        try:
            name = _take_string(args[0])
            payload = _take_string(args[1])
            handler = self._current()
            if handler is None:
                ok, text = False, "Ano invocation is running"
            else:
                ok, text = handler(name, payload, ctx)
            inner = _val_t()
            inner.kind = _STRING
            inner.of.string = _string_vec(text)
            out = results[0]
            out.kind = _RESULT
            out.of.result.is_ok = ok
            out.of.result.val = _val_new(_byref(inner))
            return 0
        except BaseException:
            # Returning an error traps the guest: the sandbox is discarded, the host stays up.
            error = WasmtimeError("tenantflow host function failed")
            return ctypes.cast(error._consume(), ctypes.c_void_p).value or 0

    def define(self, linker_instance: Any, name: str) -> None:
        raw = name.encode()
        err = ffi.wasmtime_component_linker_instance_add_func(
            linker_instance.ptr(),
            ctypes.create_string_buffer(raw),
            len(raw),
            self.callback,
            None,
            self.finalizer,
        )
        if err:
            raise WasmtimeError._from_ptr(err)


def call_export(store: Any, func: Any, *params: str, result: str = "string") -> Any:
    """Call an export taking strings. ``result``: ``string``, ``result`` or ``unit-result``.

    Returns the string; for ``result``/``unit-result`` a ``(ok, payload)`` tuple (payload None for
    ``_``). Raises ``WasmtimeError`` on a trap.
    """
    n = len(params)
    args = (_val_t * n)()
    for i, text in enumerate(params):
        args[i].kind = _STRING
        args[i].of.string = _string_vec(text)
    out = _val_t()
    try:
        err = _func_call(_byref(func._func), store._context(), args, n, _byref(out), 1)
    finally:
        for i in range(n):
            _val_delete(_byref(args[i]))
    if err:
        raise WasmtimeError._from_ptr(err)
    try:
        if result == "string":
            return _read_string(out)
        ok = bool(out.of.result.is_ok)
        inner = out.of.result.val
        return ok, (_read_string(inner.contents) if inner else None)
    finally:
        _val_delete(_byref(out))  # frees the strings and the boxed result payload


def _read_string(val: Any) -> str:
    vec = val.of.string
    return _string_at(vec.data, vec.size).decode("utf-8")
