"""The wasm backend: the guest's stdlib, hard limits, isolation from the host, traps, concurrency.

Every limit test also checks that the host stays up and another tenant's warm sandbox still works.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

import sandbox
from sandbox import LimitExceededError, Limits, SandboxClosedError, TenantError

from .helpers import FakeJournal, invoke, run_body

STDLIB = [
    "json",
    "re",
    "datetime",
    "decimal",
    "dataclasses",
    "math",
    "random",
    "itertools",
    "collections",
    "functools",
    "typing",
    "enum",
    "uuid",
    "hashlib",
    "base64",
    "string",
    "textwrap",
    "statistics",
    "urllib.parse",
    "zlib",
    "fractions",
    "heapq",
    "bisect",
    "copy",
    "operator",
    "struct",
    "binascii",
    "calendar",
    "zoneinfo",
    "csv",
    "io",
    "hmac",
    "secrets",
    "difflib",
    "pprint",
    "ipaddress",
    "graphlib",
    "html",
]


@pytest.fixture
async def wasm(wasm_backend: sandbox.SandboxBackend) -> Any:
    opened: list[sandbox.Sandbox] = []

    async def _load(b: sandbox.Bundle, **limits: Any) -> sandbox.Sandbox:
        sb = await wasm_backend.load(b, limits=Limits().override(**limits))
        opened.append(sb)
        return sb

    yield _load
    for sb in opened:
        await sb.aclose()


async def test_the_useful_stdlib_is_importable_in_the_guest(wasm: Any) -> None:
    sb = await wasm(
        run_body(
            f"""
            import importlib
            names = {STDLIB!r}
            mods = [importlib.import_module(n).__name__ for n in names]
            import hashlib, zlib, decimal, datetime, re, json, statistics
            checks = [
                hashlib.sha256(b"x").hexdigest()[:8],
                len(zlib.compress(b"aaaa")) > 0,
                str(decimal.Decimal("1.10") + decimal.Decimal("2.20")),
                datetime.date(2024, 1, 31).isoformat(),
                re.sub(r"\\d", "#", "a1b2"),
                statistics.mean([1, 2, 3]),
            ]
            return {{"mods": mods, "checks": checks}}
            """
        )
    )
    out = (await invoke(sb, FakeJournal())).output
    assert out["mods"] == STDLIB
    assert out["checks"] == ["2d711642", True, "3.30", "2024-01-31", "a#b#", 2]


# ---------------------------------------------------------------------------------- limits


async def _limit(wasm: Any, warm_other: Any, body: str, limit: str, **limits: Any) -> LimitExceededError:
    sb = await wasm(run_body(body), **limits)
    started = time.monotonic()
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal())
    assert time.monotonic() - started < 10
    assert info.value.limit == limit, info.value
    await warm_other()
    return info.value


async def test_cpu_loop_is_stopped(wasm: Any, warm_other: Any) -> None:
    error = await _limit(wasm, warm_other, "while True:\n    pass", "cpu", cpu_seconds=0.2)
    assert "CPU" in str(error)


async def test_cpu_loop_that_catches_everything_is_still_stopped(wasm: Any, warm_other: Any) -> None:
    body = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    await _limit(wasm, warm_other, body, "cpu", cpu_seconds=0.2)


async def test_cpu_bomb_inside_a_step_callback(wasm: Any, warm_other: Any) -> None:
    body = "def bomb():\n    while True:\n        pass\nreturn step.do('bomb', bomb)"
    await _limit(wasm, warm_other, body, "cpu", cpu_seconds=0.2)


async def test_cpu_bomb_at_import_time_fails_the_load(wasm_backend: Any) -> None:
    from sandbox import Bundle

    with pytest.raises(LimitExceededError, match="cpu"):
        await wasm_backend.load(
            Bundle("sha256:slow", {"main.py": b"while True:\n    pass\n"}), limits=Limits(cpu_seconds=0.2)
        )


async def test_wall_limit_counts_time_spent_in_host_calls(wasm: Any, warm_other: Any) -> None:
    class Slow(FakeJournal):
        def call(self, name: str, args: Any) -> Any:
            time.sleep(0.05)
            return super().call(name, args)

    sb = await wasm(run_body("for i in range(100):\n    step.do(f's{i}', lambda: i)"), wall_seconds=0.3)
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, Slow())
    assert info.value.limit == "wall"
    await warm_other()


async def test_host_call_time_is_not_guest_cpu(wasm: Any) -> None:
    class Slow(FakeJournal):
        def call(self, name: str, args: Any) -> Any:
            time.sleep(0.03)
            return super().call(name, args)

    sb = await wasm(
        run_body("for i in range(8):\n    step.do(f's{i}', lambda: i)\nreturn 'ok'"), cpu_seconds=0.1
    )
    assert (await invoke(sb, Slow())).output == "ok"


@pytest.mark.parametrize(
    "body",
    [
        "return len('a' * 10**9)",
        "return len(bytearray(300 * 1024 * 1024))",
        "x = []\nwhile True:\n    x.append('y' * 100000)",
        "try:\n    'a' * 10**9\nexcept MemoryError:\n    pass\nreturn 'caught it'",
        "try:\n    step.do('hog', lambda: len('a' * 10**9))\nexcept BaseException:\n    pass\nreturn 'caught it'",
    ],
    ids=["huge-str", "huge-bytearray", "unbounded-list", "caught-by-tenant", "in-step-caught"],
)
async def test_memory_bombs_hit_the_memory_limit(wasm: Any, warm_other: Any, body: str) -> None:
    sb = await wasm(run_body(body), memory_bytes=64 * 1024 * 1024)
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, FakeJournal())
    assert info.value.limit == "memory"
    assert not sb.alive  # its memory is at the cap: discarded
    with pytest.raises(SandboxClosedError):
        await invoke(sb, FakeJournal())
    await warm_other()


async def test_a_memory_cap_below_the_runner_baseline_is_refused(wasm_backend: Any) -> None:
    with pytest.raises(LimitExceededError, match="memory"):
        await wasm_backend.load(run_body("return 1"), limits=Limits(memory_bytes=1024 * 1024))


@pytest.mark.parametrize(
    "body",
    [
        "def f(n):\n    return f(n + 1)\nreturn f(0)",
        "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nreturn f(0)",
        "x = []\nfor _ in range(10**6):\n    x = [x]\nreturn repr(x)[:10]",
        "import json\nreturn json.loads('[' * 100000 + ']' * 100000)",
    ],
    ids=["python", "raised-limit", "nested-repr", "nested-json"],
)
async def test_deep_recursion_is_contained(wasm: Any, warm_other: Any, body: str) -> None:
    sb = await wasm(run_body(body))
    with pytest.raises((LimitExceededError, TenantError)) as info:
        await invoke(sb, FakeJournal())
    if isinstance(info.value, LimitExceededError):
        assert info.value.limit == "recursion"
        assert not sb.alive
    else:
        assert info.value.type_name in ("RecursionError", "MemoryError")
    await warm_other()


async def test_output_flood_is_truncated(wasm: Any, warm_other: Any) -> None:
    sb = await wasm(
        run_body(
            "import sys\nfor i in range(200000):\n    print('z' * 50)\n    sys.stderr.write('e')\nreturn 'ok'"
        )
    )
    result = await invoke(sb, FakeJournal())
    assert result.output == "ok" and result.output_truncated
    assert len(result.stdout.encode()) <= Limits().output_bytes + 100
    await warm_other()


async def test_hostile_return_values_are_refused(wasm: Any, warm_other: Any) -> None:
    for expr in ("type('D', (dict,), {})()", "(x for x in [])", "print", "object()", "[[[]]] * 10 ** 7"):
        sb = await wasm(run_body(f"return {expr}"))
        with pytest.raises((TenantError, LimitExceededError)):
            await invoke(sb, FakeJournal())
        await warm_other()


# ---------------------------------------------------------------------------------- isolation


async def test_no_files_env_network_threads_or_subprocesses(wasm: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("TENANTFLOW_CANARY", "canary-9f2b")
    sb = await wasm(
        run_body(
            """
            import os
            seen = {"environ": dict(os.environ), "getenv": os.getenv("TENANTFLOW_CANARY")}
            for what, attempt in [
                ("open", lambda: open("/etc/passwd").read()),
                ("listdir", lambda: os.listdir("/")),
                ("cwd-listdir", lambda: os.listdir(".")),
                ("socket", lambda: __import__("socket")),
                ("_socket", lambda: __import__("_socket").socket()),
                ("threading", lambda: __import__("threading").Thread(target=print).start()),
                ("_thread", lambda: __import__("_thread").start_new_thread(print, ())),
                ("subprocess", lambda: __import__("subprocess")),
                ("ctypes", lambda: __import__("ctypes")),
                ("system", lambda: os.system("id")),
                ("fork", lambda: os.fork()),
            ]:
                try:
                    seen[what] = repr(attempt())[:200]
                except BaseException as exc:
                    seen[what] = "denied: " + type(exc).__name__
            return seen
            """
        )
    )
    seen = (await invoke(sb, FakeJournal())).output
    assert seen["environ"] == {} and seen["getenv"] is None
    for what in (
        "open",
        "listdir",
        "cwd-listdir",
        "socket",
        "_socket",
        "threading",
        "_thread",
        "subprocess",
        "ctypes",
        "system",
        "fork",
    ):
        assert seen[what].startswith("denied"), (what, seen[what])
    assert "canary" not in repr(seen)


async def test_the_guest_sees_its_own_objects_only(wasm: Any) -> None:
    sb = await wasm(
        run_body(
            """
            import gc
            names = sorted({type(o).__name__ for o in gc.get_objects()})
            return {"step": repr(step), "n": len(names), "has_store": "Store" in names}
            """
        )
    )
    out = (await invoke(sb, FakeJournal())).output
    assert out == {"step": "<step>", "n": out["n"], "has_store": False}


# ---------------------------------------------------------------------------------- lifecycle


async def test_a_trap_discards_the_sandbox(wasm: Any) -> None:
    sb = await wasm(run_body("while True:\n    pass"), cpu_seconds=0.1)
    with pytest.raises(LimitExceededError):
        await invoke(sb, FakeJournal())
    assert not sb.alive
    with pytest.raises(SandboxClosedError):
        await invoke(sb, FakeJournal())


async def test_sandboxes_run_concurrently_off_the_event_loop(wasm: Any) -> None:
    body = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.3:\n    pass\nreturn event['payload']"
    boxes = [await wasm(run_body(body, digest=f"sha256:{i}")) for i in range(2)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    started = time.monotonic()
    results = await asyncio.gather(*(invoke(sb, FakeJournal(), i) for i, sb in enumerate(boxes)))
    elapsed = time.monotonic() - started
    tick_task.cancel()
    assert [r.output for r in results] == [0, 1]
    assert ticks >= 10  # the event loop kept running while guests ran
    assert elapsed < 0.55  # the two 0.3 s guests overlapped


async def test_one_sandbox_serves_one_invocation_at_a_time(wasm: Any) -> None:
    sb = await wasm(
        run_body(
            "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.05:\n    pass\nreturn event['payload']"
        )
    )
    results = await asyncio.gather(*(sb.invoke(FakeJournal().event(i), FakeJournal()) for i in range(4)))
    assert [r.output for r in results] == [0, 1, 2, 3]


async def test_backend_version_and_name(wasm_backend: Any) -> None:
    assert wasm_backend.name == "wasm"
    assert "wasmtime50.0.1" in wasm_backend.version
    assert isinstance(wasm_backend, sandbox.SandboxBackend)


def test_runner_cache_is_not_in_the_repo() -> None:
    from sandbox._wasm import _build

    assert os.path.commonpath([_build.cache_dir(), _build.GUEST_DIR]) != str(_build.GUEST_DIR)


async def test_datetime_now_is_the_journal_time_in_the_body_and_real_in_callbacks(wasm: Any) -> None:
    sb = await wasm(
        run_body(
            """
            import datetime
            body = datetime.datetime.now(datetime.timezone.utc).timestamp()
            inside = step.do("now", lambda: datetime.datetime.now().timestamp())
            utc = datetime.datetime.utcnow().isoformat()
            return [body, inside, utc, isinstance(datetime.datetime.now(), datetime.date)]
            """
        )
    )
    body, inside, utc, is_date = (await invoke(sb, FakeJournal())).output
    assert body == 1_700_000_000.0
    assert inside > 1.7e9 and inside != body
    assert utc == "2023-11-14T22:13:21" and is_date


async def test_a_hung_host_call_hits_the_wall_backstop(wasm: Any, warm_other: Any) -> None:
    class Hung(FakeJournal):
        def call(self, name: str, args: Any) -> Any:
            time.sleep(1.5)
            return super().call(name, args)

    sb = await wasm(run_body("return step.do('a', lambda: 1)"), wall_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(LimitExceededError) as info:
        await invoke(sb, Hung())
    assert info.value.limit == "wall"
    assert time.monotonic() - started < 1.45  # the backstop did not wait for the bridge
    assert not sb.alive
    await warm_other()
    await asyncio.sleep(0.3)  # the worker comes back, unwinds the guest and closes the Store


async def test_cancelling_an_invocation_abandons_the_sandbox(wasm: Any) -> None:
    sb = await wasm(
        run_body("import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.3:\n    pass\nreturn 1")
    )
    task = asyncio.create_task(invoke(sb, FakeJournal()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sb.alive
    await asyncio.sleep(0.4)
    await sb.aclose()


async def test_without_spare_instances(tmp_path: Any) -> None:
    from sandbox._wasm import WasmBackend

    backend = WasmBackend(spare_instances=0)
    try:
        sb = await backend.load(run_body("return 'no spares'"), limits=Limits())
        assert (await invoke(sb, FakeJournal())).output == "no spares"
        await sb.aclose()
    finally:
        await backend.aclose()
        await backend.aclose()


def _pss_kib() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))


async def test_sandboxes_share_the_runner_image(wasm_backend: Any) -> None:
    """Guards copy-on-write: a change to the runner that broke it would cost ~27 MiB per sandbox."""
    b = run_body("return 1")
    derived = await wasm_backend.prepare(b)
    first = await wasm_backend.load(b, limits=Limits(), derived=derived)
    before = _pss_kib()
    boxes = [await wasm_backend.load(b, limits=Limits(), derived=derived) for _ in range(20)]
    for sb in boxes:
        await invoke(sb, FakeJournal())
    per_sandbox_mib = (_pss_kib() - before) / 20 / 1024
    for sb in [first, *boxes]:
        await sb.aclose()
    assert per_sandbox_mib < 6, per_sandbox_mib


@pytest.mark.parametrize(
    "forged",
    [
        "'[' * 100000 + ']' * 100000",
        "'not json'",
        '\'{"status": "suspended", "stdout": ""}\'',
        '\'{"status": "ok", "output": "\' + \'x\' * (2 * 1024 * 1024) + \'"}\'',
        '\'{"status": "limit", "limit": "cpu"}\'',
    ],
    ids=["deep", "garbage", "fake-suspension", "huge-output", "unknown-limit"],
)
async def test_a_forged_outcome_never_becomes_a_host_error(wasm: Any, warm_other: Any, forged: str) -> None:
    """The guest can rewrite its own runner; the host treats whatever comes back as hostile data."""
    sb = await wasm(
        run_body(
            f"""
            import _tenantflow_runner as runner
            runner.WitWorld.invoke = lambda self, event: {forged}
            return 1
            """
        )
    )
    assert (await invoke(sb, FakeJournal())).output == 1  # the next invocation is forged
    with pytest.raises(sandbox.SandboxError):
        await invoke(sb, FakeJournal())
    await warm_other()


async def test_forged_host_call_arguments_are_refused(wasm: Any) -> None:
    sb = await wasm(
        run_body(
            """
            import wit_world.imports.host as host
            out = []
            for args in ["not json", "[" * 100000 + "]" * 100000]:
                try:
                    host.call("step.do", args)
                except Exception as exc:
                    out.append(str(exc.value))
            return out
            """
        )
    )
    out = (await invoke(sb, FakeJournal())).output
    assert out == ["EValueError\nmalformed host call arguments"] * 2


async def test_a_corrupt_derived_form_is_recompiled(wasm_backend: Any) -> None:
    b = run_body("return 'recompiled'")
    derived = await wasm_backend.prepare(b)
    header, _, payload = derived.partition(b"\n")
    for corrupt in (header + b"\n" + payload[:-20], header + b"\nnot even base64", header + b"\n"):
        async with await wasm_backend.load(b, limits=Limits(), derived=corrupt) as sb:
            assert (await invoke(sb, FakeJournal())).output == "recompiled"


async def test_a_closed_backend_refuses_work(tmp_path: Any) -> None:
    from sandbox._wasm import WasmBackend

    backend = WasmBackend(spare_instances=0)
    sb = await backend.load(run_body("return 1"), limits=Limits())
    await backend.aclose()
    with pytest.raises(SandboxClosedError):
        await invoke(sb, FakeJournal())
    with pytest.raises((SandboxClosedError, sandbox.SandboxError)):
        await backend.load(run_body("return 1"), limits=Limits())
    await sb.aclose()
