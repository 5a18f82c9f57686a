"""A workflow with retries, a sleep and an event, through the real engine, artifact store and sandboxes."""

import json
import sqlite3
from pathlib import Path

import pytest

from dispatcher import OPERATOR, Platform
from engine import Status

from .conftest import deploy, finish, open_platform

ORDER_FLOW = """
from tenantflow import NonRetryableError

def run(event, step):
    order = event["payload"]

    @step.do("reserve", retries={"limit": 3, "delay": 10, "backoff": "constant"})
    def reserve(ctx):
        if ctx["attempt"] < 3:
            raise ConnectionError("inventory service busy")
        return {"reserved": order["qty"], "attempt": ctx["attempt"]}

    reservation = reserve()
    step.sleep("cool off", 20)
    approval = step.wait_for_event("approval", "approved", timeout="1 hour")
    total = step.do("charge", lambda: order["qty"] * approval["payload"]["price"])
    return {"reservation": reservation, "total": total, "instance": event["instanceId"]}
"""


async def _run_order_flow(platform: Platform) -> None:
    await deploy(platform, "shop", ORDER_FLOW, workflow="orders")
    instance = await platform.create_instance(OPERATOR, "shop", "orders", {"qty": 3}, instance_id="order-1")
    await platform.engine.wait("shop", instance.id, statuses={Status.WAITING, Status.ERRORED}, timeout=30)
    await platform.send_event(OPERATOR, "shop", "orders", "order-1", "approved", {"price": 7})
    done = await finish(platform, "shop", "order-1")
    assert done.status == Status.COMPLETE, done.error
    assert done.output == {"reservation": {"reserved": 3, "attempt": 3}, "total": 21, "instance": "order-1"}
    assert done.params == {"qty": 3}
    record = await platform.describe_instance(OPERATOR, "shop", "orders", "order-1")
    assert [(s["type"], s["name"]) for s in record["steps"]] == [
        ("step", "reserve"), ("sleep", "cool off"), ("waitForEvent", "approval"), ("step", "charge"),
    ]  # fmt: skip
    assert [a["success"] for a in record["steps"][0]["attempts"]] == [False, False, True]
    assert record["steps"][0]["output"] == {"reserved": 3, "attempt": 3}
    assert record["steps"][2]["output"]["payload"] == {"price": 7}
    assert record["output"]["total"] == 21
    assert record["versionId"].startswith("sha256:")


async def test_order_flow_on_the_inprocess_backend(inprocess_platform: Platform) -> None:
    await _run_order_flow(inprocess_platform)


@pytest.mark.parametrize("backend", ["wasm", "restricted"])
async def test_order_flow_on_the_real_backends(tmp_path: Path, backend: str) -> None:
    platform = await open_platform(tmp_path / "data")
    try:
        await platform.create_tenant(OPERATOR, "shop", policy={"backend": backend})
        await _run_order_flow(platform)
        assert platform.cache.stats.cold_starts >= 1
        assert platform.cache.stats.hits >= 1
    finally:
        await platform.aclose()


async def test_the_engine_stores_envelopes_and_clients_see_bodies(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    await deploy(
        platform, "acme", "def run(event, step):\n    return step.do('s', lambda: {'v': event['payload']})\n"
    )
    instance = await platform.create_instance(OPERATOR, "acme", "flow", "hello", instance_id="i1")
    done = await finish(platform, "acme", instance.id)
    assert done.output == {"v": "hello"} and done.params == "hello"
    with sqlite3.connect(Path(platform.data_dir) / "engine.db") as db:
        params, output = db.execute("SELECT params, output FROM instances WHERE id = 'i1'").fetchone()
        (step_output,) = db.execute("SELECT output FROM steps").fetchone()
    digest = (await platform.resolve_version(OPERATOR, "acme", "flow", "latest")).digest
    route = {"tenant": "acme", "workflow": "flow", "version": digest}
    assert json.loads(params) == {"v": 1, "route": route, "body": "hello"}
    assert json.loads(output) == {"v": 1, "route": route, "body": {"v": "hello"}}
    assert json.loads(step_output) == {"v": 1, "route": route, "body": {"v": "hello"}}
    record = await platform.describe_instance(OPERATOR, "acme", "flow", "i1")
    assert "route" not in json.dumps({k: v for k, v in record.items() if k != "versionId"})


async def test_a_missing_envelope_errors_the_instance_and_runs_no_code(inprocess_platform: Platform) -> None:
    from engine import CreateRequest

    platform = inprocess_platform
    await deploy(platform, "acme", "def run(event, step):\n    print('tenant code ran')\n    return 1\n")
    raw = await platform.engine.create("acme", CreateRequest("flow", {"not": "an envelope"}, id="raw"))
    done = await platform.engine.wait("acme", raw.id)
    assert done.status == Status.ERRORED
    assert done.error is not None and done.error.name == "EnvelopeError"
    assert "no routing envelope" in done.error.message
    assert platform.executor.invocations == 0


async def test_instances_stay_pinned_to_their_version_until_migrated(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    await deploy(
        platform, "acme", "def run(event, step):\n    step.sleep('wait', '1 hour')\n    return 'v1'\n"
    )
    pinned = await platform.create_instance(OPERATOR, "acme", "flow", instance_id="pinned")
    migrated = await platform.create_instance(OPERATOR, "acme", "flow", instance_id="migrated")
    await platform.engine.wait("acme", "pinned", statuses={Status.WAITING})
    await platform.engine.wait("acme", "migrated", statuses={Status.WAITING})
    await deploy(
        platform, "acme", "def run(event, step):\n    step.sleep('wait', '1 hour')\n    return 'v2'\n"
    )
    fresh = await platform.create_instance(OPERATOR, "acme", "flow", instance_id="fresh")
    await platform.migrate(OPERATOR, "acme", "flow", ["migrated"], "latest")
    for instance in (pinned, migrated, fresh):
        await platform.engine.restart("acme", instance.id)  # replay now instead of waiting an hour
    versions = await platform.list_versions(OPERATOR, "acme", "flow")
    by_number = {v.number: v.digest for v in versions}
    assert (await platform.describe_instance(OPERATOR, "acme", "flow", "pinned"))["versionId"] == by_number[1]
    assert (await platform.describe_instance(OPERATOR, "acme", "flow", "migrated"))["versionId"] == by_number[
        2
    ]
    assert (await platform.describe_instance(OPERATOR, "acme", "flow", "fresh"))["versionId"] == by_number[2]


@pytest.mark.parametrize("backend", ["wasm", "restricted"])
async def test_deploy_prepares_the_derived_form_before_the_first_wake(tmp_path: Path, backend: str) -> None:
    import asyncio

    platform = await open_platform(tmp_path / "data")
    try:
        await platform.create_tenant(OPERATOR, "pre", policy={"backend": backend})
        result = await platform.deploy(
            OPERATOR,
            "pre",
            b"def run(event, step):\n    return 'ready'\n",
            filename="main.py",
            workflow="flow",
        )
        sandbox_backend = platform.backends[backend]
        digest = result.version.digest
        for _ in range(600):  # the first deploy may build the wasm runner
            if await platform.artifacts.get_derived(digest, sandbox_backend.name, sandbox_backend.version):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("deploy did not prepare the derived form")
        assert platform.executor.invocations == 0  # prepared without any instance

        async def no_compiling(bundle: object) -> bytes:
            raise AssertionError("the first wake-up compiled the bundle again")

        sandbox_backend.prepare = no_compiling  # type: ignore[method-assign]
        instance = await platform.create_instance(OPERATOR, "pre", "flow")
        assert (await finish(platform, "pre", instance.id)).output == "ready"
    finally:
        await platform.aclose()
