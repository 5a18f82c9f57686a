"""The Cloudflare-compatible routes: ``/client/v4/accounts/{account_id}/workflows/...``.

``account_id`` is the tenant id. Shapes follow Cloudflare's Workflows REST API (and what the official
``cloudflare`` Python SDK parses); see ``shared/reference/cloudflare-workflows.md``. Two deliberate
extras: instance records carry the pinned version digest as ``version_id``/``versionId``, and
listings accept both ``cursor`` and the older ``page`` parameter (the SDK's auto-pagination sends
``page``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .._errors import NotFoundError
from .._platform import Platform, Principal
from ._errors import bad_request
from ._http import authenticate, config_of, ok, platform_of, query_int, read_json, read_object
from ._metrics import instance_counts
from ._records import (
    instance_created,
    instance_summary,
    now_time,
    pinned_version,
    version_record,
    workflow_record,
)

PREFIX = "/client/v4/accounts/{account_id}/workflows"
_STATUS_ACTIONS = ("pause", "resume", "terminate", "restart")
_STEP_TYPES = {"do": "step", "step": "step", "sleep": "sleep", "waitForEvent": "waitForEvent"}


def _path(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


# -- workflows ------------------------------------------------------------------------------------


async def list_workflows(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant = platform_of(request), _path(request, "account_id")
    workflows = await platform.list_workflows(principal, tenant)
    search = request.query_params.get("search", "")
    workflows = [w for w in workflows if search.lower() in w.workflow.lower()]
    per_page = query_int(request, "per_page", 50, low=1, high=config_of(request).max_per_page)
    page = query_int(request, "page", 1, low=1, high=1_000_000)
    chosen = workflows[(page - 1) * per_page : page * per_page]
    records = [
        workflow_record(tenant, w, await instance_counts(platform, tenant, w.workflow)) for w in chosen
    ]
    info = {"page": page, "per_page": per_page, "count": len(records), "total_count": len(workflows)}
    return ok(records, result_info=info)


async def get_workflow(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    for info in await platform.list_workflows(principal, tenant):
        if info.workflow == name:
            return ok(workflow_record(tenant, info, await instance_counts(platform, tenant, name)))
    raise NotFoundError(f"workflow {name!r} not found")


async def workflows_are_deployed(request: Request) -> JSONResponse:
    await authenticate(request)
    raise bad_request(
        "workflow",
        "workflows are created by deploying a bundle: POST /tenantflow/v1/tenants/{tenant}/bundles "
        "(or `tenantflow deploy`)",
    )


# -- instances ------------------------------------------------------------------------------------


def _create_item(body: Any, where: str) -> tuple[str | None, Any]:
    if not isinstance(body, Mapping):
        raise bad_request(where, f"must be a JSON object, got {type(body).__name__}")
    instance_id = body.get("instance_id", body.get("id"))
    if instance_id is not None and not isinstance(instance_id, str):
        raise bad_request(f"{where}.instance_id" if where != "body" else "instance_id", "must be a string")
    params = body.get("params")
    if isinstance(params, str):  # Cloudflare's SDK sends params JSON-encoded
        try:
            params = json.loads(params)
        except json.JSONDecodeError as exc:
            field = "params" if where == "body" else f"{where}.params"
            raise bad_request(field, f"a string must be JSON-encoded ({exc.msg})") from None
    retention = body.get("instance_retention")
    if retention is not None and not isinstance(retention, Mapping):
        raise bad_request("instance_retention", "must be an object")
    return instance_id, params


async def create_instance(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    instance_id, params = _create_item(await read_object(request, default={}), "body")
    instance = await platform.create_instance(principal, tenant, name, params, instance_id=instance_id)
    version = await pinned_version(platform, tenant, instance.id)
    return ok(instance_created(instance, version), status=201)


async def create_batch(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    body = await read_json(request)
    if not isinstance(body, list):
        raise bad_request("body", "must be a JSON array of instance creation objects")
    items = [_create_item(item, f"body[{index}]") for index, item in enumerate(body)]
    if not items:
        raise bad_request("body", "must hold at least one instance")
    instances = await platform.create_instances(principal, tenant, name, items)
    version = await pinned_version(platform, tenant, instances[0].id)
    return ok([instance_created(i, version) for i in instances], status=201)


def _date(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(name, f"must be an ISO 8601 time, got {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


async def list_instances(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    config = config_of(request)
    per_page = query_int(request, "per_page", config.default_per_page, low=1, high=config.max_per_page)
    direction = request.query_params.get("direction", "asc")
    if direction not in ("asc", "desc"):
        raise bad_request("direction", f"must be asc or desc, got {direction!r}")
    cursor = request.query_params.get("cursor") or None
    page = query_int(request, "page", 0, low=1, high=100_000) if "page" in request.query_params else None
    if cursor is not None and page is not None:
        raise bad_request("page", "cursor and page are mutually exclusive")
    options: dict[str, Any] = {
        "status": request.query_params.get("status") or None,
        "limit": per_page,
        "created_after": _date(request, "date_start"),
        "created_before": _date(request, "date_end"),
        "descending": direction == "desc",
    }
    if page is not None:  # the older page parameter: walk the cursor to that page
        for _ in range(page - 1):
            _skipped, cursor = await platform.list_instances(
                principal, tenant, name, cursor=cursor, **options
            )
            if cursor is None:
                return ok([], result_info={"page": page, "per_page": per_page, "count": 0, "cursor": None})
    items, next_cursor = await platform.list_instances(principal, tenant, name, cursor=cursor, **options)
    records = [instance_summary(i, await pinned_version(platform, tenant, i.id)) for i in items]
    info: dict[str, Any] = {"per_page": per_page, "count": len(records), "cursor": next_cursor}
    if page is not None:
        info["page"] = page
    return ok(records, result_info=info)


async def get_instance(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant = platform_of(request), _path(request, "account_id")
    name, instance_id = _path(request, "name"), _path(request, "instance_id")
    record = await platform.describe_instance(principal, tenant, name, instance_id)
    record["version_id"] = record.get("versionId")
    if request.query_params.get("order") == "desc":
        record["steps"] = list(reversed(record["steps"]))
    if request.query_params.get("simple") == "true":
        record["steps"] = []
    return ok(record)


async def delete_instance(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant = platform_of(request), _path(request, "account_id")
    name, instance_id = _path(request, "name"), _path(request, "instance_id")
    await platform.delete_instance(principal, tenant, name, instance_id)
    return ok({"status": "ok"})


async def change_status(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant = platform_of(request), _path(request, "account_id")
    name, instance_id = _path(request, "name"), _path(request, "instance_id")
    body = await read_object(request)
    action = body.get("status")
    if action not in _STATUS_ACTIONS:
        raise bad_request("status", f"must be one of {', '.join(_STATUS_ACTIONS)}, got {action!r}")
    from_step = body.get("from")
    if from_step is not None:
        if not isinstance(from_step, Mapping):
            raise bad_request("from", "must be an object {name, count?, type?}")
        from_step = dict(from_step)
        if "type" in from_step:
            step_type = from_step["type"]
            if step_type not in _STEP_TYPES:
                raise bad_request("from.type", f"must be do, sleep or waitForEvent, got {step_type!r}")
            from_step["type"] = _STEP_TYPES[step_type]
        if action != "restart":
            raise bad_request("from", "is only allowed with status 'restart'")
    instance = await platform.control_instance(
        principal, tenant, name, instance_id, action, from_step=from_step
    )
    return ok({"status": instance.status.value, "timestamp": now_time()})


async def send_event(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant = platform_of(request), _path(request, "account_id")
    name, instance_id = _path(request, "name"), _path(request, "instance_id")
    payload = await read_json(request, default=None)
    await platform.send_event(principal, tenant, name, instance_id, _path(request, "event_type"), payload)
    return ok({"instanceId": instance_id, "timestamp": now_time()})


# -- versions -------------------------------------------------------------------------------------


async def list_versions(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    versions = await platform.list_versions(principal, tenant, name)
    if not versions:
        raise NotFoundError(f"workflow {name!r} not found")
    aliases = await _aliases_by_number(platform, principal, tenant, name)
    per_page = query_int(request, "per_page", 50, low=1, high=config_of(request).max_per_page)
    page = query_int(request, "page", 1, low=1, high=1_000_000)
    chosen = versions[(page - 1) * per_page : page * per_page]
    records = [version_record(v, aliases.get(v.number)) for v in chosen]
    info = {"page": page, "per_page": per_page, "count": len(records), "total_count": len(versions)}
    return ok(records, result_info=info)


async def get_version(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant, name = platform_of(request), _path(request, "account_id"), _path(request, "name")
    version = await platform.resolve_version(principal, tenant, name, _path(request, "version_id"))
    aliases = await _aliases_by_number(platform, principal, tenant, name)
    return ok(version_record(version, aliases.get(version.number)))


async def _aliases_by_number(
    platform: Platform, principal: Principal, tenant: str, workflow: str
) -> dict[int, list[str]]:
    """Alias names per version number."""
    by_number: dict[int, list[str]] = {}
    for record in await platform.list_aliases(principal, tenant, workflow):
        by_number.setdefault(record.number, []).append(record.alias)
    return by_number


def routes() -> list[BaseRoute]:
    instance = PREFIX + "/{name}/instances/{instance_id}"
    return [
        Route(PREFIX, list_workflows, methods=["GET"]),
        Route(PREFIX + "/{name}", get_workflow, methods=["GET"]),
        Route(PREFIX + "/{name}", workflows_are_deployed, methods=["PUT", "DELETE"]),
        Route(PREFIX + "/{name}/instances", create_instance, methods=["POST"]),
        Route(PREFIX + "/{name}/instances", list_instances, methods=["GET"]),
        Route(PREFIX + "/{name}/instances/batch", create_batch, methods=["POST"]),
        Route(instance, get_instance, methods=["GET"]),
        Route(instance, delete_instance, methods=["DELETE"]),
        Route(instance + "/status", change_status, methods=["PATCH"]),
        Route(instance + "/events/{event_type}", send_event, methods=["POST"]),
        Route(PREFIX + "/{name}/versions", list_versions, methods=["GET"]),
        Route(PREFIX + "/{name}/versions/{version_id}", get_version, methods=["GET"]),
    ]
