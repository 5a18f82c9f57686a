"""JSON shapes of the API's records (Cloudflare's field names where Cloudflare has the record)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from artifacts import AliasEvent, AliasRecord, UploadResult, Version, WorkflowInfo
from engine import Instance

from .._control import TokenInfo
from .._envelope import unwrap
from .._platform import Platform
from .._policy import Tenant


def cf_time(epoch_ms: int | None) -> str | None:
    """``2024-10-21 17:15:09.411`` (UTC), as Cloudflare formats timestamps."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dt_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def pinned_version(platform: Platform, tenant: str, instance_id: str) -> str:
    """The version digest an (already authorized) instance is pinned to.

    Platform's public instances carry bodies only, so the route is read here from the stored params.
    """
    stored = await platform.engine.get(tenant, instance_id)
    try:
        return unwrap(stored.params)[0].version
    except Exception:  # an instance without a valid envelope: show it, never fail the listing
        return ""


def instance_created(instance: Instance, version: str) -> dict[str, Any]:
    return {
        "id": instance.id,
        "status": instance.status.value,
        "version_id": version,
        "workflow_id": instance.workflow,
        "trigger_source": "api",
    }


def instance_summary(instance: Instance, version: str) -> dict[str, Any]:
    return {
        "id": instance.id,
        "status": instance.status.value,
        "created_on": cf_time(instance.created_at),
        "modified_on": cf_time(instance.updated_at),
        "started_on": cf_time(instance.started_at),
        "ended_on": cf_time(instance.ended_at),
        "version_id": version,
        "workflow_id": instance.workflow,
        "trigger_source": "api",
        "error": instance.error.to_json() if instance.error else None,
    }


def version_record(version: Version, aliases: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": version.digest,
        "number": version.number,
        "workflow_id": version.workflow,
        "class_name": "run",
        "language": "python",
        "has_dag": False,
        "created_on": dt_time(version.created_at),
        "modified_on": dt_time(version.created_at),
        "uploader": version.uploader,
        "size": version.size,
        "file_count": version.file_count,
        "entry": version.manifest.entry,
        "bindings": list(version.manifest.bindings),
        "description": version.manifest.description,
        "aliases": sorted(aliases or []),
    }


def upload_record(result: UploadResult) -> dict[str, Any]:
    return {"created": result.created, "version": version_record(result.version)}


def workflow_record(tenant: str, info: WorkflowInfo, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": info.workflow,
        "name": info.workflow,
        "class_name": "run",
        "script_name": tenant,
        "created_on": None,
        "modified_on": None,
        "triggered_on": None,
        "versions": info.versions,
        "latest_version": info.latest_number,
        "instances": counts,
    }


def alias_record(record: AliasRecord) -> dict[str, Any]:
    return {
        "alias": record.alias,
        "workflow": record.workflow,
        "version": record.number,
        "digest": record.digest,
        "generation": record.generation,
        "updated_on": dt_time(record.updated_at),
        "updated_by": record.updated_by,
    }


def alias_event(event: AliasEvent) -> dict[str, Any]:
    return {
        "generation": event.generation,
        "version": event.number,
        "previous": event.previous,
        "actor": event.actor,
        "at": dt_time(event.at),
        "reason": event.reason,
    }


def tenant_record(tenant: Tenant) -> dict[str, Any]:
    record = tenant.to_json()
    record["created_on"] = cf_time(tenant.created_at)
    return record


def token_record(info: TokenInfo) -> dict[str, Any]:
    record = info.to_json()
    record["created_on"] = cf_time(info.created_at)
    return record
