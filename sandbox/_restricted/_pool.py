"""Parent side of the restricted backend: a pool of rlimited worker processes.

Design note. Workers are started with ``subprocess`` (a fresh interpreter: forking the threaded
parent would copy its locks and state into the child), an environment holding nothing of the
parent, ``start_new_session=True`` (so a wall-clock kill takes the whole process group) and pipes
on stdin/stdout carrying length-prefixed JSON frames (``_frames.py``). Each worker has one reader
thread in the parent: it receives the worker's frames, serves the guest's host calls by calling
``HostBridge.call`` synchronously on that thread (the protocol requires a non-loop thread, and this
costs no thread hop per call), and hands final results to the event loop. While a host call is
outstanding, the side waiting for the answer spins briefly before blocking (``PoolConfig.spin_us``;
see the design note in ``_frames.py``).

One invocation runs on a worker at a time. Routing prefers an idle worker that already has the
bundle warm (its own LRU, mirrored here), else any idle worker, else a bounded FIFO of waiters.
A worker that dies, hits a limit or misbehaves is killed and replaced; only its in-flight
invocation fails. The parent treats every frame from a worker as untrusted input.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .._errors import (
    LimitExceededError,
    LimitName,
    LoadError,
    SandboxClosedError,
    SandboxCrashError,
    SandboxError,
    TenantError,
)
from .._limits import Limits, MiB
from .._protocol import HostBridge, HostCallError, InvokeResult
from . import _frames
from ._policy import EXIT_MEMORY

_LIMIT_NAMES = frozenset({"cpu", "memory", "output", "result_size", "host_calls", "wall", "recursion"})
_IDLE_FRAME_CAP = 1 << 20
_AFFINITY_WINDOW = 8
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from sandbox._restricted._worker import main; del sys.argv[1]; main()"
)


class PoolBusyError(SandboxError):
    """Every worker is busy and the waiting queue is full; retry later or grow the pool."""


class NotDeliveredError(SandboxCrashError):
    """The worker died before a request reached it (safe to retry on another worker)."""


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """How the restricted backend's worker pool is sized and recycled."""

    size: int = max(1, min(4, os.cpu_count() or 1))
    """Worker processes kept running."""
    max_queue: int = 1024
    """Invocations allowed to wait for a worker; more fail with ``PoolBusyError``."""
    recycle_after: int = 1000
    """A worker is replaced after this many invocations (finalizers, leaked state, fragmentation)."""
    lru_size: int = 64
    """Bundles each worker keeps loaded (per-worker LRU keyed by bundle digest)."""
    memory_ceiling: int = 1024 * MiB
    """Hard RLIMIT_AS headroom of a worker; per-invocation soft limits come from ``Limits``."""
    cpu_ceiling: int = 3600
    """Hard RLIMIT_CPU of a worker over its lifetime (seconds, >= 2); it is recycled at half of it."""
    start_timeout: float = 30.0
    """Seconds a new worker may take to become ready."""
    worker_stderr: bool = False
    """Let workers write to the parent's stderr (debugging); by default it is discarded."""
    spin_us: int = 100
    """Microseconds a side that expects an answer polls its pipe before blocking: the worker after
    sending a host call, the parent's reader after answering one (never while idle). It spares the
    wake-up of an idle vCPU per direction (~25-35 µs on a quiet VM host, ~100 µs on a busy one).
    Measured on an idle guest whose wake-ups cost ~100 µs: host call 220 µs without spinning, 198
    µs at 50 (the answer often comes later than that), 68 µs at 100, 64 µs at 200. A spin ends as
    soon as the answer comes; one that runs out, or a CPU that looks contended, makes the next 1,
    2, 4 ... 64 waits block at once. The worker's spinning counts against the invocation's CPU
    budget. 0 turns it off; at most 10,000."""
    worker_user: str | int | None = None
    """Run workers as this user (and its primary group, no supplementary groups). Recommended when
    the platform runs as root: an escape from RestrictedPython then lands in an unprivileged
    process. The Python installation and this package must be readable by that user."""

    def __post_init__(self) -> None:
        for name in ("size", "max_queue", "recycle_after", "lru_size", "memory_ceiling", "cpu_ceiling"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PoolConfig.{name} must be a positive integer, got {value!r}")
        if (
            not isinstance(self.spin_us, int)
            or isinstance(self.spin_us, bool)
            or not 0 <= self.spin_us <= 10_000
        ):
            raise ValueError(f"PoolConfig.spin_us must be an integer from 0 to 10000, got {self.spin_us!r}")
        if self.cpu_ceiling < 2:
            raise ValueError("PoolConfig.cpu_ceiling must be at least 2 seconds")
        if not self.start_timeout > 0:
            raise ValueError("PoolConfig.start_timeout must be positive")


def _identity(user: str | int | None) -> dict[str, Any]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def limits_frame(limits: Limits) -> dict[str, Any]:
    return {
        "cpu": limits.cpu_seconds,
        "mem": limits.memory_bytes,
        "out": limits.output_bytes,
        "res": limits.result_bytes,
        "calls": limits.host_calls,
    }


class _Call:
    """One request in flight on a worker (a load or an invocation)."""

    __slots__ = (
        "bridge",
        "error",
        "frame_size",
        "future",
        "host_calls",
        "limit",
        "limits",
        "loop",
        "suspended",
        "timer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits, bridge: HostBridge | None) -> None:
        self.loop = loop
        self.limits = limits
        self.bridge = bridge
        self.future: asyncio.Future[Any] = loop.create_future()
        self.host_calls = 0
        self.limit: LimitExceededError | None = None
        self.error: SandboxError | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.suspended = False
        self.frame_size = 0

    def settle(self, value: Any) -> None:
        """Thread-safe: deliver the outcome (a message dict or a SandboxError) once."""
        self.loop.call_soon_threadsafe(self._settle, value)

    def _settle(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "was lost"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class WorkerProcess:
    """A worker process, its pipe, and the reader thread that serves it."""

    def __init__(self, pool: WorkerPool, worker_id: int) -> None:
        self.pool = pool
        self.id = worker_id
        self.warm: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.invocations = 0
        self.cpu_ms = 0.0
        self.ready = False
        self.dead = False
        self.started = time.monotonic()
        self._call: _Call | None = None
        self.exit_cpu = 0.0
        self._killed_for: str | None = None
        config = pool.config
        boot_config = json.dumps(
            {
                "lru_size": config.lru_size,
                "memory_ceiling": config.memory_ceiling,
                "cpu_ceiling": config.cpu_ceiling,
                "spin_us": config.spin_us,
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-P", "-B", "-c", _BOOT, _PACKAGE_ROOT, boot_config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if config.worker_stderr else subprocess.DEVNULL,
            env={"PYTHONHASHSEED": "0"},
            cwd="/",
            close_fds=True,
            start_new_session=True,
            **_identity(config.worker_user),
        )
        self.pid = self.proc.pid
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._write_fd = self.proc.stdin.fileno()
        self._reader = _frames.FrameReader(self.proc.stdout.fileno())
        self._spin = _frames.Spin(config.spin_us / 1e6)
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._read_loop, name=f"restricted-worker-{worker_id}", daemon=True
        )
        self._thread.start()

    # --- reader thread -----------------------------------------------------------------------

    def _frame_cap(self) -> int:
        call = self._call
        if call is None:
            return _IDLE_FRAME_CAP
        limits = call.limits
        return 8 * (limits.result_bytes + limits.output_bytes) + _IDLE_FRAME_CAP

    def _read_loop(self) -> None:
        read, spin = self._reader.read, None
        try:
            while True:
                # After answering a host call the worker's next frame is due soon: spin first.
                message, size = read(self._frame_cap, spin)
                if message is None:
                    break
                if not isinstance(message, dict):
                    raise _frames.FrameError("frame is not an object")
                kind = message.get("t")
                spin = None
                if kind == "call":
                    if not self._serve_call(message):
                        break
                    spin = self._spin
                elif kind == "ready":
                    self.pool.loop.call_soon_threadsafe(self.pool.worker_ready, self)
                elif kind == "pong":
                    continue
                else:
                    call = self._call
                    if call is None:
                        raise _frames.FrameError(f"unexpected frame {kind!r}")
                    self._call = None
                    call.frame_size = size
                    call.settle(message)
        except (_frames.FrameError, OSError, ValueError) as exc:
            call = self._call
            if call is not None and call.error is None:
                call.error = SandboxCrashError(f"the sandbox worker sent an invalid message ({exc})")
            self.kill()
        finally:
            code = self._reap()
            self._close_pipes()
            with contextlib.suppress(RuntimeError):  # a closed loop: the pool is gone
                self.pool.loop.call_soon_threadsafe(self.pool.worker_exited, self, code)

    def _close_pipes(self) -> None:
        with self._write_lock:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()

    def _reap(self) -> int | None:
        """Wait for the process (it closed its pipe, so it is exiting) and note its CPU time."""
        deadline = time.monotonic() + 5.0
        while True:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.proc.returncode
            if pid:
                code = os.waitstatus_to_exitcode(status)
                self.proc.returncode = code
                self.exit_cpu = usage.ru_utime + usage.ru_stime
                return code
            if time.monotonic() > deadline:
                self.kill()  # it closed the pipe but lingers: a hostile worker
                deadline = time.monotonic() + 5.0
            time.sleep(0.001)

    def _serve_call(self, message: dict[str, Any]) -> bool:
        call = self._call
        if call is None or call.bridge is None:
            raise _frames.FrameError("host call outside an invocation")
        name, args = message.get("n"), message.get("a")
        if not isinstance(name, str):
            raise _frames.FrameError("host call without a name")
        call.host_calls += 1
        reply: dict[str, Any]
        if call.limit is not None:
            reply = {"limit": call.limit.limit, "m": call.limit.message}
        elif call.host_calls > call.limits.host_calls:
            call.limit = LimitExceededError(
                "host_calls", f"more than {call.limits.host_calls} host calls in one invocation"
            )
            reply = {"limit": "host_calls", "m": call.limit.message}
        else:
            try:
                value = call.bridge.call(name, args)
                if type(value) is dict and value.get("action") == "suspend":
                    call.suspended = True
                reply = {"v": value}
            except HostCallError as exc:
                reply = {"type": exc.type_name, "m": exc.message}
            except BaseException as exc:  # a host bug: never shown to the tenant
                call.error = SandboxCrashError(f"the host failed to serve {name!r} ({type(exc).__name__})")
                self.kill()
                return False
        try:
            frame = _frames.encode(reply)
        except (TypeError, ValueError):
            call.error = SandboxCrashError(f"the host answered {name!r} with a non-JSON value")
            self.kill()
            return False
        try:
            self._write(frame)
        except OSError:
            return False
        return True

    # --- event loop side ---------------------------------------------------------------------

    def kill(self, reason: str | None = None) -> None:
        """Kill the worker's whole process group (idempotent, any thread)."""
        if reason is not None and self._killed_for is None:
            self._killed_for = reason
        self.dead = True
        if self.proc.returncode is not None:
            return  # already reaped: its pid (and group id) may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def request(
        self, message: dict[str, Any], limits: Limits, bridge: HostBridge | None
    ) -> tuple[dict[str, Any], _Call]:
        """Send one load/invoke; its final message (untrusted) and the call record. Raises SandboxError."""
        try:
            frame = _frames.encode(message)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the event must be a JSON value: {exc}") from None
        loop = self.pool.loop
        call = _Call(loop, limits, bridge)
        self._call = call
        try:
            if len(frame) > 65536:
                await asyncio.to_thread(self._write, frame)
            else:
                self._write(frame)
        except OSError:
            self._call = None
            self.kill()
            raise NotDeliveredError("the sandbox worker was gone before the request reached it") from None
        except asyncio.CancelledError:
            self.kill("cancelled")
            raise
        call.timer = loop.call_later(limits.wall_seconds, self._wall_expired, call)
        try:
            outcome = await call.future
        except asyncio.CancelledError:
            self.kill("cancelled")
            raise
        finally:
            call.timer.cancel()
        if call.error is not None:
            raise call.error
        if call.limit is not None:
            raise call.limit
        if isinstance(outcome, SandboxError):
            raise outcome
        if not isinstance(outcome, dict):
            raise SandboxCrashError("the sandbox worker stopped unexpectedly")
        return outcome, call

    def _write(self, frame: bytes) -> None:
        with self._write_lock:
            if self.proc.stdin is None or self.proc.stdin.closed:
                raise BrokenPipeError("the worker is gone")
            _frames.write_all(self._write_fd, frame)

    def _wall_expired(self, call: _Call) -> None:
        if self._call is call and not call.future.done():
            call.limit = LimitExceededError(
                "wall", f"the invocation ran for more than {call.limits.wall_seconds} s of wall-clock time"
            )
            self.kill("wall")
            call.future.set_result(None)
            self.pool.discard(self)

    def exited(self, code: int | None) -> None:
        """The process is gone: settle its in-flight request with the right error."""
        self.dead = True
        call, self._call = self._call, None
        if call is None or call.future.done():
            return
        if call.error is None and call.limit is None:
            if code == EXIT_MEMORY:
                call.limit = LimitExceededError(
                    "memory", f"the invocation needed more than {call.limits.memory_bytes} bytes of memory"
                )
            elif code in (-signal.SIGPROF, -signal.SIGXCPU) or (
                code == -signal.SIGKILL and self.exit_cpu >= self.pool.config.cpu_ceiling - 0.5
            ):
                call.limit = LimitExceededError(
                    "cpu", f"the invocation used more than {call.limits.cpu_seconds} s of CPU time"
                )
            elif call.host_calls == 0 and self._killed_for is None:
                # Nothing of the invocation reached the host: running it again elsewhere is safe
                # (a worker killed from outside, the OOM killer, a crash while still idle).
                call.error = NotDeliveredError(f"the sandbox worker {_describe_exit(code)} before answering")
            else:
                call.error = SandboxCrashError(
                    f"the sandbox worker {_describe_exit(code)}; it has been replaced"
                )
        call.future.set_result(None)

    def shutdown(self) -> None:
        """Ask the worker to exit, then make sure it does (any thread)."""
        self.dead = True
        with self._write_lock:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                with contextlib.suppress(OSError, ValueError):
                    _frames.write_all(self._write_fd, _frames.encode({"t": "exit"}))
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        self._thread.join(1.0)  # the reader reaps the process once the pipe closes
        if self._thread.is_alive():
            self.kill()
            self._thread.join(5.0)


class WorkerPool:
    """Worker processes with affinity routing, replacement and recycling."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self._ids = itertools.count(1)
        self._workers: dict[int, WorkerProcess] = {}
        self._idle: list[WorkerProcess] = []
        self._waiters: collections.deque[tuple[str, asyncio.Future[WorkerProcess]]] = collections.deque()
        self._closed = False
        self._started = False
        self._start_failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.replaced = 0
        self.recycled = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # --- lifecycle ---------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._closed:
            raise SandboxClosedError("the restricted sandbox backend is closed")
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        for _ in range(self.config.size):
            self._spawn()

    def _spawn(self) -> None:
        if self._closed:
            return
        worker = WorkerProcess(self, next(self._ids))
        self._workers[worker.id] = worker
        self.loop.call_later(self.config.start_timeout, self._check_started, worker)

    def _check_started(self, worker: WorkerProcess) -> None:
        if not worker.ready and not worker.dead:
            worker.kill("start timeout")

    def worker_ready(self, worker: WorkerProcess) -> None:
        if worker.dead or worker.ready:
            return
        worker.ready = True
        self._start_failures = 0
        self._make_idle(worker)

    def worker_exited(self, worker: WorkerProcess, code: int | None) -> None:
        was_ready = worker.ready
        worker.exited(code)
        if self._workers.get(worker.id) is not worker:
            return  # already discarded (killed for its wall clock, recycled)
        self._forget(worker)
        if self._closed:
            return
        if not was_ready:
            self._start_failures += 1
            if self._start_failures >= 3:
                error = SandboxCrashError(
                    f"restricted sandbox workers fail to start (the last one {_describe_exit(code)})"
                )
                while self._waiters:
                    _digest, future = self._waiters.popleft()
                    if not future.done():
                        future.set_exception(error)
                if not self._workers:
                    self.loop.call_later(1.0, self._spawn)
                return
        self.replaced += 1
        self._spawn()

    def _forget(self, worker: WorkerProcess) -> None:
        self._workers.pop(worker.id, None)
        if worker in self._idle:
            self._idle.remove(worker)

    def discard(self, worker: WorkerProcess) -> None:
        """Replace a worker that was killed while its reader may still be busy (wall clock)."""
        if self._workers.get(worker.id) is not worker:
            return
        self._forget(worker)
        if not self._closed:
            self.replaced += 1
            self._spawn()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            _digest, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(SandboxClosedError("the restricted sandbox backend is closed"))
        workers = list(self._workers.values())
        self._workers.clear()
        self._idle.clear()
        if workers:
            await asyncio.gather(*(asyncio.to_thread(w.shutdown) for w in workers))

    # --- routing -----------------------------------------------------------------------------

    async def acquire(self, digest: str) -> WorkerProcess:
        self._ensure_started()
        self._idle = [w for w in self._idle if not w.dead]
        for index in range(len(self._idle) - 1, -1, -1):
            if digest in self._idle[index].warm:
                return self._idle.pop(index)
        if self._idle:
            return self._idle.pop(0)
        if len(self._waiters) >= self.config.max_queue:
            raise PoolBusyError(
                f"all {self.config.size} restricted sandbox workers are busy and {len(self._waiters)} "
                "invocations are already waiting; retry later or raise the pool size or queue length"
            )
        future: asyncio.Future[WorkerProcess] = self.loop.create_future()
        entry = (digest, future)
        self._waiters.append(entry)
        try:
            return await future
        except asyncio.CancelledError:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())
            raise

    def release(self, worker: WorkerProcess) -> None:
        if self._closed:
            return
        if worker.dead:
            self.discard(worker)
            return
        if (
            worker.invocations >= self.config.recycle_after
            or worker.cpu_ms / 1000 > self.config.cpu_ceiling / 2
        ):
            self._workers.pop(worker.id, None)
            self.recycled += 1
            self.loop.run_in_executor(None, worker.shutdown)
            self._spawn()
            return
        self._make_idle(worker)

    def _make_idle(self, worker: WorkerProcess) -> None:
        while self._waiters:
            # Affinity among the oldest few waiters only, so that no waiter starves.
            head = itertools.islice(self._waiters, _AFFINITY_WINDOW)
            chosen = next((w for w in head if w[0] in worker.warm), None) or self._waiters[0]
            self._waiters.remove(chosen)
            if not chosen[1].done():
                chosen[1].set_result(worker)
                return
        self._idle.append(worker)

    def mark_warm(self, worker: WorkerProcess, digest: str) -> None:
        worker.warm[digest] = None
        worker.warm.move_to_end(digest)
        while len(worker.warm) > self.config.lru_size:
            worker.warm.popitem(last=False)

    # --- introspection -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Worker ids, pids and warm digests (for tests, metrics and operators)."""
        return {
            "workers": [
                {
                    "id": w.id,
                    "pid": w.pid,
                    "ready": w.ready,
                    "idle": w in self._idle,
                    "invocations": w.invocations,
                    "warm": list(w.warm),
                }
                for w in self._workers.values()
            ],
            "waiting": len(self._waiters),
            "replaced": self.replaced,
            "recycled": self.recycled,
        }

    async def wait_ready(self) -> None:
        """Start the pool if needed and wait until every worker is ready (tests, warm-up)."""
        self._ensure_started()
        deadline = time.monotonic() + self.config.start_timeout
        while time.monotonic() < deadline:
            if len(self._workers) >= self.config.size and all(w.ready for w in self._workers.values()):
                return
            await asyncio.sleep(0.005)
        raise SandboxCrashError("restricted sandbox workers did not become ready in time")

    def worker(self, worker_id: int) -> WorkerProcess | None:
        return self._workers.get(worker_id)


def limit_from_message(message: dict[str, Any]) -> LimitExceededError:
    limit = message.get("limit")
    if limit not in _LIMIT_NAMES:
        raise SandboxCrashError("the sandbox worker reported an unknown limit")
    return LimitExceededError(cast(LimitName, limit), _text(message.get("m") or message.get("message")))


_HOST_PATHS = sorted(
    {
        p
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, _PACKAGE_ROOT, str(Path.home()))
        if len(p) > 1
    },
    key=len,
    reverse=True,
)


def _text(value: Any, cap: int = 65536) -> str:
    """A string from a worker message, capped, with host paths scrubbed (defense in depth)."""
    if not isinstance(value, str):
        return ""
    text: str = value[:cap]
    for path in _HOST_PATHS:
        if path in text:
            text = text.replace(path, "<host>")
    return text


def result_from_message(message: dict[str, Any], call: _Call, worker: WorkerProcess) -> InvokeResult:
    """Translate a worker's outcome of an invocation (untrusted) into a result or an error.

    The host's own records win: host-call counts, suspension (any ``suspend`` answer) and sizes.
    """
    limits = call.limits
    status = message.get("status")
    stdout = _text(message.get("stdout"), limits.output_bytes + 1024)
    truncated = message.get("stdout_truncated") is True
    if len(stdout) > limits.output_bytes + 128:  # host-side backstop of the guest's cap
        stdout, truncated = stdout[: limits.output_bytes] + "\n[tenantflow: output truncated]\n", True
    stats: dict[str, float] = {"worker_id": float(worker.id), "worker_pid": float(worker.pid)}
    raw_stats = message.get("stats")
    if isinstance(raw_stats, dict):
        for key in ("guest_ms", "cpu_ms"):
            value = raw_stats.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                stats[key] = float(value)
    worker.cpu_ms += stats.get("cpu_ms", 0.0)
    if call.suspended:
        return InvokeResult(None, stdout, truncated, call.host_calls, stats, suspended=True)
    if status == "ok":
        output = message.get("output")
        if call.frame_size > limits.result_bytes and len(_frames.encode(output)) - 4 > limits.result_bytes:
            raise LimitExceededError("result_size", f"run() output exceeds {limits.result_bytes} bytes")
        return InvokeResult(output, stdout, truncated, call.host_calls, stats)
    if status == "error":
        error = message.get("error")
        error = error if isinstance(error, dict) else {}
        raise TenantError(
            _text(error.get("type"), 200) or "Exception",
            _text(error.get("message")),
            _text(error.get("traceback")),
        )
    if status == "limit":
        raise limit_from_message(message)
    if status == "suspended":
        raise TenantError("RuntimeError", "the workflow suspended without a suspend answer from the host")
    raise SandboxCrashError(f"the sandbox worker reported an unexpected outcome {str(status)[:40]!r}")


def load_error_from_message(message: dict[str, Any]) -> LoadError:
    file = message.get("file")
    line = message.get("line")
    return LoadError(
        _text(message.get("m")) or "the bundle could not be loaded",
        file=file if isinstance(file, str) else None,
        line=line if isinstance(line, int) and not isinstance(line, bool) else None,
    )
