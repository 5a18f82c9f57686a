"""The client commands: each talks to a tenantflow server and prints human output or ``--json``."""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ._client import Client, CliError
from ._output import describe, emit_json, short, short_digest, status_label, table

TF = "/tenantflow/v1"


def _cf(client: Client, workflow: str) -> str:
    return f"/client/v4/accounts/{client.tenant()}/workflows/{workflow}"


def parse_json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {text}") from None


# -- tenants and tokens ---------------------------------------------------------------------------


def tenants_create(args: argparse.Namespace, client: Client) -> int:
    policy = parse_json_arg(args.policy, "--policy") or {}
    if not isinstance(policy, dict):
        raise CliError("--policy must be a JSON object")
    if args.backend:
        policy["backend"] = args.backend
    body = {"id": args.id, "display_name": args.display_name or args.id, "policy": policy}
    result = client.request("POST", f"{TF}/tenants", json=body)
    if args.json:
        emit_json(result)
        return 0
    tenant = result["tenant"]
    print(f"✅ Created tenant {tenant['id']} (backend {tenant['policy']['backend']})")
    print(f"Token (shown once, keep it safe):\n  {result['token']}")
    print(f"Use it with:  export TENANTFLOW_TOKEN={result['token']}")
    return 0


def tenants_list(args: argparse.Namespace, client: Client) -> int:
    tenants = client.request("GET", f"{TF}/tenants")
    if args.json:
        emit_json(tenants)
        return 0
    if not tenants:
        print("No tenants yet. Create one with `tenantflow tenants create ID`.")
        return 0
    rows = [
        [t["id"], t["display_name"], "✅ active" if t["status"] == "active" else "⏸ suspended",
         t["policy"]["backend"], ",".join(t["policy"]["bindings"]) or "-", t["created_on"]]
        for t in tenants
    ]  # fmt: skip
    table(["Id", "Name", "Status", "Backend", "Bindings", "Created"], rows)
    return 0


def tenants_policy(args: argparse.Namespace, client: Client) -> int:
    if args.set is not None:
        changes = parse_json_arg(args.set, "--set")
        if not isinstance(changes, dict):
            raise CliError("--set must be a JSON object of policy fields")
        policy = client.request("PATCH", f"{TF}/tenants/{args.id}/policy", json=changes)
    else:
        policy = client.request("GET", f"{TF}/tenants/{args.id}/policy")
    if args.json:
        emit_json(policy)
        return 0
    if args.set is not None:
        print(f"✅ Updated the policy of {args.id}")
    width = max(len(k) for k in policy)
    for key, value in policy.items():
        print(f"  {key.ljust(width)}  {json.dumps(value)}")
    return 0


def tenants_status(args: argparse.Namespace, client: Client) -> int:
    status = "suspended" if args.tenants_command == "suspend" else "active"
    tenant = client.request("PATCH", f"{TF}/tenants/{args.id}", json={"status": status})
    if args.json:
        emit_json(tenant)
    else:
        print(f"{'⏸' if status == 'suspended' else '✅'} Tenant {args.id} is {status}")
    return 0


def tokens_create(args: argparse.Namespace, client: Client) -> int:
    path = f"{TF}/tokens" if args.operator else f"{TF}/tenants/{client.tenant()}/tokens"
    result = client.request("POST", path, json={"label": args.label or ""})
    if args.json:
        emit_json(result)
    else:
        print(f"✅ Created token {result['id']}; secret (shown once):\n  {result['token']}")
    return 0


def tokens_list(args: argparse.Namespace, client: Client) -> int:
    path = f"{TF}/tokens" if args.operator else f"{TF}/tenants/{client.tenant()}/tokens"
    tokens = client.request("GET", path)
    if args.json:
        emit_json(tokens)
        return 0
    rows = [
        [t["id"], t["label"] or "-", "revoked" if t["revoked"] else "active", t["created_on"]] for t in tokens
    ]
    table(["Id", "Label", "State", "Created"], rows)
    return 0


def tokens_revoke(args: argparse.Namespace, client: Client) -> int:
    result = client.request("DELETE", f"{TF}/tokens/{args.token_id}")
    if args.json:
        emit_json(result)
    else:
        print(f"✅ Revoked {args.token_id}")
    return 0


# -- code -----------------------------------------------------------------------------------------


def bundle_bytes(path: Path) -> tuple[bytes, str]:
    """A directory is zipped in memory; a file is sent as it is."""
    if path.is_dir():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if (
                    file.is_file()
                    and not any(p.startswith(".") or p == "__pycache__" for p in relative.parts)
                    and file.suffix in (".py", ".toml", ".md", ".txt", ".json")
                ):
                    archive.write(file, relative.as_posix())
        return buffer.getvalue(), "bundle.zip"
    if path.is_file():
        return path.read_bytes(), path.name
    raise CliError(f"{path} does not exist (give a bundle directory, a .zip/.tar.gz archive or a .py file)")


def deploy(args: argparse.Namespace, client: Client) -> int:
    data, filename = bundle_bytes(Path(args.path))
    params: list[tuple[str, str]] = [("filename", filename)]
    if args.workflow:
        params.append(("workflow", args.workflow))
    params += [("alias", a) for a in args.alias or []]
    result = client.request(
        "POST", f"{TF}/tenants/{client.tenant()}/bundles", params=params, content=data,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    if args.json:
        emit_json(result)
        return 0
    version = result["version"]
    verb = "Deployed" if result["created"] else "Unchanged: already deployed as"
    print(f"✅ {verb} {version['workflow_id']} version {version['number']} ({short_digest(version['id'])})")
    print(
        f"   {version['file_count']} files, {version['size']} bytes, aliases: {', '.join(version['aliases']) or '-'}"
    )
    return 0


def workflows(args: argparse.Namespace, client: Client) -> int:
    result = client.request("GET", f"{TF}/tenants/{client.tenant()}/workflows")
    if args.json:
        emit_json(result)
        return 0
    table(
        ["Workflow", "Versions", "Latest"],
        [[w["workflow"], w["versions"], w["latest_version"]] for w in result],
    )
    return 0


def versions(args: argparse.Namespace, client: Client) -> int:
    result = client.request("GET", f"{TF}/tenants/{client.tenant()}/workflows/{args.workflow}/versions")
    if args.json:
        emit_json(result)
        return 0
    rows = [[v["number"], short_digest(v["id"]), ", ".join(v["aliases"]) or "-", v["file_count"], v["size"],
             v["created_on"], v["uploader"]] for v in result]  # fmt: skip
    table(["Version", "Digest", "Aliases", "Files", "Bytes", "Created", "Uploader"], rows)
    return 0


def aliases(args: argparse.Namespace, client: Client) -> int:
    base = f"{TF}/tenants/{client.tenant()}/workflows/{args.workflow}/aliases"
    action = args.aliases_command or "list"
    if action == "list":
        result = client.request("GET", base)
        if not args.json:
            rows = [[a["alias"], a["version"], short_digest(a["digest"]), a["updated_on"], a["updated_by"]]
                    for a in result]  # fmt: skip
            table(["Alias", "Version", "Digest", "Moved", "By"], rows)
    elif action == "set":
        ref: Any = int(args.version) if args.version.isdigit() else args.version
        result = client.request("PUT", f"{base}/{args.alias}", json={"version": ref})
        if not args.json:
            print(f"✅ {args.alias} → version {result['version']}")
    elif action == "rollback":
        result = client.request("POST", f"{base}/{args.alias}/rollback")
        if not args.json:
            print(f"↩ {args.alias} rolled back to version {result['version']}")
    else:
        result = client.request("GET", f"{base}/{args.alias}/history")
        if not args.json:
            rows = [[e["generation"], e["reason"], e["previous"] or "-", e["version"] or "-", e["actor"], e["at"]]
                    for e in result]  # fmt: skip
            table(["Gen", "Reason", "From", "To", "By", "At"], rows)
    if args.json:
        emit_json(result)
    return 0


def migrate(args: argparse.Namespace, client: Client) -> int:
    ref: Any = int(args.version) if args.version.isdigit() else args.version
    result = client.request("POST", f"{TF}/tenants/{client.tenant()}/workflows/{args.workflow}/migrate",
                            json={"instances": args.instance_ids, "version": ref})  # fmt: skip
    if args.json:
        emit_json(result)
    else:
        print(f"✅ Migrated {len(result)} instance(s) to version {args.version}")
    return 0


# -- instances ------------------------------------------------------------------------------------


def trigger(args: argparse.Namespace, client: Client) -> int:
    body: dict[str, Any] = {}
    if args.params is not None:
        body["params"] = parse_json_arg(args.params, "PARAMS_JSON")
    if args.id:
        body["instance_id"] = args.id
    result = client.request("POST", f"{_cf(client, args.workflow)}/instances", json=body)
    if args.json:
        emit_json(result)
    else:
        print(f"🚀 Triggered {args.workflow}: instance {result['id']} ({status_label(result['status'])})")
        print(f"   Follow it with: tenantflow instances describe {args.workflow} {result['id']}")
    return 0


def instances_list(args: argparse.Namespace, client: Client) -> int:
    params: dict[str, Any] = {"per_page": args.limit}
    if args.status:
        params["status"] = args.status
    if args.cursor:
        params["cursor"] = args.cursor
    if args.reverse:
        params["direction"] = "desc"
    items, info = client.request("GET", f"{_cf(client, args.workflow)}/instances", params=params, info=True)
    if args.json:
        emit_json({"instances": items, "cursor": info.get("cursor")})
        return 0
    if not items:
        print(f"No instances of {args.workflow}.")
        return 0
    from ._output import duration

    rows = [[i["id"], status_label(i["status"]), short_digest(i["version_id"]), i["created_on"],
             duration(i["started_on"], i["ended_on"])] for i in items]  # fmt: skip
    table(["Id", "Status", "Version", "Created", "Duration"], rows)
    if info.get("cursor"):
        print(f"More: tenantflow instances list {args.workflow} --cursor {info['cursor']}")
    return 0


def instances_describe(args: argparse.Namespace, client: Client) -> int:
    record = client.request("GET", f"{_cf(client, args.workflow)}/instances/{args.instance_id}")
    if args.json:
        emit_json(record)
    else:
        describe(record)
    return 0


def instances_send_event(args: argparse.Namespace, client: Client) -> int:
    payload = parse_json_arg(args.payload, "PAYLOAD_JSON")
    path = f"{_cf(client, args.workflow)}/instances/{args.instance_id}/events/{args.event_type}"
    result = client.request("POST", path, content=json.dumps(payload).encode(),
                            headers={"Content-Type": "application/json"})  # fmt: skip
    if args.json:
        emit_json(result)
    else:
        print(f"📨 Sent {args.event_type!r} to {args.instance_id} ({short(payload)})")
    return 0


def instances_control(args: argparse.Namespace, client: Client) -> int:
    action = args.instances_command
    body: dict[str, Any] = {"status": action}
    if action == "restart" and args.from_step:
        body["from"] = {"name": args.from_step, "count": args.from_count, "type": args.from_type}
    result = client.request(
        "PATCH", f"{_cf(client, args.workflow)}/instances/{args.instance_id}/status", json=body
    )
    if args.json:
        emit_json(result)
    else:
        verbs = {"pause": "Paused", "resume": "Resumed", "terminate": "Terminated", "restart": "Restarted"}
        print(f"{verbs[action]} {args.instance_id}: {status_label(result['status'])}")
    return 0
