"""Accumulates the files of an upload while enforcing names and caps; the readers feed it.

Every reader (directory, zip, tar.gz, single file) reports entries here as it streams them, so
the caps are enforced in one place and while reading: the collector refuses the 501st file and the
byte that crosses a size cap, and never holds more than the caps allow in memory.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import PurePosixPath

from ._config import ValidationLimits
from ._errors import Problem


class StopReading(Exception):
    """A cap was hit or the archive is unreadable: stop reading, report what was found so far."""


def printable(name: str) -> str:
    """A name safe to show: control characters and undecodable bytes as escapes (``\\x00``)."""
    return "".join(
        ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF else ascii(ch)[1:-1] for ch in name
    )


def _fmt_bytes(n: float) -> str:
    return f"{int(n):,} bytes"


class Collector:
    """Files accepted so far (path -> bytes) and every problem found."""

    def __init__(self, limits: ValidationLimits) -> None:
        self.limits = limits
        self.files: dict[str, bytes] = {}
        self.problems: list[Problem] = []
        self.total_bytes = 0
        self.file_count = 0
        self.dir_count = 0
        self._seen: dict[str, str] = {}  # folded path -> first spelling, files and directories alike
        self._dirs: set[str] = set()

    # -- problems ------------------------------------------------------------------------------

    def problem(
        self, path: str | None, message: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.problems.append(Problem(None if path is None else printable(path), line, column, message))

    def fatal(self, path: str | None, message: str) -> StopReading:
        """Record a problem that ends reading; ``raise collector.fatal(...)``."""
        self.problem(path, message)
        return StopReading(message)

    # -- names ---------------------------------------------------------------------------------

    def check_name(self, raw: str, *, is_dir: bool) -> str | None:
        """Validate an entry name; return the normalized bundle path, or None if rejected."""
        shown = raw
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in raw):
            self.problem(shown, "file name is not valid UTF-8; rename it")
            return None
        if any(unicodedata.category(ch) == "Cc" for ch in raw):
            what = "a NUL character" if "\0" in raw else "control characters"
            self.problem(shown, f"file name contains {what}; rename it")
            return None
        if "\\" in raw:
            self.problem(shown, "file name contains a backslash; use '/' as the path separator")
            return None
        if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":" and raw[0].isalpha()):
            self.problem(shown, "absolute path; paths must be relative to the bundle root")
            return None
        parts = [p for p in raw.rstrip("/").split("/") if p != "."] if raw not in ("", ".", "./") else []
        if ".." in parts:
            self.problem(shown, "path contains '..'; paths must stay inside the bundle")
            return None
        if "" in parts:
            self.problem(shown, "path contains an empty component ('//')")
            return None
        if not parts:
            if is_dir:
                return ""  # the root itself ('./' in archives made with `tar -C dir .`)
            self.problem(shown, "empty file name")
            return None
        path = "/".join(parts)
        if len(path) > self.limits.max_path_length:
            self.problem(path[:80] + "...", f"path longer than {self.limits.max_path_length} characters")
            return None
        if not is_dir:
            suffix = PurePosixPath(path).suffix.lower()
            if suffix not in self.limits.allowed_extensions:
                allowed = ", ".join(sorted(self.limits.allowed_extensions))
                kind = f"'{suffix}'" if suffix else "without an extension"
                self.problem(path, f"file type {kind} is not allowed; allowed: {allowed}")
                return None
        folded = unicodedata.normalize("NFC", path).casefold()
        first = self._seen.get(folded)
        if first is not None:
            if is_dir and first == path and path in self._dirs:
                return path  # a directory listed twice is harmless
            if first == path:
                self.problem(path, "duplicate path; each path may appear once")
            else:
                self.problem(path, f"path collides with {first!r} on case-insensitive file systems")
            return None
        self._seen[folded] = path
        if is_dir:
            self._dirs.add(path)
        return path

    # -- counting ------------------------------------------------------------------------------

    def count_entry(self, name: str, *, is_dir: bool) -> None:
        """Count one archive member against the file (or directory) cap, before reading it."""
        cap = self.limits.max_files
        if is_dir:
            self.dir_count += 1
            if self.dir_count > cap:
                raise self.fatal(None, f"more than {cap} directories; stopped reading")
        else:
            self.file_count += 1
            if self.file_count > cap:
                raise self.fatal(
                    None, f"more than {cap} files (limit max_files={cap}); stopped reading at {name!r}"
                )

    def check_declared(self, path: str, declared: int) -> bool:
        """Check a size an archive declares for a file before reading it; False means skip it."""
        if declared > self.limits.max_file_bytes:
            self.problem(
                path,
                f"declared uncompressed size {_fmt_bytes(declared)} exceeds the per-file limit of "
                f"{_fmt_bytes(self.limits.max_file_bytes)}",
            )
            return False
        return True

    def add_file(self, path: str | None, chunks: Iterable[bytes], declared: int | None = None) -> None:
        """Read a file's content chunk by chunk, counting actual bytes against every cap.

        ``path`` None means the name was rejected: the content is still read (archives are
        streams) but not kept. A file that exceeds its declared size or the per-file cap is dropped
        with a problem; crossing the bundle total stops reading altogether.
        """
        limits = self.limits
        parts: list[bytes] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            self.total_bytes += len(chunk)
            if self.total_bytes > limits.max_total_bytes:
                raise self.fatal(
                    path,
                    f"bundle exceeds {_fmt_bytes(limits.max_total_bytes)} uncompressed "
                    f"(limit max_total_bytes); stopped reading",
                )
            if declared is not None and size > declared:
                self.problem(path, f"entry holds more data than its declared size of {_fmt_bytes(declared)}")
                return
            if size > limits.max_file_bytes:
                self.problem(
                    path,
                    f"file exceeds the per-file limit of {_fmt_bytes(limits.max_file_bytes)} "
                    "(limit max_file_bytes)",
                )
                return
            if path is not None:
                parts.append(chunk)
        if path is not None:
            self.files[path] = b"".join(parts)

    def check_tree(self) -> None:
        """A path may not be both a file and a directory (``a.py`` and ``a.py/b.py``)."""
        for path in self.files:
            parent = PurePosixPath(path).parent
            while str(parent) != ".":
                if str(parent) in self.files:
                    self.problem(path, f"{str(parent)!r} is both a file and a directory")
                parent = parent.parent
