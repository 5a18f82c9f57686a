"""Length-prefixed JSON frames over pipes, used by both the parent and the worker.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. JSON (never
pickle) because the parent treats everything a worker sends as untrusted: a tenant that escaped
RestrictedPython inside a worker must not be able to make the parent execute anything. Decoding
is strict (no NaN/Infinity) and frames are size-capped by the reader.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import IO, Any

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size
MAX_FRAME = (1 << 32) - 1

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


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
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(stream: IO[bytes], max_size: int) -> Any:
    """Read one message; None at a clean end of stream. Raises FrameError on bad input."""
    return read_sized_frame(stream, max_size)[0]


def read_sized_frame(stream: IO[bytes], max_size: int | Callable[[], int]) -> tuple[Any, int]:
    """Read one message and its encoded size; (None, 0) at a clean end of stream.

    ``max_size`` may be a function: it is then asked once the header has arrived, because the cap
    depends on what is in flight at that moment, not when the (blocking) read began.
    """
    header = stream.read(HEADER_SIZE)
    if not header:
        return None, 0
    if len(header) != HEADER_SIZE:
        raise FrameError("truncated frame header")
    (size,) = _HEADER.unpack(header)
    if not isinstance(max_size, int):
        max_size = max_size()
    if size > max_size:
        raise FrameError(f"frame of {size} bytes exceeds the cap of {max_size}")
    body = stream.read(size)
    if len(body) != size:
        raise FrameError("truncated frame body")
    try:
        return _decoder.decode(body.decode("utf-8")), size
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"undecodable frame: {exc}") from None
