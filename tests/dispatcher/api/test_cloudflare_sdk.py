"""The official ``cloudflare`` Python SDK, pointed at a live tenantflow server, drives a workflow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .live import LiveServer

cloudflare = pytest.importorskip("cloudflare")

FLOW = """
def run(event, step):
    total = step.do("total", lambda: sum(event["payload"]["items"]))
    approval = step.wait_for_event("approval", "approved", timeout="1 hour")
    step.sleep("settle", "1 hour")
    return {"total": total, "approved_by": approval["payload"]["by"]}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "data", "operator-secret") as live:
        yield live


def _setup(server: LiveServer) -> str:
    operator = {"Authorization": "Bearer operator-secret"}
    with httpx.Client(base_url=server.url, headers=operator) as http:
        created = http.post(
            "/tenantflow/v1/tenants", json={"id": "acme", "policy": {"backend": "restricted"}}
        )
        assert created.status_code == 201, created.text
        deployed = http.post("/tenantflow/v1/tenants/acme/bundles", params={"filename": "main.py",
                             "workflow": "orders"}, content=FLOW.encode())  # fmt: skip
        assert deployed.status_code == 201, deployed.text
        token: str = created.json()["result"]["token"]
        return token


def _wait_status(client: object, wanted: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = client.workflows.instances.get("order-1", account_id="acme", workflow_name="orders")  # type: ignore[attr-defined]
        if got.status == wanted or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_the_cloudflare_sdk_drives_an_instance(server: LiveServer) -> None:
    token = _setup(server)
    client = cloudflare.Cloudflare(api_token=token, base_url=f"{server.url}/client/v4", max_retries=0)

    created = client.workflows.instances.create(
        "orders", account_id="acme", instance_id="order-1", params='{"items": [1, 2, 3]}'
    )
    assert created.id == "order-1" and created.status == "queued"
    assert created.version_id.startswith("sha256:")

    got = _wait_status(client, "waiting")
    assert got.status == "waiting"
    assert got.params == {"items": [1, 2, 3]}
    assert got.version_id == created.version_id
    assert [s.type for s in got.steps] == ["step", "waitForEvent"]
    assert got.steps[0].name == "total" and got.steps[0].success is True
    assert got.step_count == 1

    listed = list(client.workflows.instances.list("orders", account_id="acme"))
    assert [i.id for i in listed] == ["order-1"]
    assert listed[0].status == "waiting"

    sent = client.workflows.instances.events.create(
        "approved", account_id="acme", workflow_name="orders", instance_id="order-1", body={"by": "ada"}
    )
    assert sent.instance_id == "order-1"
    got = _wait_status(client, "waiting")  # now sleeping an hour
    assert [s.type for s in got.steps] == ["step", "waitForEvent", "sleep"]

    paused = client.workflows.instances.status.edit("order-1", account_id="acme", workflow_name="orders",
                                                    status="pause")  # fmt: skip
    assert paused.status == "paused"
    assert _wait_status(client, "paused").status == "paused"

    resumed = client.workflows.instances.status.edit("order-1", account_id="acme", workflow_name="orders",
                                                     status="resume")  # fmt: skip
    assert resumed.status in ("queued", "running", "waiting")

    terminated = client.workflows.instances.status.edit("order-1", account_id="acme", workflow_name="orders",
                                                        status="terminate")  # fmt: skip
    assert terminated.status == "terminated"
    got = _wait_status(client, "terminated")
    assert got.steps[-1].type == "termination"


def test_the_cloudflare_sdk_sees_v4_errors(server: LiveServer) -> None:
    token = _setup(server)
    client = cloudflare.Cloudflare(api_token=token, base_url=f"{server.url}/client/v4", max_retries=0)
    with pytest.raises(cloudflare.NotFoundError):
        client.workflows.instances.get("nope", account_id="acme", workflow_name="orders")
    with pytest.raises(cloudflare.NotFoundError):  # another tenant's account looks like nothing
        client.workflows.instances.get("order-1", account_id="globex", workflow_name="orders")
    bad = cloudflare.Cloudflare(api_token="wrong", base_url=f"{server.url}/client/v4", max_retries=0)
    with pytest.raises(cloudflare.AuthenticationError):
        bad.workflows.instances.get("order-1", account_id="acme", workflow_name="orders")
    client.workflows.instances.create("orders", account_id="acme", instance_id="dup")
    with pytest.raises(cloudflare.ConflictError):
        client.workflows.instances.create("orders", account_id="acme", instance_id="dup")
