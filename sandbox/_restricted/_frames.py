"""Length-prefixed JSON frames over pipes, used by both the parent and the worker.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. JSON (never
pickle) because the parent treats everything a worker sends as untrusted: a tenant that escaped
RestrictedPython inside a worker must not be able to make the parent execute anything. Decoding
is strict (no NaN/Infinity) and frames are size-capped by the reader.

Design note (spinning). A host call is a round trip over two pipes. On this class of machine (a
VM whose idle vCPUs halt) a side that blocks in ``read`` lets its vCPU go idle, and waking it
costs ~25-35 µs per direction: the round trip measured ~21 µs with both vCPUs awake and ~60 µs
otherwise. So a side that *expects* an answer soon (the worker after sending a host call, the
parent after answering one) first polls its pipe without blocking for a bounded time
(``PoolConfig.spin_us``) and only then blocks. Nobody spins while idle (a worker waiting for its
next request, the parent waiting for an invocation's outcome). A spin only pays where a CPU
would otherwise idle, so it gives up as soon as the CPU looks contended: when the thread was
preempted since its last spin (``ru_nivcsw`` of ``getrusage(RUSAGE_THREAD)``) or loses its CPU
while spinning (a round of polling that took over 50 µs). A contended CPU or a spin that ran
out is a failure, and each failure doubles the number of following waits that block at once (1,
2, 4 ... 64; a successful spin resets it). So on a saturated machine, or with a host whose
answers are slower than the bound (one that hops to the event loop, long step callbacks),
spinning costs at most about one bound per 64 waits. Tried first: a spin that re-armed after
any quick answer (host calls ~1.5x slower under a load of ~10 runnable tasks on 2 vCPUs), then a
spin that called ``sched_yield`` every round (under load each yield gives the CPU away for a
whole time slice, and the CPU per host call still rose by ~15%). The kernel's own lever, the
cpuidle-haltpoll governor's ``guest_halt_poll_ns``, is machine-wide, and 0 (off) on the VMs
measured here.
"""

from __future__ import annotations

import json
import os
import resource
import select
import struct
import time
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size
MAX_FRAME = (1 << 32) - 1
_BUFFER = 1 << 16
"""The reader's resting buffer; a larger frame grows it for as long as that frame needs."""
MAX_SPIN_BACKOFF = 64
"""After failed spins, at most this many waits in a row block without spinning."""

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_clock = time.perf_counter
_rusage = resource.getrusage
_THREAD = resource.RUSAGE_THREAD
_DESCHEDULED = 50e-6
"""A spin round (one ``poll``) this slow means the spinning thread lost its CPU: stop spinning."""


class FrameError(Exception):
    """A malformed or oversized frame: the peer is broken or hostile."""


def _reject_constant(name: str) -> Any:
    raise FrameError(f"non-JSON constant {name} in frame")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def encode_text(message: Any) -> str:
    """The JSON text of a message (raises ValueError/TypeError for non-JSON values)."""
    text: str = _encoder.encode(message)
    return text


def pack(body: bytes) -> bytes:
    """Frame an already-encoded JSON body."""
    if len(body) > MAX_FRAME:
        raise ValueError("frame too large")
    return _HEADER.pack(len(body)) + body


def encode(message: Any) -> bytes:
    """Encode one message as a frame (raises ValueError/TypeError for non-JSON values)."""
    return pack(_encoder.encode(message).encode("utf-8"))


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a pipe file descriptor (pipes may accept partial writes)."""
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Spin:
    """How long one waiting side polls before blocking: bounded and adaptive (module docstring)."""

    __slots__ = ("_backoff", "_preempted", "_skip", "seconds")

    def __init__(self, seconds: float) -> None:
        if not 0 <= seconds < 1:
            raise ValueError(f"a spin bound must be in [0, 1) seconds, got {seconds!r}")
        self.seconds = seconds
        """The bound; 0 never spins."""
        self._backoff = 0
        self._skip = 0
        self._preempted = -1

    def succeeded(self) -> None:
        """The answer came while spinning."""
        self._backoff = 0

    def failed(self) -> None:
        """The spin ran out, or the CPU is contended: block on the next 1, 2, 4 ... 64 waits."""
        self._backoff = min(MAX_SPIN_BACKOFF, 2 * self._backoff or 1)
        self._skip = self._backoff

    def contended(self) -> bool:
        """True when this thread was preempted since the last check (another task wanted its CPU)."""
        preempted = _rusage(_THREAD).ru_nivcsw
        previous, self._preempted = self._preempted, preempted
        return previous >= 0 and preempted != previous

    def wait(self, poll: Callable[[int], list[tuple[int, int]]]) -> None:
        """Spin (bounded) until ``poll(0)`` reports the pipe readable, unless it should not."""
        if self._skip:
            self._skip -= 1
            return
        if not self.seconds:
            return
        if self.contended():
            self.failed()
            return
        now = _clock()
        deadline = now + self.seconds
        while not poll(0):
            last, now = now, _clock()
            if now >= deadline or now - last > _DESCHEDULED:
                self.failed()
                return
        self.succeeded()


class FrameReader:
    """Frames from a pipe file descriptor, read into one reusable buffer (a frame usually arrives
    in one ``readv``); ``read`` may spin first (see ``Spin``)."""

    __slots__ = ("_buffer", "_end", "_fd", "_poll", "_start")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray(_BUFFER)
        self._start = 0
        self._end = 0
        self._poll = select.poll()  # no file descriptor of its own (the worker's RLIMIT_NOFILE is tight)
        self._poll.register(fd, select.POLLIN)

    def read(self, max_size: int | Callable[[], int], spin: Spin | None = None) -> tuple[Any, int]:
        """Read one message and its encoded size; (None, 0) at a clean end of stream.

        ``max_size`` may be a function: it is then asked once the header has arrived, because the
        cap depends on what is in flight at that moment, not when the (blocking) read began.
        ``spin``: an answer is expected; poll for up to its budget before blocking.
        """
        if self._end - self._start < HEADER_SIZE:
            if spin is not None and self._end == self._start:
                spin.wait(self._poll.poll)
            if not self._fill(HEADER_SIZE):
                if self._end != self._start:
                    raise FrameError("truncated frame header")
                return None, 0
        (size,) = _HEADER.unpack_from(self._buffer, self._start)
        if not isinstance(max_size, int):
            max_size = max_size()
        if size > max_size:
            raise FrameError(f"frame of {size} bytes exceeds the cap of {max_size}")
        if self._end - self._start < HEADER_SIZE + size and not self._fill(HEADER_SIZE + size):
            raise FrameError("truncated frame body")
        body = self._start + HEADER_SIZE
        self._start = body + size
        try:
            with memoryview(self._buffer) as view:
                text = str(view[body : self._start], "utf-8")
            message = _decoder.decode(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FrameError(f"undecodable frame: {exc}") from None
        finally:
            if self._start == self._end:
                self._start = self._end = 0
                if len(self._buffer) > _BUFFER:
                    self._buffer = bytearray(_BUFFER)  # do not keep a large frame's room
        return message, size

    def _fill(self, need: int) -> bool:
        """Read until ``need`` bytes are buffered; False at the end of the stream."""
        while self._end - self._start < need:
            if len(self._buffer) - self._start < need:
                self._make_room(need)
            with memoryview(self._buffer) as view:
                count = os.readv(self._fd, [view[self._end :]])
            if not count:
                return False
            self._end += count
        return True

    def _make_room(self, need: int) -> None:
        pending = self._buffer[self._start : self._end]
        size = max(_BUFFER, need)
        self._buffer = bytearray(size) if len(self._buffer) < size else self._buffer
        self._buffer[: len(pending)] = pending
        self._start, self._end = 0, len(pending)
