"""The OpenAPI 3.1 document the server serves at ``/openapi.json``.

Built from one table of operations so that adding a route means adding one row here; a test
checks that every route of the app appears in the document.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ._errors import ErrorCode

_CF = "/client/v4/accounts/{account_id}/workflows"
_TF = "/tenantflow/v1"
_T = _TF + "/tenants/{tenant}"
_W = _T + "/workflows/{workflow}"

# (method, path, tag, summary, request body description or None)
OPERATIONS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("get", _CF, "workflows", "List the tenant's workflows with instance counts by status", None),
    ("get", _CF + "/{name}", "workflows", "Get a workflow", None),
    ("put", _CF + "/{name}", "workflows", "Not supported: workflows are created by deploying a bundle", None),
    ("delete", _CF + "/{name}", "workflows", "Not supported: workflows are created by deploying a bundle", None),
    ("post", _CF + "/{name}/instances", "instances",
     "Create an instance (pinned to the version `latest` resolves to now)",
     "{instance_id?, params? (a JSON value, or a JSON-encoded string), instance_retention?}"),
    ("post", _CF + "/{name}/instances/batch", "instances", "Create up to 100 instances at once (all or nothing)",
     "array of create bodies"),
    ("get", _CF + "/{name}/instances", "instances",
     "List instances: status, per_page, cursor (or page), direction asc|desc, date_start, date_end", None),
    ("get", _CF + "/{name}/instances/{instance_id}", "instances",
     "The instance record with steps[], output, error and the pinned version (order, simple)", None),
    ("delete", _CF + "/{name}/instances/{instance_id}", "instances", "Delete an instance and its journal", None),
    ("patch", _CF + "/{name}/instances/{instance_id}/status", "instances",
     "Pause, resume, terminate or restart (optionally from a step)",
     '{status: "pause"|"resume"|"terminate"|"restart", from?: {name, count?, type?: do|sleep|waitForEvent}}'),
    ("post", _CF + "/{name}/instances/{instance_id}/events/{event_type}", "instances",
     "Send an event (the body is its payload; buffered until a wait_for_event consumes it)", "any JSON"),
    ("get", _CF + "/{name}/versions", "versions", "List versions, newest first", None),
    ("get", _CF + "/{name}/versions/{version_id}", "versions", "Get a version by number, digest or alias", None),
    ("get", "/healthz", "operations", "Liveness (no token needed)", None),
    ("get", "/metrics", "operations", "Prometheus text: dispatch latency, cold starts, cache, steps, instances",
     None),
    ("get", "/openapi.json", "operations", "This document", None),
    ("get", _TF + "/openapi.json", "operations", "This document", None),
    ("get", _TF + "/whoami", "operations", "Who the bearer token belongs to", None),
    ("get", _TF + "/tenants", "tenants", "List tenants (a tenant token sees itself)", None),
    ("post", _TF + "/tenants", "tenants", "Create a tenant (operator); returns its first token once",
     "{id, display_name?, policy?}"),
    ("get", _T, "tenants", "Get a tenant with its policy (secret values never shown)", None),
    ("patch", _T, "tenants", "Suspend or re-activate a tenant, or change its policy (operator)",
     '{status?: "active"|"suspended", policy?: {...}}'),
    ("get", _T + "/policy", "tenants", "The tenant's policy", None),
    ("patch", _T + "/policy", "tenants", "Change some policy fields (operator)", "partial policy object"),
    ("get", _T + "/tokens", "tokens", "List the tenant's tokens (never their secrets)", None),
    ("post", _T + "/tokens", "tokens", "Create a tenant token; the secret is returned once", "{label?}"),
    ("get", _TF + "/tokens", "tokens", "List operator tokens (operator)", None),
    ("post", _TF + "/tokens", "tokens", "Create an operator token (operator)", "{label?}"),
    ("delete", _TF + "/tokens/{token_id}", "tokens", "Revoke a token", None),
    ("post", _T + "/bundles", "code",
     "Upload a bundle: the body is a .zip, .tar.gz or one .py file; query filename (required), "
     "workflow, alias (repeatable)", "application/octet-stream"),
    ("get", _T + "/workflows", "code", "List the tenant's workflows", None),
    ("get", _W + "/versions", "code", "List versions with their aliases", None),
    ("get", _W + "/versions/{ref}", "code", "Get a version by number, digest or alias", None),
    ("get", _W + "/aliases", "code", "List aliases", None),
    ("put", _W + "/aliases/{alias}", "code", "Point an alias at a version", "{version}"),
    ("post", _W + "/aliases/{alias}/rollback", "code", "Move an alias back to its previous version", None),
    ("get", _W + "/aliases/{alias}/history", "code", "The alias's moves, newest first", None),
    ("post", _W + "/migrate", "code", "Re-pin unfinished instances to another version (operator)",
     "{instances: [id, ...], version}"),
)  # fmt: skip

_ENVELOPE = {
    "type": "object",
    "required": ["success", "errors", "messages", "result"],
    "properties": {
        "success": {"type": "boolean"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Error"}},
        "messages": {"type": "array", "items": {}},
        "result": {},
        "result_info": {"type": "object"},
    },
}


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, tag, summary, body in OPERATIONS:
        operation: dict[str, Any] = {
            "tags": [tag],
            "summary": summary,
            "responses": {
                "200": {"description": "v4 envelope", "content": {"application/json": {"schema": _ENVELOPE}}},
                "default": {"description": "v4 error envelope (see the error codes in the description)"},
            },
        }
        params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        if params:
            operation["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ]
        if body is not None:
            media = "application/octet-stream" if body == "application/octet-stream" else "application/json"
            operation["requestBody"] = {"description": body, "content": {media: {"schema": {}}}}
        if path not in ("/healthz", "/openapi.json", _TF + "/openapi.json") and path != "/metrics":
            operation["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = operation
    codes = "\n".join(f"- {int(c)} {c.name.lower()}" for c in ErrorCode)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tenantflow",
            "version": "1",
            "description": "Cloudflare Workflows-compatible API (`/client/v4/accounts/{account_id}/workflows`, "
            "account_id = tenant id) and tenantflow's operator API (`/tenantflow/v1`). Every response uses "
            "the v4 envelope. Error codes:\n" + codes,
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "integer", "enum": [int(c) for c in ErrorCode]},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                }
            },
        },
        "paths": paths,
    }
