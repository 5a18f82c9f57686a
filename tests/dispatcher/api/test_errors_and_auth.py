"""Authentication, cross-tenant isolation, malformed input, body caps, rate limits, and no 500 tracebacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.api import ApiConfig

from .conftest import CF, QUICK, TF, Api, error_of, make_api

INSTANCES = f"{CF}/acme/workflows/flow/instances"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer tf_nope"}, {"Authorization": "Basic abc"}],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"{CF}/acme/workflows"), ("POST", INSTANCES), ("GET", INSTANCES), ("GET", f"{INSTANCES}/x"),
     ("PATCH", f"{INSTANCES}/x/status"), ("POST", f"{INSTANCES}/x/events/t"), ("GET", f"{TF}/tenants"),
     ("POST", f"{TF}/tenants/acme/bundles"), ("GET", f"{TF}/whoami")],
)  # fmt: skip
async def test_missing_or_bad_tokens_are_401(
    api: Api, headers: dict[str, str], method: str, path: str
) -> None:
    r = await api.client.request(method, path, headers=headers, json={})
    assert r.status_code == 401, r.text
    assert error_of(r)["code"] == 10000
    assert r.headers["www-authenticate"] == "Bearer"


async def test_revoked_token_is_401(api: Api) -> None:
    created = await api.client.post(f"{TF}/tenants/acme/tokens", json={"label": "ci"}, headers=api.acme)
    assert created.status_code == 201
    token = created.json()["result"]
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await api.client.get(f"{TF}/whoami", headers=headers)).json()["result"]["tenant"] == "acme"
    assert (await api.client.delete(f"{TF}/tokens/{token['id']}", headers=api.acme)).status_code == 200
    assert (await api.client.get(f"{TF}/whoami", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", f"{CF}/globex/workflows"), ("GET", f"{CF}/globex/workflows/flow"),
     ("POST", f"{CF}/globex/workflows/flow/instances"), ("POST", f"{CF}/globex/workflows/flow/instances/batch"),
     ("GET", f"{CF}/globex/workflows/flow/instances"), ("GET", f"{CF}/globex/workflows/flow/instances/g1"),
     ("DELETE", f"{CF}/globex/workflows/flow/instances/g1"),
     ("PATCH", f"{CF}/globex/workflows/flow/instances/g1/status"),
     ("POST", f"{CF}/globex/workflows/flow/instances/g1/events/t"),
     ("GET", f"{CF}/globex/workflows/flow/versions"), ("GET", f"{CF}/globex/workflows/flow/versions/1"),
     ("GET", f"{TF}/tenants/globex"), ("PATCH", f"{TF}/tenants/globex"), ("GET", f"{TF}/tenants/globex/policy"),
     ("PATCH", f"{TF}/tenants/globex/policy"), ("GET", f"{TF}/tenants/globex/tokens"),
     ("POST", f"{TF}/tenants/globex/tokens"), ("POST", f"{TF}/tenants/globex/bundles?filename=main.py"),
     ("GET", f"{TF}/tenants/globex/workflows"), ("GET", f"{TF}/tenants/globex/workflows/flow/versions"),
     ("GET", f"{TF}/tenants/globex/workflows/flow/versions/1"), ("GET", f"{TF}/tenants/globex/workflows/flow/aliases"),
     ("PUT", f"{TF}/tenants/globex/workflows/flow/aliases/prod"),
     ("POST", f"{TF}/tenants/globex/workflows/flow/aliases/latest/rollback"),
     ("GET", f"{TF}/tenants/globex/workflows/flow/aliases/latest/history")],
)  # fmt: skip
async def test_another_tenants_things_are_404(api: Api, method: str, path: str) -> None:
    await api.deploy("globex", QUICK)
    created = await api.client.post(f"{CF}/globex/workflows/flow/instances", json={"instance_id": "g1"},
                                    headers=api.globex)  # fmt: skip
    assert created.status_code == 201
    body = [{"instance_id": "x"}] if path.endswith("batch") else {"status": "pause", "version": 1}
    r = await api.client.request(method, path, headers=api.acme, json=body)
    assert r.status_code == 404, (method, path, r.text)
    error = error_of(r)
    assert (error["code"] == 10006 and "g1" not in error["message"]) or "not found" in error["message"]
    # and the thing is untouched
    got = await api.client.get(f"{CF}/globex/workflows/flow/instances/g1", headers=api.globex)
    assert got.status_code == 200


async def test_same_instance_id_in_two_tenants_coexists(api: Api) -> None:
    await api.deploy("acme", QUICK)
    await api.deploy("globex", QUICK)
    for tenant, headers in (("acme", api.acme), ("globex", api.globex)):
        r = await api.client.post(f"{CF}/{tenant}/workflows/flow/instances",
                                  json={"instance_id": "order-1", "params": {"t": tenant}}, headers=headers)  # fmt: skip
        assert r.status_code == 201
    await api.platform.engine.wait("acme", "order-1", timeout=10)
    await api.platform.engine.wait("globex", "order-1", timeout=10)
    for tenant, headers in (("acme", api.acme), ("globex", api.globex)):
        got = await api.client.get(f"{CF}/{tenant}/workflows/flow/instances/order-1", headers=headers)
        assert got.json()["result"]["output"] == {"t": tenant}


async def test_operator_only_operations_are_403_for_tenants(api: Api) -> None:
    r = await api.client.post(f"{TF}/tenants", json={"id": "evil"}, headers=api.acme)
    assert r.status_code == 403 and error_of(r)["code"] == 10004
    r = await api.client.patch(f"{TF}/tenants/acme/policy", json={"creation_rate": 1e6}, headers=api.acme)
    assert r.status_code == 403
    r = await api.client.patch(f"{TF}/tenants/acme", json={"status": "active"}, headers=api.acme)
    assert r.status_code == 403
    r = await api.client.get(f"{TF}/tokens", headers=api.acme)
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", INSTANCES), ("POST", f"{INSTANCES}/batch"), ("PATCH", f"{INSTANCES}/x/status"),
     ("POST", f"{INSTANCES}/x/events/t"), ("POST", f"{TF}/tenants"), ("PATCH", f"{TF}/tenants/acme/policy")],
)  # fmt: skip
@pytest.mark.parametrize("content", [b"{not json", b'{"a": 1', b"\xff\xfe", b"[1, 2,]"])
async def test_malformed_json_is_400_naming_the_body(
    api: Api, method: str, path: str, content: bytes
) -> None:
    await api.deploy("acme", QUICK)
    await api.client.post(INSTANCES, json={"instance_id": "x"}, headers=api.acme)
    r = await api.client.request(method, path, content=content, headers={**api.operator,
                                 "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["code"] == 10002 and error["field"] == "body" and error["message"].startswith("body:")


async def test_a_json_body_of_the_wrong_type_is_400(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.post(INSTANCES, json=[1, 2], headers=api.acme)
    assert r.status_code == 400 and error_of(r)["field"] == "body"


@pytest.fixture
async def small_api(tmp_path: Path) -> AsyncIterator[Api]:
    async for value in make_api(tmp_path, ApiConfig(max_body_bytes=1024, max_upload_bytes=4096)):
        yield value


async def test_oversized_json_bodies_are_413(small_api: Api) -> None:
    api = small_api
    await api.deploy("acme", QUICK)
    big = {"params": "x" * 2000}
    r = await api.client.post(INSTANCES, json=big, headers=api.acme)
    assert r.status_code == 413 and error_of(r)["code"] == 10009

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(10):
            yield b" " * 512

    r = await api.client.post(f"{INSTANCES}/x/events/t", content=chunks(), headers=api.acme)
    assert r.status_code == 413


async def test_oversized_uploads_are_413(small_api: Api) -> None:
    api = small_api
    r = await api.client.post(f"{TF}/tenants/acme/bundles", params={"filename": "main.py"},
                              content=b"#" * 5000, headers=api.acme)  # fmt: skip
    assert r.status_code == 413 and error_of(r)["code"] == 10009
    ok = await api.client.post(f"{TF}/tenants/acme/bundles", params={"filename": "main.py", "workflow": "flow"},
                               content=QUICK.encode() + b"#" * 2000, headers=api.acme)  # fmt: skip
    assert ok.status_code == 201, ok.text


async def test_creation_rate_is_429_with_retry_after(tmp_path: Path) -> None:
    async for api in make_api(tmp_path, creation_rate=2):
        await api.deploy("acme", QUICK)
        statuses = []
        for n in range(4):
            r = await api.client.post(INSTANCES, json={"instance_id": f"r{n}"}, headers=api.acme)
            statuses.append(r.status_code)
        assert statuses[:2] == [201, 201] and 429 in statuses[2:]
        limited = next(r for r in [r] if r.status_code == 429) if r.status_code == 429 else None
        if limited is None:
            r = await api.client.post(INSTANCES, json={"instance_id": "r9"}, headers=api.acme)
            limited = r
        assert limited.status_code == 429
        assert error_of(limited)["code"] == 10010
        assert int(limited.headers["retry-after"]) >= 1
        batch = await api.client.post(f"{INSTANCES}/batch", json=[{} for _ in range(5)], headers=api.acme)
        assert batch.status_code == 429


async def test_unknown_routes_and_methods(api: Api) -> None:
    r = await api.client.get("/client/v4/nothing", headers=api.acme)
    assert r.status_code == 404 and error_of(r)["code"] == 10006
    r = await api.client.delete(f"{CF}/acme/workflows/flow/instances", headers=api.acme)
    assert r.status_code == 405 and error_of(r)["code"] == 10007


async def test_an_unexpected_error_is_a_v4_500_with_a_request_id_and_no_traceback(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.platform, "list_tenants", boom)
    r = await api.client.get(f"{TF}/tenants", headers=api.operator)
    assert r.status_code == 500
    error = error_of(r)
    assert error["code"] == 10011
    request_id = r.headers["x-request-id"]
    assert request_id in error["message"]
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert any("secret internals" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)


async def test_every_response_has_a_request_id(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 16
    assert r.json() == {"success": True, "errors": [], "messages": [], "result": {"status": "ok"}}


async def test_suspended_tenant_refuses_new_instances(api: Api) -> None:
    await api.deploy("acme", QUICK)
    r = await api.client.patch(f"{TF}/tenants/acme", json={"status": "suspended"}, headers=api.operator)
    assert r.status_code == 200 and r.json()["result"]["status"] == "suspended"
    r = await api.client.post(INSTANCES, json={}, headers=api.acme)
    assert r.status_code == 403 and error_of(r)["code"] == 10005
