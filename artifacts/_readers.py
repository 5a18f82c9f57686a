"""Streaming readers for the four upload formats: directory, zip, tar.gz and a single ``.py``.

Design note. Archive bombs are stopped while streaming, never after extracting:

* zip: the central directory is checked first (entry count, declared sizes, declared ratio), then each
  member is read in chunks and its *actual* bytes are counted against the same caps, because
  declared sizes are written by the uploader and may lie.
* tar.gz: gzip is decompressed here, by ``_GzipStream``, and handed to ``tarfile`` in plain stream mode
  (``r|``). Doing the decompression ourselves lets us cap the decompressed stream and the running
  compression ratio byte by byte, including the bytes ``tarfile`` skips over internally (headers,
  padding, the data of members we refuse), which a wrapper around ``r|gz`` could not see.
* directory: ``lstat`` only (symlinks are reported, never followed) and files are opened with
  ``O_NOFOLLOW``, so a link swapped in after the listing is refused too.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from ._collect import Collector, StopReading

CHUNK = 64 * 1024


def _chunks(stream: IO[bytes] | io.BufferedIOBase) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _kind_of_mode(mode: int) -> str | None:
    """Problem text for a non-regular file mode, or None for files and directories."""
    if stat.S_ISLNK(mode):
        return "symbolic link; bundles may only contain regular files (copy the target in instead)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file; bundles may only contain regular files"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "FIFO or socket; bundles may only contain regular files"
    return None


# -- zip ---------------------------------------------------------------------------------------


def read_zip(fileobj: BinaryIO, archive_size: int, c: Collector) -> None:
    limits = c.limits
    try:
        zf = zipfile.ZipFile(fileobj)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        OSError,
        ValueError,
        EOFError,
    ) as exc:
        raise c.fatal(
            None, f"not a readable zip archive ({exc}); upload a .zip, .tar.gz or directory"
        ) from exc
    with zf:
        infos = zf.infolist()
        files = [i for i in infos if not i.is_dir()]
        if len(files) > limits.max_files:
            raise c.fatal(
                None,
                f"archive has {len(files):,} files; at most {limits.max_files} allowed (limit max_files)",
            )
        declared = sum(i.file_size for i in files)
        if declared > limits.max_total_bytes:
            raise c.fatal(
                None,
                f"archive declares {declared:,} bytes uncompressed; at most {limits.max_total_bytes:,} "
                "allowed (limit max_total_bytes)",
            )
        if declared > limits.ratio_floor_bytes and declared > limits.max_ratio * max(archive_size, 1):
            raise c.fatal(
                None,
                f"archive expands {declared / max(archive_size, 1):.0f}:1; at most "
                f"{limits.max_ratio:.0f}:1 allowed (possible zip bomb)",
            )
        for info in infos:
            _read_zip_member(zf, info, c)


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, c: Collector) -> None:
    limits = c.limits
    raw_name = info.orig_filename  # ZipInfo.filename silently truncates at a NUL byte
    if not info.flag_bits & 0x800 and not raw_name.isascii():
        # Without the UTF-8 flag, zipfile decoded the name as cp437; insist on UTF-8 bytes.
        try:
            raw_name = raw_name.encode("cp437").decode("utf-8")
        except UnicodeError:
            raw_name = raw_name.encode("cp437").decode("utf-8", "surrogateescape")
    is_dir = info.is_dir()
    c.count_entry(raw_name, is_dir=is_dir)
    mode = info.external_attr >> 16
    if bad := _kind_of_mode(mode):
        c.check_name(raw_name, is_dir=True)  # still catch traversal in the name, for the report
        c.problem(raw_name, bad)
        return
    path = c.check_name(raw_name, is_dir=is_dir)
    if is_dir or path is None:
        return
    if info.flag_bits & 0x1:
        c.problem(path, "encrypted zip entries are not supported")
        return
    if not c.check_declared(path, info.file_size):
        return
    if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(
        info.compress_size, 1
    ):
        c.problem(
            path,
            f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 exceeds "
            f"{limits.max_ratio:.0f}:1 (possible zip bomb)",
        )
        return
    try:
        with zf.open(info) as member:
            c.add_file(path, _chunks(member), declared=info.file_size)
    except StopReading:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError, ValueError) as exc:
        c.files.pop(path, None)
        c.problem(path, f"corrupt or unsupported zip entry ({exc})")


# -- tar.gz ------------------------------------------------------------------------------------


class _GzipStream(io.RawIOBase):
    """Decompresses gzip from ``raw`` with the output size and the running ratio capped."""

    def __init__(self, raw: BinaryIO, c: Collector) -> None:
        limits = c.limits
        self._raw = raw
        self._c = c
        # Room for tar headers, pax records and block padding around the allowed file bytes.
        self._cap = limits.max_total_bytes + (2 * limits.max_files + 64) * 1536
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._buf = bytearray()
        self._eof = False
        self.compressed = 0
        self.decompressed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        want = len(b)
        while len(self._buf) < want and not self._eof:
            self._step()
        n = min(want, len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n

    def _next_member(self, data: bytes) -> bool:
        """After one gzip member ends: start the next (concatenated gzip) or treat the rest as padding."""
        if data.startswith(b"\x1f\x8b"):
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            return True
        self._pending = b""
        self._eof = True  # trailing garbage or zero padding after the archive, as gzip(1) ignores it
        return False

    def _step(self) -> None:
        data = self._pending
        if not data:
            data = self._raw.read(CHUNK)
            self.compressed += len(data)
            if not data:
                if not self._d.eof and self.decompressed == 0:
                    raise self._c.fatal(None, "the upload is empty or truncated: no gzip data")
                if not self._d.eof:
                    raise self._c.fatal(None, "gzip stream ends early; the upload is truncated")
                self._eof = True
                return
            if self._d.eof and not self._next_member(data):
                return  # only padding follows the last gzip member
        try:
            out = self._d.decompress(data, CHUNK)
        except zlib.error as exc:
            raise self._c.fatal(None, f"not a valid gzip stream ({exc}); upload a .tar.gz") from exc
        self._pending = self._d.unconsumed_tail or (self._d.unused_data if self._d.eof else b"")
        if self._d.eof and self._pending:
            self._next_member(self._pending)
        self.decompressed += len(out)
        limits = self._c.limits
        if self.decompressed > self._cap:
            raise self._c.fatal(
                None,
                f"archive decompresses to more than {self._cap:,} bytes (limit max_total_bytes plus "
                "tar headers); stopped reading",
            )
        if self.decompressed > limits.ratio_floor_bytes and self.decompressed > limits.max_ratio * max(
            self.compressed, 1
        ):
            raise self._c.fatal(
                None,
                f"archive expands more than {limits.max_ratio:.0f}:1 while decompressing "
                "(possible gzip bomb); stopped reading",
            )
        self._buf += out


def read_tar_gz(fileobj: BinaryIO, c: Collector) -> None:
    stream = io.BufferedReader(_GzipStream(fileobj, c), buffer_size=CHUNK)
    try:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
            for member in tf:
                _read_tar_member(tf, member, c)
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        raise c.fatal(None, f"not a readable tar archive ({exc}); upload a .tar.gz") from exc


def _read_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, c: Collector) -> None:
    name = member.name
    if member.isdir():
        c.count_entry(name, is_dir=True)
        c.check_name(name, is_dir=True)
        return
    c.count_entry(name, is_dir=False)
    bad: str | None = None
    if member.issym():
        bad = f"symbolic link to {member.linkname!r}; bundles may only contain regular files"
    elif member.islnk():
        bad = f"hard link to {member.linkname!r}; bundles may only contain regular files"
    elif member.ischr() or member.isblk():
        bad = "device file; bundles may only contain regular files"
    elif member.isfifo():
        bad = "FIFO; bundles may only contain regular files"
    elif not member.isreg():
        bad = f"unsupported tar member type {member.type!r}; bundles may only contain regular files"
    if bad is not None:
        c.check_name(name, is_dir=True)  # report traversal in the name as well
        c.problem(name, bad)
        return
    path = c.check_name(name, is_dir=False)
    if path is None or not c.check_declared(path, member.size):
        return  # tarfile skips the data; _GzipStream still counts every byte it decompresses
    member_file = tf.extractfile(member)
    if member_file is None:  # pragma: no cover - regular members always have a file object
        return
    c.add_file(path, _chunks(member_file), declared=member.size)


# -- directory and single file -----------------------------------------------------------------


def read_directory(root: Path, c: Collector) -> None:
    stack = [("", str(root))]
    while stack:
        prefix, real = stack.pop()
        with os.scandir(real) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                c.count_entry(rel, is_dir=True)
                if c.check_name(rel, is_dir=True) is not None:
                    stack.append((rel + "/", entry.path))
                continue
            c.count_entry(rel, is_dir=False)
            if bad := _kind_of_mode(st.st_mode):
                c.problem(rel, bad)
                continue
            if st.st_nlink > 1:
                c.problem(rel, f"hard link ({st.st_nlink} names for one file); copy the file instead")
                continue
            path = c.check_name(rel, is_dir=False)
            if path is None or not c.check_declared(path, st.st_size):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                c.problem(path, f"cannot read file ({exc.strerror})")
                continue
            with os.fdopen(fd, "rb") as fh:
                c.add_file(path, _chunks(fh))


def read_single_file(fileobj: BinaryIO, name: str, c: Collector) -> str | None:
    """Read one ``.py`` upload; returns its bundle path (None if the name was rejected)."""
    c.count_entry(name, is_dir=False)
    path = c.check_name(name, is_dir=False)
    c.add_file(path, _chunks(fileobj))
    return path
