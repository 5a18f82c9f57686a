"""The in-process test backend: same SDK and protocol, private modules, never a tenant backend."""

from __future__ import annotations

import sys
import time

import pytest

import sandbox
from sandbox import LimitExceededError, Limits, SandboxClosedError

from .helpers import FakeJournal, bundle, invoke, run_body


def test_it_is_not_selectable_by_tenants() -> None:
    assert "inprocess" not in sandbox.TENANT_BACKENDS
    assert isinstance(sandbox.create_backend("inprocess"), sandbox.SandboxBackend)


async def test_tenant_modules_are_private_to_each_sandbox(inprocess_backend: sandbox.SandboxBackend) -> None:
    main = "import helpers\ndef run(event, step):\n    return helpers.NAME\n"
    a = await inprocess_backend.load(bundle(main, "sha256:a", helpers="NAME = 'a'"), limits=Limits())
    b = await inprocess_backend.load(bundle(main, "sha256:b", helpers="NAME = 'b'"), limits=Limits())
    assert (await invoke(a, FakeJournal())).output == "a"
    assert (await invoke(b, FakeJournal())).output == "b"
    assert "helpers" not in sys.modules and "main" not in sys.modules
    await a.aclose()
    await b.aclose()


async def test_only_the_tenants_prints_are_captured(
    inprocess_backend: sandbox.SandboxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    sb = await inprocess_backend.load(run_body("print('from tenant')\nreturn 1"), limits=Limits())
    print("from host")
    result = await invoke(sb, FakeJournal())
    assert result.stdout == "from tenant\n"
    assert "from tenant" not in capsys.readouterr().out
    await sb.aclose()


async def test_the_host_clock_stays_real_during_an_invocation(
    inprocess_backend: sandbox.SandboxBackend,
) -> None:
    seen: list[float] = []

    class Clocked(FakeJournal):
        def call(self, name: str, args: object) -> object:
            seen.append(time.time())
            return super().call(name, args)

    sb = await inprocess_backend.load(
        run_body("import time\nstep.do('a', lambda: 1)\nreturn time.time()"), limits=Limits()
    )
    result = await invoke(sb, Clocked())
    assert result.output == 1_700_000_001.0  # the tenant's body sees the journal's clock
    assert seen and all(abs(t - time.time()) < 60 for t in seen)  # the host sees real time
    await sb.aclose()


async def test_the_wall_limit_abandons_the_sandbox(inprocess_backend: sandbox.SandboxBackend) -> None:
    sb = await inprocess_backend.load(
        run_body("import time\ntime.sleep(0.4)\nreturn 1"), limits=Limits(wall_seconds=0.1)
    )
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal())
    assert info.value.limit == "wall"
    assert not sb.alive
    with pytest.raises(SandboxClosedError):
        await invoke(sb, FakeJournal())
