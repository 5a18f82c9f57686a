"""The executor's per-run path: what it keeps derived between wake-ups stays right when a policy changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatcher import OPERATOR, _policy
from engine import Status
from sandbox import create_backend

from .conftest import deploy, finish, open_platform

SOURCE = "def run(event, step):\n    return step.do('double', lambda: event['payload'] * 2)\n"


async def test_limits_derived_once_per_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    derived: list[Any] = []
    original = _policy.TenantPolicy.sandbox_limits

    def counting(self: Any) -> Any:
        limits = original.fget(self)  # type: ignore[attr-defined]
        derived.append(limits)
        return limits

    monkeypatch.setattr(_policy.TenantPolicy, "sandbox_limits", property(counting))
    backend = create_backend("inprocess")
    platform = await open_platform(tmp_path / "data", {"wasm": backend, "restricted": backend})
    try:
        await deploy(platform, "acme", SOURCE)
        for value in range(4):
            instance = await platform.create_instance(OPERATOR, "acme", "flow", value)
            done = await finish(platform, "acme", instance.id)
            assert done.status == Status.COMPLETE and done.output == value * 2
            if value == 0:
                before = len(derived)  # deploy (background preparation) and the first wake derived them
        assert len(derived) == before  # later wake-ups reuse them
        assert {key.limits for key in platform.cache.warm_keys()} == {derived[-1]}

        await platform.update_policy(OPERATOR, "acme", {"limits": {"wall_seconds": 7.0}})
        instance = await platform.create_instance(OPERATOR, "acme", "flow", 5)
        assert (await finish(platform, "acme", instance.id)).output == 10
        assert len(derived) > before and derived[-1].wall_seconds == 7.0  # the new policy object is seen
        assert {key.limits for key in platform.cache.warm_keys()} == {derived[-1]}
    finally:
        await platform.aclose()
