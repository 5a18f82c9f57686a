"""tenantflow's operator API: tenants, policies, tokens, bundles, versions, aliases, migrate, metrics, OpenAPI."""

from __future__ import annotations

import io
import zipfile

from starlette.routing import Route

from dispatcher.api import create_app, openapi_document
from engine import Status

from .conftest import CF, FLOW, QUICK, TF, Api, bearer, error_of


async def test_tenants_create_list_get(api: Api) -> None:
    r = await api.client.post(f"{TF}/tenants", json={"id": "initech", "display_name": "Initech",
                              "policy": {"backend": "restricted", "bindings": ["kv"]}}, headers=api.operator)  # fmt: skip
    assert r.status_code == 201, r.text
    created = r.json()["result"]
    assert created["tenant"]["policy"]["backend"] == "restricted" and created["token"].startswith("tf_")
    who = await api.client.get(f"{TF}/whoami", headers=bearer(created["token"]))
    assert who.json()["result"] == {
        "operator": False,
        "tenant": "initech",
        "token_id": who.json()["result"]["token_id"],
    }
    listed = (await api.client.get(f"{TF}/tenants", headers=api.operator)).json()
    assert [t["id"] for t in listed["result"]] == ["acme", "globex", "initech"]
    own = (await api.client.get(f"{TF}/tenants", headers=api.acme)).json()
    assert [t["id"] for t in own["result"]] == ["acme"]
    one = (await api.client.get(f"{TF}/tenants/initech", headers=api.operator)).json()["result"]
    assert one["display_name"] == "Initech"
    dup = await api.client.post(f"{TF}/tenants", json={"id": "initech"}, headers=api.operator)
    assert dup.status_code == 409
    bad = await api.client.post(f"{TF}/tenants", json={"id": "-x"}, headers=api.operator)
    assert bad.status_code == 400 and error_of(bad)["field"] == "tenant id"
    missing = await api.client.post(f"{TF}/tenants", json={}, headers=api.operator)
    assert missing.status_code == 400 and error_of(missing)["field"] == "id"
    bad_policy = await api.client.post(f"{TF}/tenants", json={"id": "p", "policy": {"backend": "vm"}},
                                       headers=api.operator)  # fmt: skip
    assert bad_policy.status_code == 400 and error_of(bad_policy)["field"] == "policy.backend"
    assert (await api.client.get(f"{TF}/tenants/nobody", headers=api.operator)).status_code == 404


async def test_policy_get_and_patch_never_shows_secrets(api: Api) -> None:
    r = await api.client.patch(f"{TF}/tenants/acme/policy", json={"secrets": {"API_KEY": "hunter2"},
                               "creation_rate": 5}, headers=api.operator)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["result"]["creation_rate"] == 5 and r.json()["result"]["secrets"] == ["API_KEY"]
    got = await api.client.get(f"{TF}/tenants/acme/policy", headers=api.acme)
    assert got.json()["result"]["secrets"] == ["API_KEY"]
    assert "hunter2" not in got.text
    assert "hunter2" not in (await api.client.get(f"{TF}/tenants/acme", headers=api.operator)).text
    bad = await api.client.patch(f"{TF}/tenants/acme/policy", json={"bogus": 1}, headers=api.operator)
    assert bad.status_code == 400 and error_of(bad)["field"] == "policy"


async def test_suspend_and_reactivate(api: Api) -> None:
    r = await api.client.patch(f"{TF}/tenants/acme", json={"status": "suspended"}, headers=api.operator)
    assert r.json()["result"]["status"] == "suspended"
    r = await api.client.patch(f"{TF}/tenants/acme", json={"status": "active"}, headers=api.operator)
    assert r.json()["result"]["status"] == "active"
    bad = await api.client.patch(f"{TF}/tenants/acme", json={"status": "asleep"}, headers=api.operator)
    assert bad.status_code == 400 and error_of(bad)["field"] == "status"


async def test_tokens(api: Api) -> None:
    listed = (await api.client.get(f"{TF}/tenants/acme/tokens", headers=api.acme)).json()["result"]
    assert len(listed) == 1 and "token" not in listed[0] and "hash" not in listed[0]
    op = await api.client.post(f"{TF}/tokens", json={"label": "second operator"}, headers=api.operator)
    assert op.status_code == 201
    assert (await api.client.get(f"{TF}/whoami", headers=bearer(op.json()["result"]["token"]))).json()[
        "result"
    ]["operator"]
    ops = (await api.client.get(f"{TF}/tokens", headers=api.operator)).json()["result"]
    assert len(ops) == 2
    # a tenant cannot revoke another tenant's (or an operator's) token
    r = await api.client.delete(f"{TF}/tokens/{op.json()['result']['id']}", headers=api.acme)
    assert r.status_code == 404


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


async def test_bundle_upload_archive_single_file_and_rejections(api: Api) -> None:
    archive = _zip({"tenantflow.toml": 'workflow = "zipped"\n', "main.py": "from helper import f\n"
                    "def run(event, step):\n    return step.do('f', f)\n", "helper.py": "def f():\n    return 7\n"})  # fmt: skip
    r = await api.client.post(f"{TF}/tenants/acme/bundles", params={"filename": "b.zip", "alias": "production"},
                              content=archive, headers=api.acme)  # fmt: skip
    assert r.status_code == 201, r.text
    version = r.json()["result"]["version"]
    assert version["workflow_id"] == "zipped" and version["number"] == 1 and version["file_count"] == 3
    same = await api.client.post(f"{TF}/tenants/acme/bundles", params={"filename": "b.zip"}, content=archive,
                                 headers=api.acme)  # fmt: skip
    assert same.status_code == 200 and same.json()["result"]["created"] is False
    created = await api.client.post(f"{CF}/acme/workflows/zipped/instances", json={"instance_id": "z"},
                                    headers=api.acme)  # fmt: skip
    assert created.status_code == 201
    assert (await api.platform.engine.wait("acme", "z", timeout=10)).status == Status.COMPLETE

    single = await api.client.post(f"{TF}/tenants/acme/bundles", content=QUICK.encode(), headers={**api.acme,
                                   "Content-Disposition": 'attachment; filename="main.py"'},
                                   params={"workflow": "single"})  # fmt: skip
    assert single.status_code == 201, single.text

    broken = await api.client.post(f"{TF}/tenants/acme/bundles", params={"filename": "main.py", "workflow": "x"},
                                   content=b"def run(event, step:\n", headers=api.acme)  # fmt: skip
    assert broken.status_code == 400
    errors = broken.json()["errors"]
    assert errors and all(e["code"] == 10003 for e in errors) and "main.py" in errors[0]["message"]
    no_name = await api.client.post(f"{TF}/tenants/acme/bundles", content=b"x", headers=api.acme)
    assert no_name.status_code == 400 and error_of(no_name)["field"] == "filename"
    empty = await api.client.post(
        f"{TF}/tenants/acme/bundles", params={"filename": "main.py"}, headers=api.acme
    )
    assert empty.status_code == 400 and error_of(empty)["field"] == "body"


async def test_versions_aliases_rollback_history(api: Api) -> None:
    await api.deploy("acme", QUICK)
    await api.deploy("acme", QUICK + "# two\n")
    base = f"{TF}/tenants/acme/workflows/flow"
    workflows = (await api.client.get(f"{TF}/tenants/acme/workflows", headers=api.acme)).json()["result"]
    assert workflows == [{"workflow": "flow", "versions": 2, "latest_version": 2}]
    versions = (await api.client.get(f"{base}/versions", headers=api.acme)).json()["result"]
    assert [(v["number"], v["aliases"]) for v in versions] == [(2, ["latest"]), (1, [])]
    assert (await api.client.get(f"{base}/versions/1", headers=api.acme)).json()["result"]["number"] == 1
    r = await api.client.put(f"{base}/aliases/production", json={"version": 1}, headers=api.acme)
    assert r.status_code == 200 and r.json()["result"]["version"] == 1
    r = await api.client.put(f"{base}/aliases/production", json={"version": 2}, headers=api.acme)
    assert r.json()["result"]["version"] == 2
    aliases = (await api.client.get(f"{base}/aliases", headers=api.acme)).json()["result"]
    assert {a["alias"]: a["version"] for a in aliases} == {"latest": 2, "production": 2}
    r = await api.client.post(f"{base}/aliases/production/rollback", headers=api.acme)
    assert r.json()["result"]["version"] == 1
    history = (await api.client.get(f"{base}/aliases/production/history", headers=api.acme)).json()["result"]
    assert [h["reason"] for h in history] == ["rollback", "set", "set"]
    missing = await api.client.put(f"{base}/aliases/production", json={"version": 9}, headers=api.acme)
    assert missing.status_code == 404
    no_version = await api.client.put(f"{base}/aliases/production", json={}, headers=api.acme)
    assert no_version.status_code == 400 and error_of(no_version)["field"] == "version"
    bad_name = await api.client.put(f"{base}/aliases/bad%20name", json={"version": 1}, headers=api.acme)
    assert bad_name.status_code == 400
    no_prev = await api.client.post(f"{base}/aliases/latest/rollback", headers=api.acme)
    assert no_prev.status_code in (200, 409)
    assert (await api.client.post(f"{base}/aliases/nope/rollback", headers=api.acme)).status_code == 404


async def test_migrate(api: Api) -> None:
    await api.deploy("acme", FLOW)
    await api.client.post(f"{CF}/acme/workflows/flow/instances", json={"instance_id": "m1", "params": {"n": 1}},
                          headers=api.acme)  # fmt: skip
    await api.platform.engine.wait("acme", "m1", statuses={Status.WAITING}, timeout=10)
    v2 = await api.deploy("acme", FLOW + "# v2\n")
    url = f"{TF}/tenants/acme/workflows/flow/migrate"
    denied = await api.client.post(url, json={"instances": ["m1"], "version": 2}, headers=api.acme)
    assert denied.status_code == 403
    r = await api.client.post(url, json={"instances": ["m1"], "version": 2}, headers=api.operator)
    assert r.status_code == 200, r.text
    got = (await api.client.get(f"{CF}/acme/workflows/flow/instances/m1", headers=api.acme)).json()["result"]
    assert got["version_id"] == v2["version"]["id"]
    bad = await api.client.post(url, json={"instances": "m1", "version": 2}, headers=api.operator)
    assert bad.status_code == 400 and error_of(bad)["field"] == "instances"
    unknown = await api.client.post(url, json={"instances": ["zz"], "version": 2}, headers=api.operator)
    assert unknown.status_code == 404


async def test_metrics_are_prometheus_text(api: Api) -> None:
    await api.deploy("acme", QUICK)
    await api.client.post(f"{CF}/acme/workflows/flow/instances", json={"instance_id": "q", "params": 1},
                          headers=api.acme)  # fmt: skip
    await api.platform.engine.wait("acme", "q", timeout=10)
    r = await api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("tenantflow_dispatch_duration_seconds_count", "tenantflow_cold_starts_total",
                 "tenantflow_cache_hits_total", "tenantflow_cache_evictions_total", "tenantflow_steps_committed_total",
                 'tenantflow_instances{status="complete"} 1', "tenantflow_http_request_duration_seconds_bucket"):  # fmt: skip
        assert name in text, name
    assert "tenantflow_steps_committed_total 1" in text
    assert "acme" not in text


async def test_openapi_documents_every_route(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
    document = openapi_document()
    app = create_app(api.platform)
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            assert method.lower() in document["paths"].get(route.path, {}), (method, route.path)
