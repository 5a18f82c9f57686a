"""Build and cache the generic wasm runner: one componentize-py build per install, one compile per engine.

Design note. The runner (``sandbox/_guest``) is the same for every tenant, so it is built once:
componentize-py takes ~10 s and ~400 MB, Cranelift another ~5 s. Both results are cached under
``$TENANTFLOW_CACHE_DIR`` (default ``~/.cache/tenantflow``)/``wasm``:

* ``runner-<key>.wasm`` where ``key`` hashes the runner sources, the WIT world and the
  componentize-py version, so editing the runner or upgrading the tool rebuilds it;
* ``runner-<key>-<wasmtime version>-<config>.cwasm``, the serialized native code, tied to the
  wasmtime version and the engine ``Config`` (epoch interruption changes the code).

Concurrent first uses (several workers starting at once) take an exclusive ``flock`` on
``build.lock``, re-check, build into a temporary file and publish it with an atomic rename, so a
reader never sees a partial file. Every artifact has a ``.sha256`` sidecar written after it; a
``.cwasm`` is deserialized (which maps native code into the process) only when its content matches
the sidecar and the file is owned by us and not writable by others. A mismatch rebuilds.

The str hash seed is baked into the snapshot when componentize-py pre-initializes the runner, and
it is random per build (PYTHONHASHSEED is not passed to the guest). Every sandbox of one build
iterates sets of str in the same order, but two builds differ: in a cluster, build the runner once
and ship ``runner-<key>.wasm`` with its ``.sha256`` sidecar into every node's cache directory (or
share the directory), so that replays on any worker see the same order. Builds of other keys that
have not been used for a day are pruned after a build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent.parent / "_guest"
WIT_FILE = GUEST_DIR / "runner.wit"
APP_MODULE = "_tenantflow_runner"
WORLD = "runner"
HOST_INTERFACE = "tenantflow:runner/host@0.1.0"
_FORMAT = "tenantflow-runner-2"
_PRUNE_AFTER_SECONDS = 24 * 3600


def cache_dir() -> Path:
    """Where built runners live: ``$TENANTFLOW_CACHE_DIR`` or ``~/.cache/tenantflow``."""
    root = os.environ.get("TENANTFLOW_CACHE_DIR") or str(Path.home() / ".cache" / "tenantflow")
    return Path(root) / "wasm"


def runner_sources() -> list[Path]:
    """The files whose content defines the runner build (sorted, stable)."""
    return sorted([*GUEST_DIR.glob("_tenantflow_*.py"), WIT_FILE])


def tool_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def runner_key() -> str:
    """Hash of the runner sources, the WIT world and the componentize-py version."""
    digest = hashlib.sha256(_FORMAT.encode())
    digest.update(tool_version("componentize-py").encode())
    for path in runner_sources():
        digest.update(b"\0" + path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verified(path: Path) -> bool:
    """True when ``path`` exists, is ours, is not writable by others and matches its sidecar."""
    sidecar = _sidecar(path)
    try:
        info = path.stat()
        expected = sidecar.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return False
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return False
    return file_sha256(path) == expected


def publish(data_path: Path, final: Path) -> None:
    """Atomically move a finished temporary file into place, then write its sidecar."""
    digest = file_sha256(data_path)
    os.chmod(data_path, 0o644)
    os.replace(data_path, final)
    tmp_sidecar = final.with_name(f".{final.name}.{os.getpid()}.sha256.tmp")
    tmp_sidecar.write_text(digest + "\n")
    os.replace(tmp_sidecar, _sidecar(final))


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / "build.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_runner_wasm(directory: Path | None = None) -> Path:
    """The built runner component, building it on first use (prints progress to stderr)."""
    directory = directory or cache_dir()
    final = directory / f"runner-{runner_key()}.wasm"
    if verified(final):
        return final
    with build_lock(directory):
        if verified(final):
            return final
        print("tenantflow: building the wasm runner (first use, ~10 s)...", file=sys.stderr, flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as work:
            out = Path(work) / "runner.wasm"
            _componentize(out, Path(work))
            publish(out, final)
        prune(directory, keep=final.stem)
        print(
            f"tenantflow: wasm runner built in {time.monotonic() - started:.1f} s: {final}",
            file=sys.stderr,
            flush=True,
        )
    return final


def prune(directory: Path, keep: str) -> None:
    """Delete other runner builds not used for a day (a mapped file survives its deletion)."""
    cutoff = time.time() - _PRUNE_AFTER_SECONDS
    for path in directory.glob("runner-*"):
        if path.name.startswith(keep):
            continue
        with contextlib.suppress(OSError):
            if path.stat().st_atime < cutoff and path.stat().st_mtime < cutoff:
                path.unlink()


def _componentize(out: Path, work: Path) -> None:
    """Run componentize-py in a subprocess (it is memory hungry and must not share our process)."""
    command = [
        sys.executable,
        "-c",
        "import sys, componentize_py; sys.argv[0] = 'componentize-py'; sys.exit(componentize_py.script())",
        "-q",
        "-d",
        str(WIT_FILE),
        "-w",
        WORLD,
        "componentize",
        "-p",
        str(GUEST_DIR),
        "-o",
        str(out),
        APP_MODULE,
    ]
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.exists():
        lines = (result.stderr or result.stdout).strip().splitlines()
        # componentize-py appends a long native backtrace; keep the message above it.
        cut = next((i for i, line in enumerate(lines) if line.startswith("Stack backtrace")), len(lines))
        tail = "\n".join(lines[:cut][-20:])
        raise RuntimeError(f"building the wasm runner with componentize-py failed:\n{tail}")
