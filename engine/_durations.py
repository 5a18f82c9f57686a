"""Durations: a number of milliseconds, or ``"<n> <unit>"`` with unit second|minute|hour|day|week|month|year[s]."""

from __future__ import annotations

import math
import re

from ._errors import EngineValidationError

_UNIT_MS = {
    "millisecond": 1,
    "second": 1_000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*", re.ASCII)
MAX_DURATION_MS = 365 * 86_400_000 * 100
"""Upper bound for any duration value (100 years); specific uses apply tighter caps."""


def parse_duration(value: object, *, field: str = "duration") -> int:
    """Return ``value`` as whole milliseconds, or raise ``EngineValidationError`` saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EngineValidationError(
            field, f"must be milliseconds or a string like '10 seconds', got {type(value).__name__}"
        )
    if isinstance(value, str):
        match = _PATTERN.fullmatch(value.lower())
        if match is None or match.group(2) not in _UNIT_MS:
            units = "|".join(u for u in _UNIT_MS if u != "millisecond")
            raise EngineValidationError(
                field, f"{value!r} is not a duration; use milliseconds or '<n> {units}[s]'"
            )
        ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
    else:
        ms = float(value)
    if math.isnan(ms) or math.isinf(ms) or ms < 0:
        raise EngineValidationError(field, f"must be a finite, non-negative duration, got {value!r}")
    if ms > MAX_DURATION_MS:
        raise EngineValidationError(field, f"{value!r} is longer than the maximum of 100 years")
    return int(ms)
