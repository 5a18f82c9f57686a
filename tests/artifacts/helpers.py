"""Builders for real bundles and hostile archives, in memory."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile

import pytest

from artifacts import ArtifactStore, BundleValidationError

MiB = 1024 * 1024
NS = "tenant-a"
MAIN = b"def run(event, step):\n    return {'ok': event}\n"


def manifest(workflow: str = "orders", extra: str = "") -> bytes:
    return f'workflow = "{workflow}"\n{extra}'.encode()


def files(workflow: str = "orders", **more: bytes) -> dict[str, bytes]:
    """A valid bundle: manifest, main.py and any ``name_py=b"..."`` extras (``_`` before the suffix)."""
    out = {"tenantflow.toml": manifest(workflow), "main.py": MAIN}
    for key, data in more.items():
        stem, _, suffix = key.rpartition("_")
        out[f"{stem}.{suffix}"] = data
    return out


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_file(name: str, data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def make_tgz(members: list[tuple[tarfile.TarInfo, bytes]], *, level: int = 6) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0)


def tgz_of(entries: dict[str, bytes]) -> bytes:
    return make_tgz([tar_file(name, data) for name, data in entries.items()])


def patch_zip_sizes(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size an entry declares, in its local header and central directory."""
    out = bytearray(data)
    encoded = name.encode()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    struct.pack_into("<I", out, info.header_offset + 22, size)
    pos = 0
    while (pos := bytes(out).find(b"PK\x01\x02", pos)) >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46 : pos + 46 + name_len]) == encoded:
            struct.pack_into("<I", out, pos + 24, size)
        pos += 4
    return bytes(out)


async def rejected(store: ArtifactStore, source: object, **kwargs: object) -> BundleValidationError:
    """Upload that must fail; returns the error for its problems to be asserted."""
    with pytest.raises(BundleValidationError) as info:
        await store.upload(NS, source, uploader="test", **kwargs)  # type: ignore[arg-type]
    return info.value


def messages(error: BundleValidationError) -> list[str]:
    return [str(p) for p in error.problems]
