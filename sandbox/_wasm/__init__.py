"""The wasm sandbox backend (CPython compiled to WebAssembly, hosted by wasmtime)."""

from ._backend import WasmBackend

__all__ = ["WasmBackend"]
