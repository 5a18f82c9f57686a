"""Upload validation: read the source with caps, then check every file's content. Never executes code.

``validate_bundle`` is synchronous and CPU-bound; the store runs it in a worker thread. It either
returns a ``ValidatedBundle`` or raises one ``BundleValidationError`` listing every problem found.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

from ._collect import Collector, StopReading
from ._config import ValidationLimits
from ._errors import BundleValidationError, Problem
from ._manifest import (
    MANIFEST_PATH,
    Manifest,
    parse_manifest,
    render_manifest,
    toml_problem,
    workflow_name_problem,
)
from ._readers import read_directory, read_single_file, read_tar_gz, read_zip


@dataclass(frozen=True, slots=True)
class ValidatedBundle:
    """The files of an accepted upload."""

    files: Mapping[str, bytes]
    """Bundle-relative POSIX path -> content, manifest included."""
    manifest: Manifest
    """The parsed manifest (synthesized for a single-file upload)."""


def _format_of(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith(".py"):
        return "py"
    return None


def validate_bundle(
    source: Path | bytes,
    *,
    filename: str | None = None,
    workflow: str | None = None,
    limits: ValidationLimits | None = None,
) -> ValidatedBundle:
    """Read and check an upload; raise ``BundleValidationError`` listing every problem."""
    limits = limits or ValidationLimits()
    c = Collector(limits)
    try:
        is_single = _read_source(source, filename, c)
    except StopReading:
        # A cap was hit or the archive is unreadable: what was read is incomplete, so content
        # checks would only add noise. Report the reading problems alone.
        _raise(c.problems, limits)
    c.check_tree()
    single = next(iter(c.files), None) if is_single else None

    manifest: Manifest | None = None
    if is_single:
        if single is not None:
            manifest = _single_file_manifest(single, workflow, c)
    elif MANIFEST_PATH in c.files:
        manifest, problems = parse_manifest(c.files[MANIFEST_PATH])
        c.problems.extend(problems)
    else:
        c.problem(None, f'missing manifest: add {MANIFEST_PATH} at the bundle root (workflow = "name")')

    for path, data in c.files.items():
        _check_content(path, data, c)
    if manifest is not None:
        if workflow is not None and manifest.workflow != workflow:
            c.problem(
                MANIFEST_PATH,
                f"manifest names workflow {manifest.workflow!r} but the upload is for {workflow!r}",
            )
        _check_entry(manifest.entry, c)
    if c.problems or manifest is None:
        _raise(c.problems, limits)
    return ValidatedBundle(files=dict(sorted(c.files.items())), manifest=manifest)


def _raise(problems: list[Problem], limits: ValidationLimits) -> NoReturn:
    if len(problems) > limits.max_problems:
        extra = len(problems) - limits.max_problems
        problems = [
            *problems[: limits.max_problems],
            Problem(None, None, None, f"... and {extra} more problems"),
        ]
    raise BundleValidationError(problems or [Problem(None, None, None, "the bundle is empty")])


def _read_source(source: Path | bytes, filename: str | None, c: Collector) -> bool:
    """Feed the collector; True when the upload is a single ``.py`` file."""
    limits = c.limits
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if filename is None:
            raise c.fatal(None, "a bytes upload needs filename= ending in .zip, .tar.gz, .tgz or .py")
        fmt = _format_of(filename)
        if fmt is None:
            raise c.fatal(None, f"unsupported bundle format {filename!r}; use .zip, .tar.gz, .tgz or .py")
        if len(data) > limits.max_archive_bytes:
            raise c.fatal(
                None, f"upload is {len(data):,} bytes; at most {limits.max_archive_bytes:,} allowed"
            )
        return _read_stream(io.BytesIO(data), len(data), fmt, PurePosixPath(filename).name, c)
    path = Path(source)
    if path.is_dir():
        try:
            read_directory(path, c)
        except OSError as exc:
            raise c.fatal(None, f"cannot read directory {exc.filename!r}: {exc.strerror}") from exc
        return False
    fmt = _format_of(filename or path.name)
    if fmt is None:
        raise c.fatal(
            None, f"unsupported bundle format {path.name!r}; use a directory, .zip, .tar.gz, .tgz or .py"
        )
    try:
        size = path.stat().st_size
        if size > limits.max_archive_bytes:
            raise c.fatal(None, f"upload is {size:,} bytes; at most {limits.max_archive_bytes:,} allowed")
        with path.open("rb") as fh:
            return _read_stream(fh, size, fmt, PurePosixPath(filename).name if filename else path.name, c)
    except OSError as exc:
        raise c.fatal(None, f"cannot read {str(path)!r}: {exc.strerror}") from exc


def _read_stream(fh: io.BufferedIOBase | io.BytesIO, size: int, fmt: str, name: str, c: Collector) -> bool:
    if fmt == "zip":
        read_zip(fh, size, c)  # type: ignore[arg-type]
        return False
    if fmt == "tar.gz":
        read_tar_gz(fh, c)  # type: ignore[arg-type]
        return False
    read_single_file(fh, name, c)  # type: ignore[arg-type]
    return True


def _single_file_manifest(path: str, workflow: str | None, c: Collector) -> Manifest | None:
    """A single ``.py`` file becomes a bundle of that file plus a synthesized manifest."""
    name = workflow if workflow is not None else PurePosixPath(path).stem
    if (why := workflow_name_problem(name)) is not None:
        c.problem(None, f"cannot name the workflow {name!r} ({why}); pass workflow=")
        return None
    c.files[MANIFEST_PATH] = render_manifest(name, path)
    manifest, problems = parse_manifest(c.files[MANIFEST_PATH])
    c.problems.extend(problems)
    return manifest


_SYNTAX_DETAIL = re.compile(r" \(.*, line \d+\)$")


def _check_content(path: str, data: bytes, c: Collector) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
        line_start = data.rfind(b"\n", 0, offset) + 1
        line = data.count(b"\n", 0, offset) + 1
        c.problem(
            path,
            f"not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset}; save the file as UTF-8",
            line,
            offset - line_start + 1,
        )
        return
    suffix = PurePosixPath(path).suffix.lower()
    if suffix == ".py":
        try:
            # Syntax check only: the code object is discarded, nothing is executed.
            compile(text, path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            message = _SYNTAX_DETAIL.sub("", exc.msg or "invalid syntax")
            c.problem(path, f"syntax error: {message}", exc.lineno, exc.offset)
        except (ValueError, RecursionError, MemoryError) as exc:
            c.problem(path, f"cannot compile: {exc}")
    elif suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            c.problem(path, f"invalid JSON: {exc.msg}", exc.lineno, exc.colno)
        except RecursionError:
            c.problem(path, "invalid JSON: nested too deeply")
    elif suffix == ".toml" and path != MANIFEST_PATH:
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            c.problems.append(toml_problem(path, exc))


def _check_entry(entry: str, c: Collector) -> None:
    data = c.files.get(entry)
    if data is None:
        c.problem(entry, "entry module not found in the bundle; add it or set entry in tenantflow.toml")
        return
    try:
        tree = ast.parse(data.decode("utf-8"), entry)
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return  # already reported by the content check
    runs = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "run"
    ]
    if not runs:
        c.problem(entry, "entry module does not define a top-level function run(event, step); add one")
        return
    fn = runs[-1]
    if isinstance(fn, ast.AsyncFunctionDef):
        c.problem(
            entry,
            "run must be a plain function ('def run(event, step)'), not 'async def'",
            fn.lineno,
            fn.col_offset + 1,
        )
        return
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    required_after = len(positional) - len(args.defaults)
    kwonly_required = any(d is None for d in args.kw_defaults)
    if (len(positional) < 2 and args.vararg is None) or required_after > 2 or kwonly_required:
        c.problem(
            entry,
            "run must accept exactly two positional arguments: def run(event, step)",
            fn.lineno,
            fn.col_offset + 1,
        )
