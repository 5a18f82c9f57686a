"""Every limit fires with the right error, and the pool (and other tenants) keep working."""

from __future__ import annotations

import asyncio

import pytest

from sandbox import LimitExceededError, Limits, TenantError
from sandbox._restricted import RestrictedBackend

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")

SMALL = FAST_LIMITS.override(cpu_seconds=0.5, wall_seconds=5.0, memory_bytes=64 * 1024 * 1024)


async def expect_limit(backend: RestrictedBackend, source: str, limit: str, limits: Limits = SMALL) -> None:
    sandbox = await backend.load(make_bundle(source), limits=limits)
    with pytest.raises(LimitExceededError) as info:
        await sandbox.invoke(event(), FakeHost())
    assert info.value.limit == limit, info.value
    assert not sandbox.alive
    # Another tenant on the same pool still works.
    other = await backend.load(make_bundle("return 'still fine'"), limits=limits)
    assert (await other.invoke(event(), FakeHost())).output == "still fine"


async def test_cpu_loop(shared_backend: RestrictedBackend) -> None:
    await expect_limit(shared_backend, "while True:\n    pass", "cpu")


async def test_cpu_loop_that_catches_everything(shared_backend: RestrictedBackend) -> None:
    source = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    await expect_limit(shared_backend, source, "cpu")


async def test_cpu_bomb_in_a_step_callback(shared_backend: RestrictedBackend) -> None:
    source = "def spin():\n    x = 0\n    while True:\n        x += 1\nreturn step.do('spin', spin)"
    await expect_limit(shared_backend, source, "cpu")


async def test_cpu_bomb_at_module_level_fails_the_load(shared_backend: RestrictedBackend) -> None:
    source = "while True:\n    pass\ndef run(event, step):\n    return 1\n"
    with pytest.raises(LimitExceededError) as info:
        await shared_backend.load(make_bundle(source), limits=SMALL)
    assert info.value.limit == "cpu"


async def test_memory_bomb(shared_backend: RestrictedBackend) -> None:
    await expect_limit(shared_backend, "x = []\nwhile True:\n    x.append('a' * 1000000)", "memory")


async def test_caught_memory_error_is_still_the_memory_limit(shared_backend: RestrictedBackend) -> None:
    source = "try:\n    x = 'a' * (10 ** 10)\nexcept MemoryError:\n    return 'caught'\nreturn 'no'"
    await expect_limit(shared_backend, source, "memory")


async def test_memory_error_swallowed_by_finally_return(shared_backend: RestrictedBackend) -> None:
    source = "def f():\n    try:\n        x = 'a' * (10 ** 10)\n    finally:\n        return 'swallowed'\nreturn f()"
    await expect_limit(shared_backend, source, "memory")


async def test_memory_error_inside_a_step_callback(shared_backend: RestrictedBackend) -> None:
    source = "def big():\n    return 'a' * (10 ** 10)\ntry:\n    return step.do('big', big)\nexcept Exception:\n    return 'caught'"
    await expect_limit(shared_backend, source, "memory")


async def test_deep_recursion(shared_backend: RestrictedBackend) -> None:
    await expect_limit(shared_backend, "def f(n):\n    return f(n + 1)\nreturn f(0)", "recursion")


async def test_caught_recursion_error_is_still_the_recursion_limit(shared_backend: RestrictedBackend) -> None:
    source = "def f(n):\n    return f(n + 1)\ntry:\n    f(0)\nexcept RecursionError:\n    return 'caught'"
    await expect_limit(shared_backend, source, "recursion")


async def test_output_flood_is_truncated_with_a_marker(shared_backend: RestrictedBackend) -> None:
    limits = SMALL.override(output_bytes=1000)
    sandbox = await shared_backend.load(
        make_bundle("for i in range(10000):\n    print('x' * 50)\nreturn 1"), limits=limits
    )
    result = await sandbox.invoke(event(), FakeHost())
    assert result.output == 1
    assert result.output_truncated
    assert result.stdout.startswith("x" * 50)
    assert "output truncated" in result.stdout
    assert len(result.stdout.encode()) < 1200


async def test_oversized_result(shared_backend: RestrictedBackend) -> None:
    await expect_limit(shared_backend, "return 'x' * 3000", "result_size", SMALL.override(result_bytes=1000))


async def test_oversized_step_result(shared_backend: RestrictedBackend) -> None:
    source = "return step.do('big', lambda: ['x' * 100] * 100)"
    await expect_limit(shared_backend, source, "result_size", SMALL.override(result_bytes=1000))


async def test_host_call_count(shared_backend: RestrictedBackend) -> None:
    source = "i = 0\nwhile True:\n    i += 1\n    try:\n        step.do('s' + str(i), lambda: 1)\n    except BaseException:\n        pass"
    await expect_limit(shared_backend, source, "host_calls", SMALL.override(host_calls=50))


async def test_range_is_bounded(shared_backend: RestrictedBackend) -> None:
    sandbox = await shared_backend.load(make_bundle("return len(range(10 ** 9))"), limits=SMALL)
    with pytest.raises(TenantError, match="range of 1000000000 items"):
        await sandbox.invoke(event(), FakeHost())


async def test_wall_clock_with_a_blocked_host_call(backend: RestrictedBackend) -> None:
    host = FakeHost()
    limits = SMALL.override(wall_seconds=0.5)
    sandbox = await backend.load(make_bundle("return 1"), limits=limits)
    # A guest that waits on the host forever: the host bridge blocks until released.
    source = "from tenantflow import env\nreturn env.test.block()"
    blocking = await backend.load(make_bundle(source), limits=limits)

    class BlockingHost(FakeHost):
        def call(self, name: str, args: object) -> object:
            if name == "env.test.block":
                return super().call("test.block", args)
            return super().call(name, args)

    blocking_host = BlockingHost()
    started = asyncio.get_running_loop().time()
    with pytest.raises(LimitExceededError) as info:
        await blocking.invoke(event(), blocking_host)
    assert info.value.limit == "wall"
    assert asyncio.get_running_loop().time() - started < 3
    blocking_host.block.set()
    assert (await sandbox.invoke(event(), host)).output == 1
    await backend.wait_ready()
    assert backend.pool_snapshot()["replaced"] >= 1


async def test_wall_clock_of_a_sleeping_guest(backend: RestrictedBackend) -> None:
    # time.sleep is not offered; a busy guest below its CPU budget still meets the wall clock.
    limits = SMALL.override(wall_seconds=0.3, cpu_seconds=20.0)
    sandbox = await backend.load(make_bundle("while True:\n    pass"), limits=limits)
    with pytest.raises(LimitExceededError) as info:
        await sandbox.invoke(event(), FakeHost())
    assert info.value.limit == "wall"
