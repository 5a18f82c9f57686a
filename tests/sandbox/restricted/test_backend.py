"""The restricted backend's public surface and its fit to the sandbox protocol."""

from __future__ import annotations

import pytest

import sandbox._restricted
from sandbox import LimitExceededError, Sandbox, SandboxBackend
from sandbox._restricted import RestrictedBackend

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_public_exports_are_pinned() -> None:
    assert set(sandbox._restricted.__all__) == {
        "PoolBusyError",
        "PoolConfig",
        "RestrictedBackend",
        "RestrictedSandbox",
    }


async def test_fits_the_protocol(shared_backend: RestrictedBackend) -> None:
    assert isinstance(shared_backend, SandboxBackend)
    assert shared_backend.version.startswith("restricted-")
    handle = await shared_backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
    assert isinstance(handle, Sandbox) and handle.alive


async def test_events_must_be_json(shared_backend: RestrictedBackend) -> None:
    handle = await shared_backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
    with pytest.raises(TypeError, match="JSON"):
        await handle.invoke({"payload": object()}, FakeHost())
    assert (await handle.invoke(event(), FakeHost())).output == 1


async def test_concurrent_invocations_of_one_handle(shared_backend: RestrictedBackend) -> None:
    import asyncio

    handle = await shared_backend.load(make_bundle("return event['payload']"), limits=FAST_LIMITS)
    results = await asyncio.gather(*(handle.invoke(event(i), FakeHost()) for i in range(6)))
    assert [r.output for r in results] == list(range(6))


async def test_rlimit_cpu_is_the_kernel_backstop() -> None:
    # A worker whose lifetime CPU ceiling (hard RLIMIT_CPU) is lower than the sandbox's CPU limit:
    # the kernel's SIGXCPU ends the runaway guest, reported as the cpu limit.
    async with RestrictedBackend(pool_size=1, cpu_ceiling=2) as backend:
        handle = await backend.load(
            make_bundle("while True:\n    pass"), limits=FAST_LIMITS.override(cpu_seconds=30.0)
        )
        with pytest.raises(LimitExceededError) as info:
            await handle.invoke(event(), FakeHost())
        assert info.value.limit == "cpu"
