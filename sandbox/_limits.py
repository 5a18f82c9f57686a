"""Per-sandbox limits. Every limit is finite by default; tenant policy may override them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits for one sandbox. None of them can be caught or disabled by tenant code."""

    memory_bytes: int = 128 * MiB
    """Maximum guest memory (wasm linear memory, or RLIMIT_AS headroom of a restricted worker)."""
    cpu_seconds: float = 30.0
    """Guest CPU time per invocation (the restricted backend also enforces it with RLIMIT_CPU)."""
    wall_seconds: float = 60.0
    """Wall-clock time per invocation, host calls included; the backstop for a guest blocked forever."""
    output_bytes: int = 1 * MiB
    """Captured stdout/stderr per invocation; the excess is dropped and a truncation marker appended."""
    result_bytes: int = 1 * MiB
    """Size of one step result, or of the run's return value, encoded as JSON."""
    host_calls: int = 100_000
    """Host calls (step operations, binding calls) per invocation."""

    def __post_init__(self) -> None:
        for name in (
            "memory_bytes",
            "cpu_seconds",
            "wall_seconds",
            "output_bytes",
            "result_bytes",
            "host_calls",
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not value > 0
                or value == float("inf")
            ):
                raise ValueError(f"Limits.{name} must be a finite positive number, got {value!r}")

    def override(self, **changes: Any) -> Limits:
        """A copy with some limits replaced (unknown names are a TypeError)."""
        return replace(self, **changes)


DEFAULT_LIMITS = Limits()
