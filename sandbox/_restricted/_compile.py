"""Bundle -> derived form (RestrictedPython-compiled code objects), and back.

The derived form is produced by the platform (``RestrictedBackend.prepare``), cached by it and
never accepted from uploaders; it is still checked on the way in (format version, bundle digest,
payload hash) so a stale or corrupted cache entry is a clean error, not undefined behaviour.

    b"TFRP" | u32 header length | header JSON {v, digest, entry, sha256} | marshal payload

The payload maps module name -> (bundle path, code object, source). Sources travel along only to
print the tenant's own lines in tracebacks (the worker never reads files).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import struct
import sys
from dataclasses import dataclass
from typing import Any

import RestrictedPython

from .._errors import LoadError
from .._protocol import Bundle
from ._policy import POLICY_VERSION, CompileFailure, compile_module

MAGIC = b"TFRP"
_LEN = struct.Struct("!I")
BACKEND_VERSION = f"restricted-{POLICY_VERSION}-rp{getattr(RestrictedPython, '__version__', '9')}-{sys.implementation.cache_tag}"
MAX_SOURCE_BYTES = 4 * 1024 * 1024


def module_name(path: str) -> str | None:
    """``pkg/mod.py`` -> ``pkg.mod``; ``pkg/__init__.py`` -> ``pkg``; None for non-modules."""
    if not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(part.isidentifier() and not part.startswith("_") for part in parts):
        return None
    return ".".join(parts)


def compile_bundle(bundle: Bundle) -> bytes:
    """Compile every module of the bundle; raises ``LoadError`` with the tenant's file and line."""
    entry = module_name(bundle.entry)
    if entry is None or bundle.entry not in bundle.files:
        raise LoadError(
            f"entry module {bundle.entry!r} is not a Python module of the bundle", file=bundle.entry
        )
    modules: dict[str, tuple[str, Any, str]] = {}
    total = 0
    for path in sorted(bundle.files):
        name = module_name(path)
        if name is None:
            if path.endswith(".py"):
                raise LoadError("module file names must be identifiers not starting with '_'", file=path)
            continue
        raw = bundle.files[path]
        total += len(raw)
        if total > MAX_SOURCE_BYTES:
            raise LoadError(f"the bundle's Python sources exceed {MAX_SOURCE_BYTES} bytes", file=path)
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LoadError(f"source is not valid UTF-8 (byte {exc.start})", file=path) from None
        try:
            code = compile_module(source, path)
        except CompileFailure as exc:
            raise LoadError(exc.message, file=path, line=exc.line) from None
        modules[name] = (path, code, source)
    payload = marshal.dumps(modules)
    header = json.dumps(
        {
            "v": BACKEND_VERSION,
            "digest": bundle.digest,
            "entry": entry,
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
    ).encode()
    return MAGIC + _LEN.pack(len(header)) + header + payload


@dataclass(frozen=True, slots=True)
class Derived:
    digest: str
    entry: str
    modules: dict[str, tuple[str, Any, str]]


def read_header(derived: bytes) -> dict[str, Any]:
    """Check the envelope of a derived form (cheap: no unmarshalling); raises ``ValueError``."""
    if not derived.startswith(MAGIC) or len(derived) < len(MAGIC) + _LEN.size:
        raise ValueError("not a restricted-backend derived form")
    (size,) = _LEN.unpack_from(derived, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    header: dict[str, Any] = json.loads(derived[start : start + size])
    if header.get("v") != BACKEND_VERSION:
        raise ValueError(f"derived form of version {header.get('v')!r}, expected {BACKEND_VERSION!r}")
    header["_offset"] = start + size
    return header


def load_derived(derived: bytes, digest: str) -> Derived:
    """Unpack a derived form produced by ``compile_bundle`` for ``digest``; raises ``ValueError``."""
    header = read_header(derived)
    if header.get("digest") != digest:
        raise ValueError("derived form belongs to another bundle")
    payload = derived[header["_offset"] :]
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("derived form is corrupted")
    modules = marshal.loads(payload)
    return Derived(digest=digest, entry=str(header["entry"]), modules=modules)
