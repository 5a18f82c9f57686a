"""Frames over a real pipe: the reader's buffer, its caps and errors, and bounded adaptive spinning."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sandbox._restricted import _frames
from sandbox._restricted._frames import FrameError, FrameReader, Spin


class Pipe:
    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.reader = FrameReader(self.read_fd)
        self.write_open = True

    def close_write(self) -> None:
        if self.write_open:  # once: a closed number may already belong to another file
            self.write_open = False
            os.close(self.write_fd)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    pipe = Pipe()
    yield pipe
    pipe.close_write()
    os.close(pipe.read_fd)


def write_later(fd: int, data: bytes, delay: float) -> threading.Thread:
    def write() -> None:
        time.sleep(delay)
        _frames.write_all(fd, data)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_several_frames_in_one_write_and_a_clean_end(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    messages = [{"t": "call", "n": "step.do", "a": {"name": "é", "i": i}} for i in range(3)]
    os.write(write_fd, b"".join(_frames.encode(m) for m in messages))
    pipe.close_write()
    for message in messages:
        got, size = reader.read(1 << 20)
        assert got == message and size == len(_frames.encode(message)) - _frames.HEADER_SIZE
    assert reader.read(1 << 20) == (None, 0)


def test_a_frame_split_byte_by_byte(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    frame = _frames.encode({"v": list(range(50))})

    def trickle() -> None:
        for byte in frame:
            os.write(write_fd, bytes([byte]))
            time.sleep(0.0005)

    thread = threading.Thread(target=trickle)
    thread.start()
    assert reader.read(1 << 20)[0] == {"v": list(range(50))}
    thread.join()


def test_large_frames_grow_the_buffer_then_small_ones_still_read(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    big = {"v": "x" * (3 << 20)}
    thread = write_later(write_fd, _frames.encode(big) + _frames.encode({"v": 1}), 0)
    assert reader.read(4 << 20)[0] == big
    assert reader.read(4 << 20)[0] == {"v": 1}
    thread.join()


def test_caps_and_bad_frames(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    os.write(write_fd, _frames.encode({"v": "y" * 100}))
    asked: list[int] = []

    def cap() -> int:
        asked.append(1)
        return 50

    with pytest.raises(FrameError, match="exceeds the cap of 50"):
        reader.read(cap)
    assert asked == [1]  # asked once the header is there, not before


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x00", "truncated frame header"),
        (b"\x00\x00\x00\x10{}", "truncated frame body"),
        (_frames.pack(b"[NaN]"), "non-JSON constant NaN"),
        (_frames.pack(b'"\xff"'), "undecodable frame"),
        (_frames.pack(b"{"), "undecodable frame"),
    ],
)
def test_malformed_input_is_a_frame_error(pipe: Pipe, data: bytes, error: str) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    os.write(write_fd, data)
    pipe.close_write()
    with pytest.raises(FrameError, match=error):
        reader.read(1 << 20)


def test_spin_bounds_are_finite() -> None:
    for bad in (-0.1, 1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="spin bound"):
            Spin(bad)


class FakePoll:
    """Counts polls; reports the pipe readable once ``ready`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.ready = False

    def __call__(self, timeout: int) -> list[tuple[int, int]]:
        self.calls += 1
        return [(0, 1)] if self.ready else []


def spun(spin: Spin, ready: bool = False) -> bool:
    """Run one wait with a pipe that stays empty (or is ready); whether it spun at all."""
    poll = FakePoll()
    poll.ready = ready
    spin.wait(poll)
    return poll.calls > 0


@pytest.fixture
def preemptions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """This thread's involuntary context switches as the spinner sees them (set by the test)."""
    count = [0]
    monkeypatch.setattr(_frames, "_rusage", lambda who: SimpleNamespace(ru_nivcsw=count[0]))
    return count


def test_spinning_backs_off_after_failures_and_resets_on_success(preemptions: list[int]) -> None:
    spin = Spin(0.001)
    started = time.monotonic()
    assert spun(spin)  # the pipe stays empty: the spin runs out after 1 ms, a failure
    assert time.monotonic() - started < 0.5
    assert [spun(spin) for _ in range(2)] == [False, True]  # one wait blocked, then tried again
    assert [spun(spin) for _ in range(3)] == [False, False, True]  # a second failure: two blocked
    for _ in range(10):
        spin.failed()
    waits = [spun(spin, ready=True) for _ in range(_frames.MAX_SPIN_BACKOFF + 1)]
    assert waits == [False] * _frames.MAX_SPIN_BACKOFF + [True]  # capped at 64; this one succeeded
    spin.failed()
    assert [spun(spin) for _ in range(2)] == [False, True]  # the success had reset the backoff


def test_a_preempted_spinner_does_not_spin(preemptions: list[int]) -> None:
    spin = Spin(0.001)
    assert spun(spin, ready=True)
    preemptions[0] += 1  # another task took this thread's CPU since its last spin
    assert not spun(spin, ready=True)
    assert [spun(spin, ready=True) for _ in range(2)] == [False, True]  # counted as a failure
    assert not spun(Spin(0), ready=True)  # 0 never spins


def test_a_spin_returns_the_answer_whether_it_comes_early_or_late(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    spin = Spin(0.05)
    for delay in (0, 0.002, 0.1, 0.001):
        thread = write_later(write_fd, _frames.encode({"v": delay}), delay)
        assert reader.read(1 << 20, spin)[0] == {"v": delay}
        thread.join()


def test_a_spin_gives_way_to_another_task_on_its_cpu(pipe: Pipe) -> None:
    """With a CPU hog on the spinner's only CPU, the spin stops at once instead of running out."""
    reader, write_fd = pipe.reader, pipe.write_fd
    cpu = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    before = os.sched_getaffinity(0)
    thread = write_later(write_fd, _frames.encode({"v": 1}), 0.35)  # not pinned: started before
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # this thread only
        time.sleep(0.05)
        spin = Spin(0.5)
        started = time.thread_time()
        assert reader.read(1 << 20, spin)[0] == {"v": 1}
        used = time.thread_time() - started
        thread.join()
    finally:
        os.sched_setaffinity(0, before)
        hog.kill()
        hog.wait()
    assert used < 0.05, f"the spinner used {used:.3f} s of its CPU while another task wanted it"
    assert not spun(spin, ready=True)  # counted as a failed spin: the next wait blocks


def test_a_spin_burns_at_most_its_bound_of_cpu(pipe: Pipe) -> None:
    reader, write_fd = pipe.reader, pipe.write_fd
    spin = Spin(0.02)
    thread = write_later(write_fd, _frames.encode({"v": 1}), 0.3)
    started = time.thread_time()
    assert reader.read(1 << 20, spin)[0] == {"v": 1}
    used = time.thread_time() - started
    thread.join()
    assert used < 0.1, f"the reader used {used:.3f} s of CPU waiting 0.3 s with a 0.02 s spin"


def test_a_spin_ends_at_the_end_of_the_stream(pipe: Pipe) -> None:
    reader = pipe.reader
    spin = Spin(0.5)
    thread = threading.Thread(target=lambda: (time.sleep(0.01), pipe.close_write()))
    thread.start()
    started = time.monotonic()
    assert reader.read(1 << 20, spin) == (None, 0)
    assert time.monotonic() - started < 0.3
    thread.join()
