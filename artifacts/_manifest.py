"""The bundle manifest, ``tenantflow.toml`` at the bundle root.

    workflow = "orders"              # required; ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$, at most 64 characters
    entry = "main.py"                # optional; the module defining run(event, step)
    description = "Order pipeline"   # optional
    bindings = ["http", "kv"]        # optional; capabilities requested (granted by tenant policy)

    [limits]                         # optional; requests, clamped by the tenant's policy
    cpu_seconds = 10
    memory_bytes = 67108864

Unknown keys are an error naming the key, so a typo never silently drops a setting.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ._errors import Problem

MANIFEST_PATH = "tenantflow.toml"
WORKFLOW_NAME_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9\-_]*$")
WORKFLOW_NAME_MAX = 64
BINDING_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
INT_LIMITS = frozenset({"memory_bytes", "output_bytes", "result_bytes", "host_calls"})
FLOAT_LIMITS = frozenset({"cpu_seconds", "wall_seconds"})
KNOWN_KEYS = ("workflow", "entry", "description", "bindings", "limits")
MAX_DESCRIPTION = 1000


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed ``tenantflow.toml`` of a bundle."""

    workflow: str
    """Workflow name; the (namespace, workflow) pair names a series of versions."""
    entry: str = "main.py"
    """Bundle-relative path of the module defining ``run(event, step)``."""
    bindings: tuple[str, ...] = ()
    """Capabilities the code requests; the dispatcher grants only what the tenant's policy allows."""
    limits: Mapping[str, int | float] = field(default_factory=lambda: MappingProxyType({}))
    """Limit requests by name (``cpu_seconds``, ``memory_bytes``, ...); the policy clamps them."""
    description: str = ""
    """Free text for operators."""

    def __hash__(self) -> int:  # the limits mapping is read-only, so hash its items
        return hash(
            (self.workflow, self.entry, self.bindings, tuple(sorted(self.limits.items())), self.description)
        )

    def to_json(self) -> str:
        """Stable JSON form, as stored beside a version."""
        return json.dumps(
            {
                "workflow": self.workflow,
                "entry": self.entry,
                "bindings": list(self.bindings),
                "limits": dict(self.limits),
                "description": self.description,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            workflow=data["workflow"],
            entry=data["entry"],
            bindings=tuple(data["bindings"]),
            limits=MappingProxyType(dict(data["limits"])),
            description=data["description"],
        )


def workflow_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid workflow name, or None."""
    if not isinstance(name, str) or not WORKFLOW_NAME_RE.match(name) or len(name) > WORKFLOW_NAME_MAX:
        return (
            "a workflow name must match ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$ and have at most "
            f"{WORKFLOW_NAME_MAX} characters"
        )
    return None


def render_manifest(workflow: str, entry: str) -> bytes:
    """The manifest synthesized for a single-file upload (so the bundle describes itself)."""
    return f"workflow = {json.dumps(workflow)}\nentry = {json.dumps(entry)}\n".encode()


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def toml_problem(path: str, exc: tomllib.TOMLDecodeError) -> Problem:
    """A TOML syntax error as a positioned problem."""
    found = _TOML_POSITION.search(str(exc))
    message = _TOML_POSITION.sub("", str(exc)).strip()
    line, column = (int(found.group(1)), int(found.group(2))) if found else (None, None)
    return Problem(path, line, column, f"invalid TOML: {message}")


def parse_manifest(data: bytes) -> tuple[Manifest | None, list[Problem]]:
    """Parse and validate manifest bytes. Returns the manifest (None if unusable) and the problems."""
    problems: list[Problem] = []

    def problem(message: str) -> None:
        problems.append(Problem(MANIFEST_PATH, None, None, message))

    try:
        text = data.decode("utf-8")
        raw: dict[str, Any] = tomllib.loads(text)
    except UnicodeDecodeError:
        return None, problems  # reported by the UTF-8 check that runs on every file
    except tomllib.TOMLDecodeError as exc:
        return None, [toml_problem(MANIFEST_PATH, exc)]

    for key in raw:
        if key not in KNOWN_KEYS:
            problem(f"unknown key {key!r}; known keys are {', '.join(KNOWN_KEYS)}")

    workflow = raw.get("workflow")
    if workflow is None:
        problem("missing required key 'workflow' (e.g. workflow = \"orders\")")
    elif (why := workflow_name_problem(workflow)) is not None:
        problem(f"workflow {workflow!r} is invalid: {why}")

    entry = raw.get("entry", "main.py")
    if not isinstance(entry, str) or not entry.endswith(".py"):
        problem(f"entry {entry!r} must be the path of a .py file in the bundle")

    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        problem(f"description must be a string of at most {MAX_DESCRIPTION} characters")

    bindings = raw.get("bindings", [])
    if not isinstance(bindings, list):
        problem('bindings must be a list of names, e.g. bindings = ["http"]')
        bindings = []
    for name in bindings:
        if not isinstance(name, str) or not BINDING_NAME_RE.match(name):
            problem(f"binding {name!r} must match ^[a-z][a-z0-9_]*$ (at most 64 characters)")
    if len(set(map(str, bindings))) != len(bindings):
        problem("bindings must not repeat a name")

    limits = raw.get("limits", {})
    if not isinstance(limits, dict):
        problem("limits must be a table, e.g. [limits] cpu_seconds = 10")
        limits = {}
    known_limits = sorted(INT_LIMITS | FLOAT_LIMITS)
    for key, value in limits.items():
        if key not in INT_LIMITS and key not in FLOAT_LIMITS:
            problem(f"unknown key 'limits.{key}'; known limits are {', '.join(known_limits)}")
        elif key in INT_LIMITS and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problem(f"limits.{key} must be a positive integer, got {value!r}")
        elif key in FLOAT_LIMITS and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not value > 0
            or not math.isfinite(value)
        ):
            problem(f"limits.{key} must be a finite positive number, got {value!r}")

    if problems or not isinstance(workflow, str):
        return None, problems
    return (
        Manifest(
            workflow=workflow,
            entry=entry,
            bindings=tuple(bindings),
            limits=MappingProxyType(dict(limits)),
            description=description,
        ),
        [],
    )
