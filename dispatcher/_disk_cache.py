"""Artifacts from a shared (PostgreSQL) artifact store, cached on this worker's local disk.

Design note. With ``--db`` every worker fetches tenant code from the database; a cold start of a
version this machine saw before should not. Bundles are immutable and addressed by digest, so a
local copy never goes stale: the cache is keyed by the version digest, and every read recomputes
the digest from the cached files (the artifact store's documented encoding, see ``artifacts``'s
``_digest``) so a corrupt or tampered file is detected, deleted and fetched again instead of
loaded. Derived forms (e.g. compiled wasm) are cached too, keyed by (digest, backend, backend
version) and stored behind the sha256 of their bytes, checked on every read.

Files are JSON (bundles, contents base64) or a sha256 line plus raw bytes (derived forms), written
to a temporary name and renamed, so a crash or a concurrent writer (two workers sharing a
directory) never leaves a half-written entry under the real name. Size is bounded: an LRU over
the files (recency persisted as mtime, so it survives restarts) deletes the least recently used
down to 90% of ``max_bytes`` whenever a write goes over it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from artifacts import BundleFiles, Manifest

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_BUNDLE_TAG = b"tenantflow-bundle-v1\n"
_T = TypeVar("_T")


def bundle_digest(files: dict[str, bytes]) -> str:
    """The version digest of a bundle's files (the artifact store's canonical encoding)."""
    h = hashlib.sha256(_BUNDLE_TAG)
    for path in sorted(files, key=lambda p: p.encode("utf-8")):
        h.update(path.encode("utf-8") + b"\0" + hashlib.sha256(files[path]).hexdigest().encode() + b"\n")
    return "sha256:" + h.hexdigest()


@dataclass(slots=True)
class DiskCacheStats:
    hits: int = 0
    """Reads served from local disk."""
    misses: int = 0
    """Reads that went to the artifact store."""
    corrupt: int = 0
    """Cached files that failed verification (deleted and fetched again)."""
    evictions: int = 0
    """Files deleted to stay within the size bound."""

    def to_json(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
            "evictions": self.evictions,
        }


class CorruptCacheFileError(Exception):
    """A cached file does not match its digest (internal: the entry is refetched)."""


class DiskArtifactCache:
    """Verified local copies of immutable artifacts, bounded in size. See the module docstring."""

    def __init__(self, directory: Path, *, max_bytes: int = 1024 * MiB) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes!r}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = DiskCacheStats()
        self._lru: OrderedDict[Path, int] = OrderedDict()
        self._bytes = 0
        self._locks: dict[Path, asyncio.Lock] = {}

    @classmethod
    async def open(cls, directory: str | Path, *, max_bytes: int = 1024 * MiB) -> DiskArtifactCache:
        cache = cls(Path(directory), max_bytes=max_bytes)
        await asyncio.to_thread(cache._scan)
        return cache

    @property
    def size(self) -> int:
        """Bytes held on disk (as this process knows them)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._lru)

    # -- bundles -------------------------------------------------------------------------------

    async def bundle(self, digest: str, fetch: Callable[[], Awaitable[BundleFiles]]) -> BundleFiles:
        """The bundle ``digest``: from disk if cached and intact, else from ``fetch`` (then cached)."""
        path = self.directory / "bundles" / (digest.removeprefix("sha256:") + ".json")
        async with self._lock(path):
            cached = await self._read(path, lambda data: _decode_bundle(digest, data))
            if cached is not None:
                return cached
            files = await fetch()
            await self._write(path, _encode_bundle(files))
            return files

    # -- derived forms -------------------------------------------------------------------------

    async def derived(
        self, digest: str, backend: str, backend_version: str, fetch: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """A derived form: from disk if cached and intact, else from ``fetch`` (cached unless None)."""
        path = self._derived_path(digest, backend, backend_version)
        async with self._lock(path):
            cached = await self._read(path, _decode_derived)
            if cached is not None:
                return cached
            data = await fetch()
            if data is not None:
                await self._write(path, _encode_derived(data))
            return data

    async def put_derived(self, digest: str, backend: str, backend_version: str, data: bytes) -> None:
        await self._write(self._derived_path(digest, backend, backend_version), _encode_derived(data))

    # -- internals -----------------------------------------------------------------------------

    def _derived_path(self, digest: str, backend: str, backend_version: str) -> Path:
        key = hashlib.sha256(f"{digest}\0{backend}\0{backend_version}".encode()).hexdigest()
        return self.directory / "derived" / f"{key}.bin"

    def _lock(self, path: Path) -> asyncio.Lock:
        # Single flight per entry: concurrent cold wakes of one version fetch it once.
        lock = self._locks.get(path)
        if lock is None:
            if len(self._locks) > 1_024:
                self._locks = {p: k for p, k in self._locks.items() if k.locked()}
            lock = self._locks[path] = asyncio.Lock()
        return lock

    async def _read(self, path: Path, decode: Callable[[bytes], _T]) -> _T | None:
        try:
            value = await asyncio.to_thread(self._read_sync, path, decode)
        except FileNotFoundError:
            self._forget(path)
            self.stats.misses += 1
            return None
        except CorruptCacheFileError as exc:
            log.warning("local artifact cache: %s is corrupt (%s); fetching it again", path.name, exc)
            self.stats.corrupt += 1
            self.stats.misses += 1
            self._forget(path)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
            return None
        self.stats.hits += 1
        if path in self._lru:
            self._lru.move_to_end(path)
        return value

    @staticmethod
    def _read_sync(path: Path, decode: Callable[[bytes], _T]) -> _T:
        data = path.read_bytes()
        value = decode(data)
        with contextlib.suppress(OSError):
            os.utime(path)  # recency survives a restart
        return value

    async def _write(self, path: Path, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._write_sync, path, data)
        except OSError as exc:  # a full or read-only disk costs cold-start time, never correctness
            log.warning("local artifact cache: cannot write %s: %s", path, exc)
            return
        self._forget(path)
        self._lru[path] = len(data)
        self._bytes += len(data)
        if self._bytes > self.max_bytes:
            await asyncio.to_thread(self._shrink, path)

    @staticmethod
    def _write_sync(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def _shrink(self, keep: Path) -> None:
        target = self.max_bytes * 9 // 10
        for path in list(self._lru):
            if self._bytes <= target:
                break
            if path == keep:
                continue
            self._forget(path)
            self.stats.evictions += 1
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _forget(self, path: Path) -> None:
        size = self._lru.pop(path, None)
        if size is not None:
            self._bytes -= size

    def _scan(self) -> None:
        found: list[tuple[float, Path, int]] = []
        for sub in ("bundles", "derived"):
            folder = self.directory / sub
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if not entry.is_file():
                    continue
                if entry.name.startswith("."):  # a temporary left by a crash
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                    continue
                stat = entry.stat()
                found.append((stat.st_mtime, Path(entry.path), stat.st_size))
        for _, path, size in sorted(found, key=lambda item: item[0]):
            self._lru[path] = size
            self._bytes += size


def _encode_bundle(files: BundleFiles) -> bytes:
    record = {
        "v": 1,
        "digest": files.digest,
        "manifest": files.manifest.to_json(),
        "files": {path: base64.b64encode(data).decode("ascii") for path, data in files.files.items()},
    }
    return json.dumps(record, sort_keys=True).encode()


def _decode_bundle(digest: str, data: bytes) -> BundleFiles:
    try:
        record: Any = json.loads(data)
        files = {path: base64.b64decode(text, validate=True) for path, text in record["files"].items()}
        manifest = Manifest.from_json(record["manifest"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise CorruptCacheFileError(f"unreadable: {type(exc).__name__}") from None
    actual = bundle_digest(files)
    if actual != digest or record.get("digest") != digest:
        raise CorruptCacheFileError(f"digest {actual} != {digest}")
    if manifest.entry not in files:
        raise CorruptCacheFileError(f"entry {manifest.entry!r} is not in the bundle")
    return BundleFiles(digest=digest, files=MappingProxyType(files), manifest=manifest)


def _encode_derived(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\n" + data


def _decode_derived(blob: bytes) -> bytes:
    expected, _, data = blob.partition(b"\n")
    if hashlib.sha256(data).hexdigest().encode() != expected:
        raise CorruptCacheFileError("sha256 mismatch")
    return data
