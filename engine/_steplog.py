"""The instance record with ``steps[]`` in the shape of Cloudflare's ``GET .../instances/{id}``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ._model import Instance, Status
from ._store import StepEntry

PayloadMapper = Callable[[Any], Any]


def cf_time(epoch_ms: int | None) -> str | None:
    """``2024-10-21 17:15:09.411``, as Cloudflare formats timestamps."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _error(name: str | None, message: str | None) -> dict[str, str] | None:
    return None if name is None else {"name": name, "message": message or ""}


def _step(entry: StepEntry, payload: PayloadMapper) -> dict[str, Any]:
    if entry.type == "step":
        return {
            "type": "step",
            "name": entry.name,
            "count": entry.count,
            "start": cf_time(entry.start_at),
            "end": cf_time(entry.end_at),
            "success": {"complete": True, "failed": False}.get(entry.state),
            "output": payload(json.loads(entry.output)) if entry.output is not None else None,
            "config": json.loads(entry.config) if entry.config else None,
            "attempts": [
                {
                    "start": cf_time(a["start"]),
                    "end": cf_time(a["end"]),
                    "success": a["success"],
                    "error": a["error"],
                }
                for a in entry.attempts
            ],
        }
    if entry.type == "sleep":
        return {
            "type": "sleep",
            "name": entry.name,
            "count": entry.count,
            "start": cf_time(entry.start_at),
            "end": cf_time(entry.wake_at),
            "finished": entry.state == "complete",
            "error": _error(entry.error_name, entry.error_message),
        }
    output = None
    if entry.output is not None:
        event = json.loads(entry.output)
        output = {**event, "payload": payload(event.get("payload"))}
    return {
        "type": "waitForEvent",
        "name": entry.name,
        "count": entry.count,
        "start": cf_time(entry.start_at),
        "end": cf_time(entry.end_at),
        "finished": entry.state in ("complete", "failed"),
        "event_type": entry.event_type,
        "output": output,
        "error": _error(entry.error_name, entry.error_message),
    }


def instance_record(instance: Instance, entries: list[StepEntry], payload: PayloadMapper) -> dict[str, Any]:
    """The full record. ``payload`` maps each stored payload for display (identity by default)."""
    steps = [_step(entry, payload) for entry in entries]
    if instance.status == Status.TERMINATED:
        steps.append({"type": "termination", "trigger": {"source": "api"}})
    success = {Status.COMPLETE: True, Status.ERRORED: False, Status.TERMINATED: False}.get(instance.status)
    return {
        "id": instance.id,
        "workflow": instance.workflow,
        "status": instance.status.value,
        "params": payload(instance.params),
        "output": payload(instance.output) if instance.output is not None else None,
        "error": instance.error.to_json() if instance.error else None,
        "queued": cf_time(instance.created_at),
        "start": cf_time(instance.started_at),
        "end": cf_time(instance.ended_at),
        "success": success,
        "trigger": {"source": "api"},
        "step_count": sum(1 for e in entries if e.type == "step"),
        "steps": steps,
    }
