"""Per-instance logs: ``env.log`` lines and captured ``print`` output, capped per instance."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

TRUNCATED = "[tenantflow: log truncated]"


@dataclass(slots=True)
class _Log:
    lines: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    truncated: bool = False


class InstanceLogs:
    """Recent log lines per (tenant, instance), each instance capped at ``max_bytes``.

    Kept in memory for the most recent ``max_instances`` instances (the log is diagnostic; durable
    state lives in the journal).
    """

    def __init__(self, *, max_bytes: int = 64 * 1024, max_instances: int = 10_000) -> None:
        self._max_bytes = max_bytes
        self._max_instances = max_instances
        self._logs: OrderedDict[tuple[str, str], _Log] = OrderedDict()

    def append(self, key: tuple[str, str], level: str, message: str, *, max_bytes: int | None = None) -> None:
        cap = max_bytes or self._max_bytes
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Log()
            while len(self._logs) > self._max_instances:
                self._logs.popitem(last=False)
        self._logs.move_to_end(key)
        if log.truncated:
            return
        size = len(message.encode("utf-8", "replace")) + len(level)
        if log.size + size > cap:
            log.truncated = True
            log.lines.append({"time": time.time_ns() // 1_000_000, "level": "warn", "message": TRUNCATED})
            return
        log.size += size
        log.lines.append({"time": time.time_ns() // 1_000_000, "level": level[:16], "message": message})

    def get(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        log = self._logs.get(key)
        return [] if log is None else list(log.lines)

    def drop(self, key: tuple[str, str]) -> None:
        self._logs.pop(key, None)
