"""The routing envelope around every payload the engine persists.

``{"v": 1, "route": {"tenant", "workflow", "version"}, "body": <the tenant's or client's JSON>}``

Only the dispatcher writes ``route``; clients and tenants only ever see ``body``. The route is a
hint to find code, never authorization and never a secret: the caller's tenant is always checked
against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ._errors import EnvelopeError

ENVELOPE_VERSION = 1
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Route:
    """Where the code for a payload lives: a tenant's workflow at one artifact version."""

    tenant: str
    workflow: str
    version: str
    """The artifact version digest, ``sha256:<hex>``."""

    def to_json(self) -> dict[str, str]:
        return {"tenant": self.tenant, "workflow": self.workflow, "version": self.version}


def wrap(route: Route, body: Any) -> dict[str, Any]:
    """The envelope for ``body``."""
    return {"v": ENVELOPE_VERSION, "route": route.to_json(), "body": body}


def unwrap(value: Any, *, expect: Route | None = None, what: str = "payload") -> tuple[Route, Any]:
    """Check an envelope and return (route, body).

    With ``expect``, the tenant and workflow must match (the version may differ: results recorded
    before a migration keep the version that produced them).
    """
    if not isinstance(value, dict) or set(value) != {"v", "route", "body"}:
        raise EnvelopeError(f"the stored {what} has no routing envelope; refusing to run tenant code for it")
    if value["v"] != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"the stored {what} has envelope version {value['v']!r}; expected {ENVELOPE_VERSION}"
        )
    raw = value["route"]
    if (
        not isinstance(raw, dict)
        or set(raw) != {"tenant", "workflow", "version"}
        or not all(isinstance(raw[k], str) and raw[k] for k in raw)
        or not _DIGEST.fullmatch(raw["version"])
    ):
        raise EnvelopeError(f"the stored {what} has a malformed route {raw!r}")
    route = Route(raw["tenant"], raw["workflow"], raw["version"])
    if expect is not None and (route.tenant, route.workflow) != (expect.tenant, expect.workflow):
        raise EnvelopeError(f"the stored {what} belongs to another route than its instance")
    return route, value["body"]


def body_of(value: Any) -> Any:
    """The body of an envelope for display; a value that is not an envelope is shown as null."""
    try:
        return unwrap(value)[1]
    except EnvelopeError:
        return None
