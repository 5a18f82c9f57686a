"""Tenant A can never see, signal or control tenant B's instances, even when guessing ids."""

from typing import Any

import pytest

from dispatcher import (
    OPERATOR,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    Platform,
    Principal,
)
from engine import Status

from .conftest import deploy

WAITER = "def run(event, step):\n    return step.wait_for_event('w', 'go', timeout='1 hour')['payload']\n"


async def _two_tenants(platform: Platform) -> tuple[Principal, Principal]:
    token_a = await deploy(platform, "tenant-a", WAITER)
    token_b = await deploy(platform, "tenant-b", WAITER)
    return await platform.authenticate(token_a), await platform.authenticate(token_b)


async def test_same_instance_id_in_two_tenants(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    a, b = await _two_tenants(platform)
    await platform.create_instance(a, "tenant-a", "flow", "for a", instance_id="order-1")
    await platform.create_instance(b, "tenant-b", "flow", "for b", instance_id="order-1")
    await platform.send_event(a, "tenant-a", "flow", "order-1", "go", "a's event")
    await platform.send_event(b, "tenant-b", "flow", "order-1", "go", "b's event")
    done_a = await platform.engine.wait("tenant-a", "order-1")
    done_b = await platform.engine.wait("tenant-b", "order-1")
    assert (await platform.get_instance(a, "tenant-a", "flow", "order-1")).output == "a's event"
    assert (await platform.get_instance(b, "tenant-b", "flow", "order-1")).output == "b's event"
    assert done_a.status == done_b.status == Status.COMPLETE


@pytest.mark.parametrize(
    "operation",
    [
        lambda p, who: p.get_instance(who, "tenant-b", "flow", "secret-1"),
        lambda p, who: p.describe_instance(who, "tenant-b", "flow", "secret-1"),
        lambda p, who: p.list_instances(who, "tenant-b", "flow"),
        lambda p, who: p.send_event(who, "tenant-b", "flow", "secret-1", "go", "forged"),
        lambda p, who: p.control_instance(who, "tenant-b", "flow", "secret-1", "pause"),
        lambda p, who: p.control_instance(who, "tenant-b", "flow", "secret-1", "terminate"),
        lambda p, who: p.control_instance(who, "tenant-b", "flow", "secret-1", "restart"),
        lambda p, who: p.delete_instance(who, "tenant-b", "flow", "secret-1"),
        lambda p, who: p.create_instance(who, "tenant-b", "flow", "x"),
        lambda p, who: p.deploy(
            who, "tenant-b", b"def run(event, step):\n    return 1\n", filename="main.py"
        ),
        lambda p, who: p.list_versions(who, "tenant-b", "flow"),
        lambda p, who: p.get_tenant(who, "tenant-b"),
        lambda p, who: p.list_tokens(who, "tenant-b"),
        lambda p, who: p.get_instance(who, "tenant-b", "flow", "does-not-exist"),
    ],
)
async def test_tenant_a_cannot_touch_tenant_b(inprocess_platform: Platform, operation: Any) -> None:
    platform = inprocess_platform
    a, b = await _two_tenants(platform)
    await platform.create_instance(b, "tenant-b", "flow", "b only", instance_id="secret-1")
    await platform.engine.wait("tenant-b", "secret-1", statuses={Status.WAITING})
    with pytest.raises(NotFoundError) as info:
        await operation(platform, a)
    assert "secret-1" not in str(info.value) or "not found" in str(info.value)
    # B's instance is untouched and still works.
    await platform.send_event(b, "tenant-b", "flow", "secret-1", "go", "real")
    await platform.engine.wait("tenant-b", "secret-1")
    assert (await platform.get_instance(b, "tenant-b", "flow", "secret-1")).output == "real"


async def test_an_instance_is_only_reachable_under_its_own_workflow(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    a, _ = await _two_tenants(platform)
    await platform.create_instance(a, "tenant-a", "flow", instance_id="i")
    with pytest.raises(NotFoundError):
        await platform.get_instance(a, "tenant-a", "other-workflow", "i")


async def test_tokens_authenticate_and_revoke(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    a, _ = await _two_tenants(platform)
    with pytest.raises(AuthenticationError, match="missing bearer token"):
        await platform.authenticate(None)
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        await platform.authenticate("tf_guess")
    info, secret = await platform.create_token(a, "tenant-a", "ci")
    assert (await platform.authenticate(secret)).tenant == "tenant-a"
    await platform.revoke_token(a, info.id)
    with pytest.raises(AuthenticationError):
        await platform.authenticate(secret)
    with pytest.raises(PermissionDeniedError):
        await platform.create_tenant(a, "tenant-c")
    with pytest.raises(PermissionDeniedError):
        await platform.update_policy(a, "tenant-a", {"backend": "restricted"})
    operator_secret = await platform.ensure_operator_token()
    assert operator_secret is not None and (await platform.authenticate(operator_secret)).is_operator
    assert await platform.ensure_operator_token() is None
    stored = (platform.data_dir / "control.db").read_bytes()
    assert secret.encode() not in stored and operator_secret.encode() not in stored


async def test_secrets_are_never_listed(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    tenant, _ = await platform.create_tenant(OPERATOR, "s", policy={"secrets": {"API_KEY": "hunter2"}})
    assert tenant.to_json()["policy"]["secrets"] == ["API_KEY"]
    assert "hunter2" not in str(tenant.to_json())
    assert "hunter2" not in repr([t.to_json() for t in await platform.list_tenants(OPERATOR)])
