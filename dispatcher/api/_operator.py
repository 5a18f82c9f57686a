"""tenantflow's own API under ``/tenantflow/v1``: tenants, policies, tokens, bundles, versions,
aliases, migration, plus ``/healthz`` and ``/metrics``. Same v4 envelope and errors as the
Cloudflare routes. Operator-only operations answer 403 to a tenant token; anything of another
tenant answers 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .._errors import PermissionDeniedError
from ._errors import bad_request
from ._http import authenticate, config_of, ok, platform_of, read_body, read_object, tenant_visible
from ._metrics import render
from ._records import (
    alias_event,
    alias_record,
    tenant_record,
    token_record,
    upload_record,
    version_record,
)

PREFIX = "/tenantflow/v1"
_TENANT = PREFIX + "/tenants/{tenant}"
_WORKFLOW = _TENANT + "/workflows/{workflow}"


def _p(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


def _string(body: Mapping[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = body.get(key, None)
    if value is None:
        if required:
            raise bad_request(key, "is required")
        return default
    if not isinstance(value, str):
        raise bad_request(key, f"must be a string, got {type(value).__name__}")
    return value


def _ref(value: Any, field: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request(field, "must be a version number, digest or alias")
    return value


async def health(request: Request) -> JSONResponse:
    return ok({"status": "ok"})


async def metrics(request: Request) -> Response:
    if not config_of(request).public_metrics:
        principal = await authenticate(request)
        if not principal.is_operator:
            raise PermissionDeniedError("metrics need an operator token")
    text = await render(platform_of(request), request.app.state.http_metrics)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def whoami(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    return ok({"operator": principal.is_operator, "tenant": principal.tenant, "token_id": principal.token_id})


# -- tenants --------------------------------------------------------------------------------------


async def list_tenants(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenants = await platform_of(request).list_tenants(principal)
    return ok([tenant_record(t) for t in tenants], result_info={"count": len(tenants)})


async def create_tenant(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    body = await read_object(request)
    policy = body.get("policy") or {}
    if not isinstance(policy, Mapping):
        raise bad_request("policy", "must be an object")
    tenant, secret = await platform_of(request).create_tenant(
        principal,
        _string(body, "id", required=True),
        display_name=_string(body, "display_name"),
        policy=policy,
    )
    return ok({"tenant": tenant_record(tenant), "token": secret}, status=201)


async def get_tenant(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    return ok(tenant_record(await platform_of(request).get_tenant(principal, _p(request, "tenant"))))


async def update_tenant(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant_id = platform_of(request), _p(request, "tenant")
    tenant_visible(principal, tenant_id)
    if not principal.is_operator:
        raise PermissionDeniedError("this operation needs an operator token")
    body = await read_object(request)
    unknown = set(body) - {"status", "policy"}
    if unknown:
        raise bad_request("body", f"unknown fields {sorted(unknown)}; allowed: status, policy")
    tenant = await platform.get_tenant(principal, tenant_id)
    if "policy" in body:
        if not isinstance(body["policy"], Mapping):
            raise bad_request("policy", "must be an object")
        tenant = await platform.update_policy(principal, tenant_id, body["policy"])
    if "status" in body:
        tenant = await platform.set_tenant_status(principal, tenant_id, _string(body, "status"))
    return ok(tenant_record(tenant))


async def get_policy(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant = await platform_of(request).get_tenant(principal, _p(request, "tenant"))
    return ok(tenant.policy.to_json())


async def update_policy(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant_id = _p(request, "tenant")
    tenant_visible(principal, tenant_id)
    changes = await read_object(request)
    tenant = await platform_of(request).update_policy(principal, tenant_id, changes)
    return ok(tenant.policy.to_json())


# -- tokens ---------------------------------------------------------------------------------------


async def list_tokens(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant_id = request.path_params.get("tenant")
    tokens = await platform_of(request).list_tokens(principal, tenant_id)
    return ok([token_record(t) for t in tokens], result_info={"count": len(tokens)})


async def create_token(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant_id = request.path_params.get("tenant")
    body = await read_object(request, default={})
    info, secret = await platform_of(request).create_token(principal, tenant_id, _string(body, "label"))
    return ok({**token_record(info), "token": secret}, status=201)


async def revoke_token(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    await platform_of(request).revoke_token(principal, _p(request, "token_id"))
    return ok({"id": _p(request, "token_id"), "revoked": True})


# -- code -----------------------------------------------------------------------------------------


async def upload_bundle(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant_id = platform_of(request), _p(request, "tenant")
    await platform.get_tenant(principal, tenant_id)  # 404 before reading a large body for nothing
    query = request.query_params
    filename = query.get("filename") or _filename_from(request)
    if not filename:
        raise bad_request("filename", "name the upload's format: ?filename=bundle.zip|bundle.tar.gz|main.py")
    body = await read_body(request, config_of(request).max_upload_bytes)
    if not body:
        raise bad_request("body", "the request body must hold the bundle (an archive or one .py file)")
    aliases = [a for a in query.getlist("alias") if a]
    result = await platform.deploy(
        principal, tenant_id, body, filename=filename, workflow=query.get("workflow") or None, aliases=aliases
    )
    return ok(upload_record(result), status=201 if result.created else 200)


def _filename_from(request: Request) -> str:
    disposition = request.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "filename":
            return value.strip().strip('"')
    return ""


async def list_workflows(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    workflows = await platform_of(request).list_workflows(principal, _p(request, "tenant"))
    records = [
        {"workflow": w.workflow, "versions": w.versions, "latest_version": w.latest_number} for w in workflows
    ]
    return ok(records, result_info={"count": len(records)})


async def list_versions(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    platform, tenant_id, workflow = platform_of(request), _p(request, "tenant"), _p(request, "workflow")
    versions = await platform.list_versions(principal, tenant_id, workflow)
    by_number: dict[int, list[str]] = {}
    for record in await platform.list_aliases(principal, tenant_id, workflow):
        by_number.setdefault(record.number, []).append(record.alias)
    return ok(
        [version_record(v, by_number.get(v.number)) for v in versions], result_info={"count": len(versions)}
    )


async def get_version(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    version = await platform_of(request).resolve_version(
        principal, _p(request, "tenant"), _p(request, "workflow"), _p(request, "ref")
    )
    return ok(version_record(version))


async def list_aliases(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant_id, workflow = _p(request, "tenant"), _p(request, "workflow")
    await platform_of(request).get_tenant(principal, tenant_id)
    records = await platform_of(request).list_aliases(principal, tenant_id, workflow)
    return ok([alias_record(r) for r in records], result_info={"count": len(records)})


async def set_alias(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    body = await read_object(request)
    if "version" not in body:
        raise bad_request("version", "is required (a version number, digest or alias)")
    record = await platform_of(request).set_alias(
        principal, _p(request, "tenant"), _p(request, "workflow"), _p(request, "alias"),
        _ref(body["version"], "version"),
    )  # fmt: skip
    return ok(alias_record(record))


async def rollback_alias(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    record = await platform_of(request).rollback_alias(
        principal, _p(request, "tenant"), _p(request, "workflow"), _p(request, "alias")
    )
    return ok(alias_record(record))


async def alias_history(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    tenant_id, workflow = _p(request, "tenant"), _p(request, "workflow")
    await platform_of(request).get_tenant(principal, tenant_id)
    events = await platform_of(request).alias_history(principal, tenant_id, workflow, _p(request, "alias"))
    return ok([alias_event(e) for e in events], result_info={"count": len(events)})


async def migrate(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    body = await read_object(request)
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances or not all(isinstance(i, str) for i in instances):
        raise bad_request("instances", "must be a non-empty list of instance ids")
    if "version" not in body:
        raise bad_request("version", "is required (a version number, digest or alias)")
    migrated = await platform_of(request).migrate(
        principal, _p(request, "tenant"), _p(request, "workflow"), instances, _ref(body["version"], "version")
    )
    return ok([{"id": i.id, "status": i.status.value} for i in migrated])


async def openapi(request: Request) -> JSONResponse:
    from ._openapi import document

    return JSONResponse(document())


def routes() -> list[BaseRoute]:
    return [
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(PREFIX + "/openapi.json", openapi, methods=["GET"]),
        Route(PREFIX + "/whoami", whoami, methods=["GET"]),
        Route(PREFIX + "/tenants", list_tenants, methods=["GET"]),
        Route(PREFIX + "/tenants", create_tenant, methods=["POST"]),
        Route(_TENANT, get_tenant, methods=["GET"]),
        Route(_TENANT, update_tenant, methods=["PATCH"]),
        Route(_TENANT + "/policy", get_policy, methods=["GET"]),
        Route(_TENANT + "/policy", update_policy, methods=["PATCH"]),
        Route(_TENANT + "/tokens", list_tokens, methods=["GET"]),
        Route(_TENANT + "/tokens", create_token, methods=["POST"]),
        Route(PREFIX + "/tokens", list_tokens, methods=["GET"]),
        Route(PREFIX + "/tokens", create_token, methods=["POST"]),
        Route(PREFIX + "/tokens/{token_id}", revoke_token, methods=["DELETE"]),
        Route(_TENANT + "/bundles", upload_bundle, methods=["POST"]),
        Route(_TENANT + "/workflows", list_workflows, methods=["GET"]),
        Route(_WORKFLOW + "/versions", list_versions, methods=["GET"]),
        Route(_WORKFLOW + "/versions/{ref}", get_version, methods=["GET"]),
        Route(_WORKFLOW + "/aliases", list_aliases, methods=["GET"]),
        Route(_WORKFLOW + "/aliases/{alias}", set_alias, methods=["PUT"]),
        Route(_WORKFLOW + "/aliases/{alias}/rollback", rollback_alias, methods=["POST"]),
        Route(_WORKFLOW + "/aliases/{alias}/history", alias_history, methods=["GET"]),
        Route(_WORKFLOW + "/migrate", migrate, methods=["POST"]),
    ]
