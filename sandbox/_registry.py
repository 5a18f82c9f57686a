"""Backend lookup by name. Backends are imported lazily: loading one never pays for another."""

from __future__ import annotations

import importlib
from typing import Any

from ._protocol import SandboxBackend

_BACKENDS = {
    "wasm": ("sandbox._wasm", "WasmBackend"),
    "restricted": ("sandbox._restricted", "RestrictedBackend"),
    "inprocess": ("sandbox._inprocess", "InProcessBackend"),
}

TENANT_BACKENDS = frozenset({"wasm", "restricted"})
"""Backends a tenant policy may select. ``inprocess`` is for unit tests of other layers only."""


def create_backend(name: str, **options: Any) -> SandboxBackend:
    """Create the backend called ``name`` (``wasm``, ``restricted`` or ``inprocess``)."""
    try:
        module_name, class_name = _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"unknown sandbox backend {name!r}; choose one of: {known}") from None
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: SandboxBackend = backend_class(**options)
    return backend
