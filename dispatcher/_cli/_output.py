"""Human output in the spirit of ``wrangler workflows``: status icons, tables, durations."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

ICONS = {
    "queued": "⌛ Queued",
    "running": "▶ Running",
    "waiting": "⏳ Waiting",
    "waitingForPause": "⏸ Pausing",
    "paused": "⏸ Paused",
    "complete": "✅ Completed",
    "errored": "❌ Errored",
    "terminated": "🚫 Terminated",
}


def status_label(status: str | None) -> str:
    return ICONS.get(status or "", f"? {status}")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return None


def duration(start: str | None, end: str | None) -> str:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return "-"
    return human_seconds((ended - began).total_seconds())


def human_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


def short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    return digest[:19] if digest.startswith("sha256:") else digest


def width(text: str) -> int:
    """Display width: wide characters (most emoji) take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, size: int) -> str:
    return text + " " * (size - width(text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([width(h), *(width(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "┌" + "┬".join("─" * (w + 2) for w in widths) + "┐"
    print(line, file=out)
    print("│" + "│".join(f" {_pad(h, w)} " for h, w in zip(headers, widths, strict=True)) + "│", file=out)
    print("├" + "┼".join("─" * (w + 2) for w in widths) + "┤", file=out)
    for row in cells:
        print("│" + "│".join(f" {_pad(c, w)} " for c, w in zip(row, widths, strict=True)) + "│", file=out)
    print("└" + "┴".join("─" * (w + 2) for w in widths) + "┘", file=out)


def step_status(step: dict[str, Any]) -> str:
    kind = step.get("type")
    if kind == "step":
        success = step.get("success")
        return "✅ Success" if success is True else "❌ Failed" if success is False else "▶ Running"
    if kind in ("sleep", "waitForEvent"):
        if step.get("error"):
            return "❌ " + str(step["error"].get("name", "Error"))
        return "✅ Done" if step.get("finished") else "⏳ Waiting"
    return "🚫"


def describe(record: dict[str, Any], out: TextIO | None = None) -> None:
    """An instance with its step table, as ``wrangler workflows instances describe`` shows it."""
    out = out or sys.stdout
    print(f"Workflow:  {record.get('workflow', '-')}", file=out)
    print(f"Instance:  {record.get('id', '-')}", file=out)
    print(f"Status:    {status_label(record.get('status'))}", file=out)
    print(f"Version:   {short_digest(record.get('versionId'))}", file=out)
    print(f"Queued:    {record.get('queued') or '-'}", file=out)
    print(f"Duration:  {duration(record.get('start'), record.get('end'))}", file=out)
    print(f"Steps:     {record.get('step_count', 0)}", file=out)
    if record.get("params") is not None:
        print(f"Params:    {short(record['params'], 100)}", file=out)
    if record.get("output") is not None:
        print(f"Output:    {short(record['output'], 100)}", file=out)
    if record.get("error"):
        print(f"Error:     {record['error'].get('name')}: {record['error'].get('message')}", file=out)
    steps = [s for s in record.get("steps", []) if s.get("type") != "termination"]
    if steps:
        rows = []
        for step in steps:
            kind = {"step": "do", "sleep": "sleep", "waitForEvent": "waitForEvent"}.get(
                step["type"], step["type"]
            )
            attempts = len(step.get("attempts", [])) if step["type"] == "step" else "-"
            detail = step.get("output")
            if step["type"] == "waitForEvent":
                detail = (
                    (detail or {}).get("payload") if detail else f"waiting for {step.get('event_type')!r}"
                )
            if step.get("error"):
                detail = f"{step['error'].get('name')}: {step['error'].get('message')}"
            if step["type"] == "step" and step.get("success") is False and step.get("attempts"):
                error = step["attempts"][-1].get("error") or {}
                detail = f"{error.get('name')}: {error.get('message')}"
            rows.append(
                [kind, step.get("name", ""), step_status(step), duration(step.get("start"), step.get("end")),
                 attempts, short(detail, 48) if detail is not None else "-"]
            )  # fmt: skip
        print(file=out)
        table(["Type", "Name", "Status", "Duration", "Attempts", "Output"], rows, out)
    if any(s.get("type") == "termination" for s in record.get("steps", [])):
        print("🚫 Terminated through the API", file=out)
    logs = record.get("logs") or []
    if logs:
        print("\nLogs:", file=out)
        for line in logs[-20:]:
            for text in str(line.get("message", "")).rstrip().splitlines()[:20]:
                print(f"  [{line.get('level', 'info')}] {text}", file=out)


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))
