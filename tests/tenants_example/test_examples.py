"""Each example bundle in tenants_example/ runs through the real stack on both sandbox backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher import OPERATOR, Platform
from engine import FINISHED, Status

EXAMPLES = Path(__file__).resolve().parents[2] / "tenants_example"


@pytest.fixture(params=["restricted", "wasm"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    platform = await Platform.open(tmp_path / "data")
    await platform.create_tenant(
        OPERATOR, "shop", policy={"backend": request.param, "bindings": ["kv", "db"]}
    )
    yield platform
    await platform.aclose()


async def _deploy(platform: Platform, bundle: str) -> str:
    result = await platform.deploy(OPERATOR, "shop", EXAMPLES / bundle)
    return result.version.workflow


async def _finish(platform: Platform, workflow: str, instance_id: str) -> dict[str, object]:
    await platform.engine.wait("shop", instance_id, statuses=FINISHED, timeout=60)
    return await platform.describe_instance(OPERATOR, "shop", workflow, instance_id)


ORDER = {"order_id": "A1", "items": [{"sku": "mug", "qty": 2, "price": 9.5}, {"sku": "tee", "qty": 1, "price": 20}],
         "card": "4242", "flaky_attempts": 2}  # fmt: skip


async def test_order_processing_retries_then_completes(platform: Platform) -> None:
    workflow = await _deploy(platform, "order_processing")
    await platform.create_instance(OPERATOR, "shop", workflow, ORDER, instance_id="ok")
    record = await _finish(platform, workflow, "ok")
    assert record["status"] == "complete", record["error"]
    output = record["output"]
    assert isinstance(output, dict) and output["total"] == 39.0 and output["reservation"]["attempts"] == 3
    steps = record["steps"]
    assert isinstance(steps, list)
    assert [a["success"] for a in steps[0]["attempts"]] == [False, False, True]
    assert steps[0]["attempts"][0]["error"]["name"] == "ConnectionError"


async def test_order_processing_declined_card_is_not_retried(platform: Platform) -> None:
    workflow = await _deploy(platform, "order_processing")
    await platform.create_instance(OPERATOR, "shop", workflow, {**ORDER, "card": "declined", "flaky_attempts": 0},
                                   instance_id="declined")  # fmt: skip
    record = await _finish(platform, workflow, "declined")
    assert record["status"] == "errored"
    assert record["error"] == {"name": "NonRetryableError", "message": "card declined for order A1"}
    charge = [s for s in record["steps"] if s.get("name") == "charge card"]  # type: ignore[union-attr]
    assert len(charge[0]["attempts"]) == 1


async def test_cart_reminder_sleeps_then_reminds(platform: Platform) -> None:
    workflow = await _deploy(platform, "cart_reminder")
    cart = {"cart_id": "C7", "email": "ada@example.com", "items": ["mug", "tee"], "wait": "1 second"}
    await platform.create_instance(OPERATOR, "shop", workflow, cart, instance_id="open")
    await platform.create_instance(
        OPERATOR, "shop", workflow, {**cart, "checked_out": True}, instance_id="bought"
    )
    record = await _finish(platform, workflow, "open")
    assert record["status"] == "complete", record["error"]
    assert record["output"] == {"cart_id": "C7", "reminded": True,
                                "message": {"to": "ada@example.com", "subject": "You left 2 item(s) in your cart"}}  # fmt: skip
    assert [s["type"] for s in record["steps"]] == ["step", "sleep", "step", "step"]  # type: ignore[attr-defined]
    bought = await _finish(platform, workflow, "bought")
    assert bought["output"] == {"cart_id": "C7", "reminded": False}


async def test_expense_approval_waits_for_a_decision_or_times_out(platform: Platform) -> None:
    workflow = await _deploy(platform, "expense_approval")
    expense = {"expense_id": "E1", "amount": 120.0, "submitter": "ada", "timeout": "1 hour"}
    await platform.create_instance(OPERATOR, "shop", workflow, expense, instance_id="decided")
    await platform.engine.wait("shop", "decided", statuses={Status.WAITING}, timeout=60)
    await platform.send_event(
        OPERATOR, "shop", workflow, "decided", "decision", {"approved": True, "by": "grace"}
    )
    record = await _finish(platform, workflow, "decided")
    assert record["status"] == "complete", record["error"]
    assert record["output"]["status"] == "approved" and record["output"]["by"] == "grace"  # type: ignore[index]

    await platform.create_instance(OPERATOR, "shop", workflow, {**expense, "expense_id": "E2", "timeout": 300},
                                   instance_id="late")  # fmt: skip
    late = await _finish(platform, workflow, "late")
    assert late["status"] == "complete", late["error"]
    assert late["output"]["status"] == "escalated"  # type: ignore[index]


async def test_inventory_uses_kv_and_db_across_files(platform: Platform) -> None:
    workflow = await _deploy(platform, "inventory")
    moves = {"movements": [{"sku": "mug", "qty": 10}, {"sku": "mug", "qty": -3}, {"sku": "tee", "qty": 4}]}
    await platform.create_instance(OPERATOR, "shop", workflow, moves, instance_id="m1")
    record = await _finish(platform, workflow, "m1")
    assert record["status"] == "complete", record["error"]
    assert record["output"]["ledger"] == {
        "mug": {"net": 7, "movements": 2},
        "tee": {"net": 4, "movements": 1},
    }  # type: ignore[index]
    oversell = {"movements": [{"sku": "mug", "qty": -100}]}
    await platform.create_instance(OPERATOR, "shop", workflow, oversell, instance_id="m2")
    failed = await _finish(platform, workflow, "m2")
    assert failed["status"] == "errored"
    assert "not enough mug" in failed["error"]["message"]  # type: ignore[index]
