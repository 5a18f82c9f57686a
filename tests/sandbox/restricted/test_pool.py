"""The worker pool: process hygiene, crash and replacement, affinity, recycling, queueing."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from sandbox import SandboxClosedError, SandboxCrashError, create_backend
from sandbox._restricted import PoolBusyError, PoolConfig, RestrictedBackend
from tests.sandbox.attacks import CANARY, CANARY_ENV

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")


def worker_pids(backend: RestrictedBackend) -> list[int]:
    return [w["pid"] for w in backend.pool_snapshot()["workers"]]


async def test_registry_creates_this_backend() -> None:
    backend = create_backend("restricted", pool_size=1)
    assert isinstance(backend, RestrictedBackend)
    assert backend.name == "restricted"
    assert backend.config.size == 1
    await backend.aclose()


async def test_default_pool_size_is_min_of_four_and_cpus() -> None:
    assert PoolConfig().size == max(1, min(4, os.cpu_count() or 1))
    with pytest.raises(ValueError, match=r"PoolConfig\.size"):
        PoolConfig(size=0)


async def test_workers_have_no_parent_environment_and_hard_limits(shared_backend: RestrictedBackend) -> None:
    assert os.environ[CANARY_ENV] == CANARY
    for pid in worker_pids(shared_backend):
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert CANARY.encode() not in environ
        assert environ.split(b"\0") in ([b"PYTHONHASHSEED=0", b""], [b"PYTHONHASHSEED=0"])
        assert os.getpgid(pid) == pid != os.getpgid(0)  # own process group (start_new_session)
        limits = Path(f"/proc/{pid}/limits").read_text()
        rows = {line[:26].strip(): line[26:].split() for line in limits.splitlines()[1:]}
        assert rows["Max core file size"][:2] == ["0", "0"]
        assert rows["Max file size"][:2] == ["0", "0"]
        assert int(rows["Max open files"][1]) <= 16
        assert rows["Max address space"][1] != "unlimited"
        assert rows["Max cpu time"][1] != "unlimited"
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-c" in cmdline  # a fresh interpreter, not a fork of the parent


async def test_canary_is_invisible_to_tenant_code(shared_backend: RestrictedBackend) -> None:
    # Even the SDK's own view: the worker cleared os.environ at startup.
    sandbox = await shared_backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
    result = await sandbox.invoke(event(), FakeHost())
    assert result.output == 1 and CANARY not in result.stdout


async def test_sigkill_mid_invocation_is_a_crash_and_other_invocations_complete(
    backend: RestrictedBackend,
) -> None:
    host = FakeHost()
    hang = await backend.load(
        make_bundle("from tenantflow import env\nreturn env.test.block()"), limits=FAST_LIMITS
    )
    steady = await backend.load(make_bundle("return step.do('a', lambda: 41) + 1"), limits=FAST_LIMITS)

    class BlockingHost(FakeHost):
        def call(self, name: str, args: object) -> object:
            if name == "env.test.block":
                return super().call("test.block", args)
            return super().call(name, args)

    blocking_host = BlockingHost()
    hung = asyncio.create_task(hang.invoke(event(), blocking_host))
    await asyncio.to_thread(blocking_host.blocked.wait, 10)
    busy = [w for w in backend.pool_snapshot()["workers"] if not w["idle"]]
    assert len(busy) == 1
    other = asyncio.create_task(steady.invoke(event(), host))
    os.kill(busy[0]["pid"], signal.SIGKILL)
    blocking_host.block.set()
    with pytest.raises(SandboxCrashError, match="SIGKILL"):
        await hung
    assert (await other).output == 42
    assert not hang.alive and steady.alive
    await backend.wait_ready()
    snapshot = backend.pool_snapshot()
    assert snapshot["replaced"] >= 1 and len(snapshot["workers"]) == 2
    assert busy[0]["pid"] not in worker_pids(backend)
    again = await backend.load(make_bundle("return 'back'"), limits=FAST_LIMITS)
    assert (await again.invoke(event(), host)).output == "back"


async def test_idle_worker_death_is_replaced(backend: RestrictedBackend) -> None:
    victim = worker_pids(backend)[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if victim not in worker_pids(backend):
            break
    await backend.wait_ready()
    assert victim not in worker_pids(backend) and len(worker_pids(backend)) == 2


async def test_affinity_routes_to_the_warm_worker(backend: RestrictedBackend) -> None:
    first = await backend.load(make_bundle("return 'a'"), limits=FAST_LIMITS)
    second = await backend.load(make_bundle("return 'b'"), limits=FAST_LIMITS)
    ids_first = {(await first.invoke(event(), FakeHost())).stats["worker_id"] for _ in range(5)}
    ids_second = {(await second.invoke(event(), FakeHost())).stats["worker_id"] for _ in range(5)}
    assert len(ids_first) == 1 and len(ids_second) == 1
    warm = {w["id"]: w["warm"] for w in backend.pool_snapshot()["workers"]}
    assert first.digest in warm[int(next(iter(ids_first)))]


async def test_concurrent_invocations_use_several_workers(backend: RestrictedBackend) -> None:
    bundle = make_bundle("from tenantflow import env\nreturn env.test.block()")
    sandboxes = [await backend.load(bundle, limits=FAST_LIMITS) for _ in range(2)]

    class BlockingHost(FakeHost):
        def call(self, name: str, args: object) -> object:
            return super().call("test.block", args)

    host = BlockingHost()
    tasks = [asyncio.create_task(s.invoke(event(), host)) for s in sandboxes]
    await asyncio.sleep(0.2)
    assert all(not w["idle"] for w in backend.pool_snapshot()["workers"])
    host.block.set()
    results = await asyncio.gather(*tasks)
    assert len({r.stats["worker_id"] for r in results}) == 2


async def test_workers_recycle_after_n_invocations() -> None:
    async with RestrictedBackend(pool_size=1, recycle_after=3) as backend:
        sandbox = await backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
        pids = set()
        for _ in range(7):
            pids.add((await sandbox.invoke(event(), FakeHost())).stats["worker_pid"])
        assert len(pids) == 3
        assert backend.pool_snapshot()["recycled"] >= 2


async def test_full_queue_is_a_clear_error() -> None:
    async with RestrictedBackend(pool_size=1, max_queue=1) as backend:
        bundle = make_bundle("from tenantflow import env\nreturn env.test.block()")
        sandboxes = [await backend.load(bundle, limits=FAST_LIMITS) for _ in range(3)]

        class BlockingHost(FakeHost):
            def call(self, name: str, args: object) -> object:
                return super().call("test.block", args)

        host = BlockingHost()
        running = asyncio.create_task(sandboxes[0].invoke(event(), host))
        await asyncio.to_thread(host.blocked.wait, 10)
        waiting = asyncio.create_task(sandboxes[1].invoke(event(), host))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolBusyError, match="busy"):
            await sandboxes[2].invoke(event(), host)
        host.block.set()
        await running
        await waiting


async def test_aclose_is_idempotent_and_final() -> None:
    backend = RestrictedBackend(pool_size=1)
    sandbox = await backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
    pids = worker_pids(backend)
    await backend.aclose()
    await backend.aclose()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(SandboxClosedError):
        await sandbox.invoke(event(), FakeHost())
    await sandbox.aclose()
    await sandbox.aclose()
    assert not sandbox.alive


async def test_cancelled_invocation_kills_its_worker(backend: RestrictedBackend) -> None:
    sandbox = await backend.load(make_bundle("while True:\n    pass"), limits=FAST_LIMITS)
    task = asyncio.create_task(sandbox.invoke(event(), FakeHost()))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await backend.wait_ready()
    ok = await backend.load(make_bundle("return 2"), limits=FAST_LIMITS)
    assert (await ok.invoke(event(), FakeHost())).output == 2


async def test_workers_cannot_gain_privileges(shared_backend: RestrictedBackend) -> None:
    for pid in worker_pids(shared_backend):
        status = Path(f"/proc/{pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status


def _world_readable(path: str) -> bool:
    current = Path(path).resolve()
    for part in [current, *current.parents]:
        mode = part.stat().st_mode
        needed = 0o001 if part.is_dir() else 0o004
        if not mode & needed:
            return False
    return True


async def test_workers_can_run_as_an_unprivileged_user() -> None:
    import pwd
    import sys

    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user")
    root = Path(__file__).resolve().parents[3]
    if not (_world_readable(sys.executable) and _world_readable(str(root / "sandbox" / "__init__.py"))):
        pytest.skip("the Python installation is not readable by other users here")
    async with RestrictedBackend(pool_size=1, worker_user="nobody") as backend:
        await backend.wait_ready()
        pid = worker_pids(backend)[0]
        uid_line = next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        assert int(uid_line.split()[1]) == nobody.pw_uid
        handle = await backend.load(make_bundle("return 1"), limits=FAST_LIMITS)
        assert (await handle.invoke(event(), FakeHost())).output == 1


async def test_workers_dying_while_idle_never_fail_an_invocation(backend: RestrictedBackend) -> None:
    handle = await backend.load(make_bundle("return 'served'"), limits=FAST_LIMITS)
    for _ in range(3):
        for pid in worker_pids(backend):
            os.kill(pid, signal.SIGKILL)
        assert (await handle.invoke(event(), FakeHost())).output == "served"
