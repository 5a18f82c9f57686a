"""Tenant status, policies, creation rate and concurrency limits."""

import asyncio
import time

import pytest

from dispatcher import (
    OPERATOR,
    InvalidRequestError,
    Platform,
    RateLimitedError,
    TenantPolicy,
    TenantSuspendedError,
)
from engine import Status

from .conftest import deploy, finish

SLEEPER = "def run(event, step):\n    step.sleep('nap', 200)\n    return step.do('after', lambda: 'woke')\n"


async def test_suspending_a_tenant_pauses_its_instances_and_refuses_new_ones(
    inprocess_platform: Platform,
) -> None:
    platform = inprocess_platform
    await deploy(platform, "t", SLEEPER)
    instance = await platform.create_instance(OPERATOR, "t", "flow", instance_id="i1")
    await platform.engine.wait("t", "i1", statuses={Status.WAITING})
    await platform.set_tenant_status(OPERATOR, "t", "suspended")
    assert (await platform.engine.get("t", "i1")).status == Status.PAUSED
    with pytest.raises(TenantSuspendedError):
        await platform.create_instance(OPERATOR, "t", "flow")
    with pytest.raises(TenantSuspendedError):
        await platform.control_instance(OPERATOR, "t", "flow", "i1", "resume")
    await asyncio.sleep(0.3)
    assert (await platform.engine.get("t", "i1")).status == Status.PAUSED
    await platform.set_tenant_status(OPERATOR, "t", "active")
    assert (await finish(platform, "t", instance.id)).output == "woke"


async def test_creation_rate_is_limited_per_tenant(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    await deploy(platform, "slow", "def run(event, step):\n    return 1\n", creation_rate=5)
    await deploy(platform, "fast", "def run(event, step):\n    return 1\n")
    for _ in range(5):
        await platform.create_instance(OPERATOR, "slow", "flow")
    with pytest.raises(RateLimitedError, match="exceeded its instance creation rate of 5/s") as info:
        await platform.create_instance(OPERATOR, "slow", "flow")
    assert 0 < info.value.retry_after <= 0.2
    await platform.create_instance(OPERATOR, "fast", "flow")  # other tenants are unaffected
    await asyncio.sleep(0.25)
    await platform.create_instance(OPERATOR, "slow", "flow")


async def test_per_tenant_concurrency_limit(inprocess_platform: Platform) -> None:
    platform = inprocess_platform
    source = "import time\ndef run(event, step):\n    return step.do('work', lambda: time.sleep(0.05) or 1)\n"
    await deploy(platform, "narrow", source, max_concurrent_instances=2)
    running = {"max": 0}
    instances = await platform.create_instances(OPERATOR, "narrow", "flow", [(None, i) for i in range(8)])

    async def watch() -> None:
        while True:
            running["max"] = max(running["max"], platform.engine._ready._running.get("narrow", 0))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    for instance in instances:
        await platform.engine.wait("narrow", instance.id)
    watcher.cancel()
    assert running["max"] == 2
    assert time.perf_counter() - started >= 0.15


def test_policy_validation_names_the_field() -> None:
    for bad, field in [
        ({"backend": "docker"}, "policy.backend"),
        ({"bindings": ["kv", "filesystem"]}, "policy.bindings"),
        ({"limits": {"cpu_seconds": -1}}, "policy.limits.cpu_seconds"),
        ({"limits": {"gpu": 1}}, "policy.limits"),
        ({"fetch_allowlist": ["http://x"]}, "policy.fetch_allowlist"),
        ({"max_concurrent_instances": 0}, "policy.max_concurrent_instances"),
        ({"secrets": {"not valid": "x"}}, "policy.secrets"),
        ({"colour": "blue"}, "policy"),
    ]:
        with pytest.raises(InvalidRequestError) as info:
            TenantPolicy.from_json(bad)
        assert info.value.field == field, bad
    policy = TenantPolicy.from_json({"limits": {"cpu_seconds": 2}, "bindings": ["kv"]})
    assert policy.sandbox_limits.cpu_seconds == 2
    assert policy.sandbox_limits.memory_bytes == 128 * 1024 * 1024
