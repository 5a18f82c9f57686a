"""Validation of ids, names and payload sizes."""

from __future__ import annotations

import json
import re
from typing import Any

from ._errors import EngineValidationError, PayloadTooLargeError

_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*", re.ASCII)
MAX_ID_LENGTH = 100


def validate_id(value: object, field: str = "instance_id") -> str:
    """An instance id or event type: ``^[a-zA-Z0-9_][a-zA-Z0-9-_]*$``, at most 100 characters."""
    if not isinstance(value, str):
        raise EngineValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise EngineValidationError(field, f"must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}")
    if _ID.fullmatch(value) is None:
        raise EngineValidationError(
            field, f"{value!r} is invalid: use letters, digits, '_' and '-', not starting with '-'"
        )
    return value


def validate_step_name(value: object, max_length: int) -> str:
    """A step name: a non-empty string of at most ``max_length`` characters with no control characters."""
    if not isinstance(value, str):
        raise EngineValidationError("step name", f"must be a string, got {type(value).__name__}")
    if not value or len(value) > max_length:
        raise EngineValidationError("step name", f"must be 1 to {max_length} characters, got {len(value)}")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise EngineValidationError("step name", f"{value!r} contains control characters")
    return value


def encode_payload(value: Any, field: str, limit: int) -> str:
    """Encode a JSON payload compactly, enforcing its size cap (in UTF-8 bytes)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EngineValidationError(
            field, f"must be JSON data (objects, arrays, strings, finite numbers, booleans, null): {exc}"
        ) from None
    size = len(text) if text.isascii() else len(text.encode())
    if size > limit:
        raise PayloadTooLargeError(field, size, limit)
    return text


def decode_payload(text: str | None) -> Any:
    return None if text is None else json.loads(text)
