"""The Cloudflare-compatible routes, one behaviour at a time (in-process sandbox backend)."""

from __future__ import annotations

import json

import pytest

from engine import FINISHED, Status

from .conftest import CF, FLOW, QUICK, Api, error_of

INSTANCES = f"{CF}/acme/workflows/flow/instances"


async def _create(api: Api, instance_id: str, params: object = None, **extra: object) -> dict[str, object]:
    r = await api.client.post(INSTANCES, json={"instance_id": instance_id, "params": params, **extra},
                              headers=api.acme)  # fmt: skip
    assert r.status_code == 201, r.text
    result: dict[str, object] = r.json()["result"]
    return result


async def test_create_returns_the_pinned_version_and_get_shows_steps(api: Api) -> None:
    deployed = await api.deploy("acme", FLOW)
    created = await _create(api, "i1", {"n": 2})
    assert created == {"id": "i1", "status": "queued", "version_id": deployed["version"]["id"],
                       "workflow_id": "flow", "trigger_source": "api"}  # fmt: skip
    await api.platform.engine.wait("acme", "i1", statuses={Status.WAITING}, timeout=10)
    body = (await api.client.get(f"{INSTANCES}/i1", headers=api.acme)).json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    record = body["result"]
    assert record["status"] == "waiting" and record["params"] == {"n": 2}
    assert record["versionId"] == record["version_id"] == deployed["version"]["id"]
    assert [(s["type"], s["name"]) for s in record["steps"]] == [
        ("step", "double"),
        ("waitForEvent", "approval"),
    ]
    assert record["steps"][0]["output"] == 4 and record["step_count"] == 1
    assert len(record["queued"]) == len("2024-10-21 17:15:09.411")
    simple = (await api.client.get(f"{INSTANCES}/i1", params={"simple": "true"}, headers=api.acme)).json()
    assert simple["result"]["steps"] == [] and simple["result"]["step_count"] == 1
    desc = (await api.client.get(f"{INSTANCES}/i1", params={"order": "desc"}, headers=api.acme)).json()
    assert desc["result"]["steps"][0]["type"] == "waitForEvent"


@pytest.mark.parametrize("params", [{"a": 1}, '{"a": 1}'])
async def test_params_as_object_or_json_string(api: Api, params: object) -> None:
    await api.deploy("acme", QUICK)
    await _create(api, "p", params)
    done = await api.platform.engine.wait("acme", "p", timeout=10)
    assert done.status == Status.COMPLETE
    record = (await api.client.get(f"{INSTANCES}/p", headers=api.acme)).json()["result"]
    assert record["params"] == {"a": 1} and record["output"] == {"a": 1}


async def test_params_string_that_is_not_json_names_the_field(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.post(INSTANCES, json={"params": "{not json"}, headers=api.acme)
    assert r.status_code == 400
    error = error_of(r)
    assert error["field"] == "params" and error["message"].startswith("params:")


async def test_create_without_body_gets_a_generated_id(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.post(INSTANCES, headers=api.acme)
    assert r.status_code == 201, r.text
    assert len(r.json()["result"]["id"]) >= 32


async def test_batch_create_and_duplicates(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.post(f"{INSTANCES}/batch", headers=api.acme,
                              json=[{"instance_id": "b1", "params": 1}, {"instance_id": "b2", "params": "2"}])  # fmt: skip
    assert r.status_code == 201, r.text
    assert [i["id"] for i in r.json()["result"]] == ["b1", "b2"]
    again = await api.client.post(f"{INSTANCES}/batch", json=[{"instance_id": "b1"}], headers=api.acme)
    assert again.status_code == 409 and error_of(again)["code"] == 10008
    bad = await api.client.post(f"{INSTANCES}/batch", json={"instance_id": "x"}, headers=api.acme)
    assert bad.status_code == 400 and error_of(bad)["field"] == "body"
    bad_item = await api.client.post(f"{INSTANCES}/batch", json=[{"instance_id": 5}], headers=api.acme)
    assert bad_item.status_code == 400 and "body[0]" in error_of(bad_item)["field"]


async def test_duplicate_instance_id_is_409(api: Api) -> None:
    await api.deploy("acme", QUICK)
    await _create(api, "dup")
    r = await api.client.post(INSTANCES, json={"instance_id": "dup"}, headers=api.acme)
    assert r.status_code == 409 and error_of(r)["code"] == 10008


async def test_invalid_instance_id_is_400_naming_it(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.post(INSTANCES, json={"instance_id": "-bad id"}, headers=api.acme)
    assert r.status_code == 400
    assert "id" in error_of(r)["field"]


async def test_list_with_cursor_page_status_and_direction(api: Api) -> None:
    await api.deploy("acme", QUICK)
    for n in range(5):
        await _create(api, f"l{n}", n)
    for n in range(5):
        await api.platform.engine.wait("acme", f"l{n}", timeout=10)
    seen, cursor = [], None
    while True:
        params = {"per_page": "2", **({"cursor": cursor} if cursor else {})}
        body = (await api.client.get(INSTANCES, params=params, headers=api.acme)).json()
        seen += [i["id"] for i in body["result"]]
        assert body["result_info"]["per_page"] == 2
        cursor = body["result_info"]["cursor"]
        if cursor is None:
            break
    assert seen == ["l0", "l1", "l2", "l3", "l4"]
    item = body["result"][0]
    assert set(item) >= {"id", "status", "created_on", "modified_on", "started_on", "ended_on", "version_id",
                         "workflow_id"}  # fmt: skip
    page2 = (await api.client.get(INSTANCES, params={"per_page": 2, "page": 2}, headers=api.acme)).json()
    assert [i["id"] for i in page2["result"]] == ["l2", "l3"]
    page9 = (await api.client.get(INSTANCES, params={"per_page": 2, "page": 9}, headers=api.acme)).json()
    assert page9["result"] == []
    desc = (await api.client.get(INSTANCES, params={"direction": "desc"}, headers=api.acme)).json()
    assert desc["result"][0]["id"] == "l4"
    complete = (await api.client.get(INSTANCES, params={"status": "complete"}, headers=api.acme)).json()
    assert len(complete["result"]) == 5
    running = (await api.client.get(INSTANCES, params={"status": "running"}, headers=api.acme)).json()
    assert running["result"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "sleepy"}, "status"), ({"per_page": "0"}, "per_page"), ({"per_page": "x"}, "per_page"),
     ({"direction": "up"}, "direction"), ({"cursor": "garbage!"}, "cursor"), ({"date_start": "yesterday"}, "date_start"),
     ({"cursor": "abc", "page": "2"}, "page")],
)  # fmt: skip
async def test_bad_list_queries_are_400_naming_the_field(
    api: Api, params: dict[str, str], field: str
) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.get(INSTANCES, params=params, headers=api.acme)
    assert r.status_code == 400, r.text
    assert error_of(r)["field"] == field


async def test_events_and_status_changes(api: Api) -> None:
    await api.deploy("acme", FLOW)
    await _create(api, "e1", {"n": 1})
    await api.platform.engine.wait("acme", "e1", statuses={Status.WAITING}, timeout=10)
    r = await api.client.post(f"{INSTANCES}/e1/events/approved", json="ada", headers=api.acme)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["instanceId"] == "e1" and r.json()["result"]["timestamp"]
    done = await api.platform.engine.wait("acme", "e1", timeout=10)
    assert done.status == Status.COMPLETE
    record = (await api.client.get(f"{INSTANCES}/e1", headers=api.acme)).json()["result"]
    assert record["output"] == {"n": 2, "by": "ada"}

    await _create(api, "e2", {"n": 1})
    await api.platform.engine.wait("acme", "e2", statuses={Status.WAITING}, timeout=10)
    status = f"{INSTANCES}/e2/status"
    r = await api.client.patch(status, json={"status": "pause"}, headers=api.acme)
    assert r.status_code == 200 and r.json()["result"]["status"] == "paused", r.text
    r = await api.client.patch(status, json={"status": "resume"}, headers=api.acme)
    assert r.status_code == 200 and r.json()["result"]["status"] in ("queued", "running", "waiting")
    await api.platform.engine.wait("acme", "e2", statuses={Status.WAITING}, timeout=10)
    r = await api.client.patch(status, json={"status": "restart", "from": {"name": "double", "type": "do"}},
                               headers=api.acme)  # fmt: skip
    assert r.status_code == 200, r.text
    await api.platform.engine.wait("acme", "e2", statuses={Status.WAITING}, timeout=10)
    r = await api.client.patch(status, json={"status": "terminate"}, headers=api.acme)
    assert r.json()["result"]["status"] == "terminated"
    record = (await api.client.get(f"{INSTANCES}/e2", headers=api.acme)).json()["result"]
    assert record["steps"][-1] == {"type": "termination", "trigger": {"source": "api"}}
    again = await api.client.patch(status, json={"status": "pause"}, headers=api.acme)
    assert again.status_code == 409
    late = await api.client.post(f"{INSTANCES}/e2/events/approved", json=1, headers=api.acme)
    assert late.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [({"status": "explode"}, "status"), ({}, "status"), ({"status": "pause", "from": {"name": "x"}}, "from"),
     ({"status": "restart", "from": "x"}, "from"), ({"status": "restart", "from": {"name": "x", "type": "nap"}},
                                                     "from.type"),
     ({"status": "restart", "from": {"name": "x", "count": 0}}, "from.count")],
)  # fmt: skip
async def test_bad_status_bodies_are_400(api: Api, body: dict[str, object], field: str) -> None:
    await api.deploy("acme", FLOW)
    await _create(api, "s1", {"n": 1})
    r = await api.client.patch(f"{INSTANCES}/s1/status", json=body, headers=api.acme)
    assert r.status_code == 400, r.text
    assert error_of(r)["field"] == field


async def test_delete_instance(api: Api) -> None:
    await api.deploy("acme", QUICK)
    await _create(api, "d1", 1)
    await api.platform.engine.wait("acme", "d1", statuses=FINISHED, timeout=10)
    r = await api.client.delete(f"{INSTANCES}/d1", headers=api.acme)
    assert r.status_code == 200 and r.json()["result"] == {"status": "ok"}
    assert (await api.client.get(f"{INSTANCES}/d1", headers=api.acme)).status_code == 404


async def test_workflows_and_versions(api: Api) -> None:
    v1 = await api.deploy("acme", QUICK)
    v2 = await api.deploy("acme", QUICK + "\n# v2\n")
    await _create(api, "w1", 1)
    body = (await api.client.get(f"{CF}/acme/workflows", headers=api.acme)).json()
    assert [w["name"] for w in body["result"]] == ["flow"]
    assert body["result"][0]["class_name"] and body["result"][0]["script_name"] == "acme"
    assert sum(body["result"][0]["instances"].values()) == 1
    one = (await api.client.get(f"{CF}/acme/workflows/flow", headers=api.acme)).json()["result"]
    assert one["name"] == "flow" and one["versions"] == 2
    versions = (await api.client.get(f"{CF}/acme/workflows/flow/versions", headers=api.acme)).json()["result"]
    assert [v["id"] for v in versions] == [v2["version"]["id"], v1["version"]["id"]]
    assert versions[0]["aliases"] == ["latest"] and versions[0]["language"] == "python"
    by_digest = await api.client.get(
        f"{CF}/acme/workflows/flow/versions/{v1['version']['id']}", headers=api.acme
    )
    assert by_digest.json()["result"]["number"] == 1
    by_alias = await api.client.get(f"{CF}/acme/workflows/flow/versions/latest", headers=api.acme)
    assert by_alias.json()["result"]["number"] == 2
    assert (await api.client.get(f"{CF}/acme/workflows/flow/versions/9", headers=api.acme)).status_code == 404
    assert (await api.client.get(f"{CF}/acme/workflows/nope", headers=api.acme)).status_code == 404
    assert (await api.client.get(f"{CF}/acme/workflows/nope/versions", headers=api.acme)).status_code == 404
    put = await api.client.put(f"{CF}/acme/workflows/flow", json={}, headers=api.acme)
    assert put.status_code == 400 and "deploying a bundle" in error_of(put)["message"]


async def test_unknown_workflow_is_404(api: Api) -> None:
    r = await api.client.post(f"{CF}/acme/workflows/nope/instances", json={}, headers=api.acme)
    assert r.status_code == 404 and error_of(r)["code"] == 10006


async def test_event_payload_may_be_empty(api: Api) -> None:
    await api.deploy("acme", FLOW)
    await _create(api, "ev", {"n": 1})
    r = await api.client.post(f"{INSTANCES}/ev/events/approved", headers=api.acme)
    assert r.status_code == 200
    done = await api.platform.engine.wait("acme", "ev", timeout=10)
    assert done.output is not None and json.loads(json.dumps(done.output))
