"""The shared tenant SDK inside restricted workers: steps, imports, determinism, JSON, errors."""

from __future__ import annotations

import pytest

from sandbox import Bundle, HostCallError, LoadError, TenantError
from sandbox._restricted import RestrictedBackend
from sandbox._restricted._modules import ALLOWLIST

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def run_once(backend: RestrictedBackend, source: str, host: FakeHost | None = None, **extra: str):  # type: ignore[no-untyped-def]
    sandbox = await backend.load(make_bundle(source, extra=extra or None), limits=FAST_LIMITS)
    return await sandbox.invoke(event({"n": 20}), host or FakeHost())


async def test_step_call_and_decorator_forms_with_context(shared_backend: RestrictedBackend) -> None:
    source = """
def run(event, step):
    a = step.do('a', lambda: event['payload']['n'] + 1)
    b = step.do('b', lambda ctx: ctx['step'])

    @step.do('c')
    def c():
        return a * 2

    return {'a': a, 'b': b, 'c': c(), 'event_keys': sorted(event)}
"""
    host = FakeHost()
    result = await run_once(shared_backend, source, host)
    assert result.output == {
        "a": 21,
        "b": {"name": "b", "count": 1},
        "c": 42,
        "event_keys": ["instanceId", "payload", "timestamp", "workflowName"],
    }
    assert [name for name, _ in host.calls] == ["step.do", "step.commit"] * 3
    assert result.host_calls == 6


async def test_cached_steps_are_not_run_again(shared_backend: RestrictedBackend) -> None:
    source = "return step.do('a', lambda: event['payload'])"
    host = FakeHost()
    sandbox = await shared_backend.load(make_bundle(source), limits=FAST_LIMITS)
    assert (await sandbox.invoke(event(1), host)).output == 1
    host.replay()
    assert (await sandbox.invoke(event(2), host)).output == 1  # memoized


async def test_suspension_is_reported_by_the_host(shared_backend: RestrictedBackend) -> None:
    source = "step.sleep('nap', 1000)\nreturn 'after'"
    host = FakeHost()
    sandbox = await shared_backend.load(make_bundle(source), limits=FAST_LIMITS)
    first = await sandbox.invoke(event(), host)
    assert first.suspended and first.output is None
    host.replay()
    assert (await sandbox.invoke(event(), host)).output == "after"


async def test_suspension_cannot_be_swallowed(shared_backend: RestrictedBackend) -> None:
    source = "try:\n    step.sleep('nap', 1000)\nexcept BaseException:\n    return 'swallowed'\nreturn 'no'"
    result = await run_once(shared_backend, source)
    assert result.suspended and result.output is None


async def test_multi_file_bundles(shared_backend: RestrictedBackend) -> None:
    source = "import helpers\nfrom pkg.tools import triple\nimport pkg.tools\nreturn [helpers.double(2), triple(2), pkg.tools.triple(1)]"
    result = await run_once(
        shared_backend,
        source,
        **{
            "helpers.py": "def double(x):\n    return 2 * x\n",
            "pkg/__init__.py": "",
            "pkg/tools.py": "from helpers import double\ndef triple(x):\n    return double(x) + x\n",
        },
    )
    assert result.output == [4, 6, 3]


async def test_packages_and_relative_imports(shared_backend: RestrictedBackend) -> None:
    source = "from pkg import util\nfrom pkg.util import double\nreturn [util.double(2), double(3)]"
    files = {
        "pkg/__init__.py": "from .consts import TWO as _unused_is_private\n",
        "pkg/util.py": "from . import consts\nfrom .consts import TWO\ndef double(x):\n    return x * consts.TWO * TWO // 2\n",
        "pkg/consts.py": "TWO = 2\n",
    }
    with pytest.raises(LoadError, match="invalid variable name"):
        await run_once(shared_backend, source, **files)
    files["pkg/__init__.py"] = ""
    assert (await run_once(shared_backend, source, **files)).output == [4, 6]
    with pytest.raises(TenantError, match="beyond the bundle's top-level package"):
        await run_once(
            shared_backend,
            "import pkg.mod\nreturn 1",
            **{"pkg/__init__.py": "", "pkg/mod.py": "from .. import x\n"},
        )
    with pytest.raises(TenantError, match="no known parent package"):
        await run_once(shared_backend, "from . import helpers\nreturn 1", **{"helpers.py": ""})


async def test_host_errors_arrive_as_builtin_exception_classes(shared_backend: RestrictedBackend) -> None:
    source = "from tenantflow import env\ntry:\n    env.kv.get(key='a')\nexcept PermissionError:\n    return 'denied'"

    class Denying(FakeHost):
        def call(self, name: str, args: object) -> object:
            raise HostCallError("not granted", type_name="PermissionError")

    assert (await run_once(shared_backend, source, Denying())).output == "denied"


@pytest.mark.parametrize(
    "module", [*sorted(m for m in ALLOWLIST if m != "__future__"), "random", "time", "tenantflow"]
)
async def test_stdlib_modules_are_importable(shared_backend: RestrictedBackend, module: str) -> None:
    result = await run_once(shared_backend, f"import {module}\nreturn 1")
    assert result.output == 1


async def test_useful_stdlib(shared_backend: RestrictedBackend) -> None:
    source = """
import json, re, math, datetime, decimal, itertools, collections, functools, string, base64, hashlib
import uuid, statistics, textwrap, zlib
from urllib.parse import quote
from dataclasses import dataclass, asdict
from enum import Enum

@dataclass
class Point:
    x: int
    y: int = 0

class Color(Enum):
    RED = 1

def run(event, step):
    return [
        json.loads(json.dumps({'a': [1]})), re.findall(r'\\d', 'a1b2'), math.floor(2.5),
        datetime.date(2020, 1, 2).isoformat(), str(decimal.Decimal('1.10') + 1),
        list(itertools.chain([1], [2])), collections.Counter('aab')['a'],
        functools.reduce(lambda a, b: a + b, [1, 2, 3]), string.ascii_lowercase[:3],
        base64.b64encode(b'hi').decode(), hashlib.sha256(b'x').hexdigest()[:8],
        str(uuid.uuid5(uuid.NAMESPACE_DNS, 'x'))[:8], statistics.mean([1, 2, 3]),
        textwrap.shorten('hello world', 8), zlib.crc32(b'x'), quote('a b'),
        asdict(Point(1)), Color.RED.name,
    ]
"""
    result = await run_once(shared_backend, source)
    assert result.output == [
        {"a": [1]},
        ["1", "2"],
        2,
        "2020-01-02",
        "2.10",
        [1, 2],
        2,
        6,
        "abc",
        "aGk=",
        "2d711642",
        "05b16a01",
        2,
        "[...]",
        2363233923,
        "a%20b",
        {"x": 1, "y": 0},
        "RED",
    ]


async def test_non_json_results_are_tenant_errors(shared_backend: RestrictedBackend) -> None:
    for value in ("(1, 2)", "{1}", "b'x'", "lambda: 1", "{1: 'a'}"):
        with pytest.raises(TenantError, match="JSON"):
            await run_once(shared_backend, f"return {value}")
    with pytest.raises(TenantError, match="JSON"):
        await run_once(shared_backend, "return step.do('s', lambda: (1, 2))")


async def test_tenant_errors_show_tenant_frames_only(shared_backend: RestrictedBackend) -> None:
    source = "import helpers\nreturn helpers.boom()"
    with pytest.raises(TenantError) as info:
        await run_once(
            shared_backend, source, **{"helpers.py": "def boom():\n    raise ValueError('bad input')\n"}
        )
    error = info.value
    assert (error.type_name, error.message) == ("ValueError", "bad input")
    assert 'File "main.py", line 3, in run' in error.traceback
    assert 'File "helpers.py", line 2, in boom' in error.traceback
    assert "/work" not in error.traceback and "sandbox" not in error.traceback


async def test_tenant_exception_classes_keep_their_names(shared_backend: RestrictedBackend) -> None:
    source = "class PaymentDeclined(Exception):\n    pass\n\ndef run(event, step):\n    raise PaymentDeclined('card')\n"
    with pytest.raises(TenantError) as info:
        await run_once(shared_backend, source)
    assert info.value.type_name == "PaymentDeclined"


async def test_load_errors_name_the_file_and_line(shared_backend: RestrictedBackend) -> None:
    with pytest.raises(LoadError) as info:
        await shared_backend.load(
            make_bundle(
                "import helpers\ndef run(event, step):\n    return 1\n",
                extra={"helpers.py": "x = 1\nraise KeyError('k')\n"},
            ),
            limits=FAST_LIMITS,
        )
    assert (info.value.file, info.value.line) == ("helpers.py", 2)
    assert "KeyError" in info.value.message
    with pytest.raises(LoadError, match="run"):
        await shared_backend.load(Bundle("sha256:norun", {"main.py": b"x = 1\n"}), limits=FAST_LIMITS)
    with pytest.raises(LoadError) as info:
        await shared_backend.load(
            make_bundle("import os\ndef run(event, step):\n    return 1\n"), limits=FAST_LIMITS
        )
    assert (info.value.file, info.value.line) == ("main.py", 1)


async def test_host_errors_and_bindings(shared_backend: RestrictedBackend) -> None:
    source = """
from tenantflow import env, NonRetryableError
def run(event, step):
    try:
        env.kv.get(key='a')
    except Exception as exc:
        return [repr(exc), issubclass(NonRetryableError, Exception)]
"""
    result = await run_once(shared_backend, source)
    assert result.output == ["BindingNotGranted(\"binding 'kv' is not granted\")", True]


async def test_host_bridge_bug_is_a_crash_not_a_tenant_error(shared_backend: RestrictedBackend) -> None:
    from sandbox import SandboxCrashError

    class Broken(FakeHost):
        def call(self, name: str, args: object) -> object:
            raise RuntimeError("/secret/host/path")

    with pytest.raises(SandboxCrashError) as info:
        await run_once(shared_backend, "return step.do('a', lambda: 1)", Broken())
    assert "/secret" not in str(info.value)
    await shared_backend.wait_ready()

    class Refusing(FakeHost):
        def call(self, name: str, args: object) -> object:
            raise HostCallError("nope", type_name="Refused")

    with pytest.raises(TenantError, match="Refused: nope"):
        await run_once(shared_backend, "return step.do('a', lambda: 1)", Refusing())


async def test_print_is_captured(shared_backend: RestrictedBackend) -> None:
    result = await run_once(shared_backend, "print('a', 1)\nprint('b', end='')\nreturn None")
    assert result.stdout == "a 1\nb" and not result.output_truncated


DETERMINISM = """
import time, random, uuid, datetime
def run(event, step):
    body = [time.time(), random.random(), str(uuid.uuid4()), list({'alpha', 'beta', 'gamma', 'delta'}),
            datetime.datetime.now().isoformat()]
    step.sleep('nap', 1000)
    return body
"""


async def test_body_is_deterministic_across_replay_and_workers() -> None:
    """time, random, uuid4, set order and datetime.now read in the body replay identically."""
    host = FakeHost()
    async with RestrictedBackend(pool_size=1) as one, RestrictedBackend(pool_size=1) as two:
        first = await one.load(make_bundle(DETERMINISM), limits=FAST_LIMITS)
        suspended = await first.invoke(event(), host)
        assert suspended.suspended
        host.replay()
        host.suspend_sleeps = False
        second = await two.load(make_bundle(DETERMINISM), limits=FAST_LIMITS)
        replayed = (await second.invoke(event(), host)).output
        host.replay()
        again = (await first.invoke(event(), host)).output
        assert replayed == again
        assert replayed[0] == 1_700_000_000.0
        assert replayed[4].startswith("2023-11-14")
        assert suspended.stats["worker_pid"] != (await second.invoke(event(), host)).stats["worker_pid"]
