"""Policy details that the attack table does not show: shared state, proxies, builtins, compile."""

from __future__ import annotations

import collections
import types
from typing import Any

import pytest

from sandbox import Bundle, LoadError
from sandbox._restricted import RestrictedBackend
from sandbox._restricted._compile import compile_bundle, load_derived
from sandbox._restricted._modules import ALLOWLIST, Importer, ModuleProxy
from sandbox._restricted._policy import GUARD_NAME, compile_module, make_builtins

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")

POISON = """
import math, json, random, decimal, datetime, string, time, collections, functools

def attempt(fn):
    try:
        fn()
        return 'done'
    except Exception as exc:
        return 'refused'

def run(event, step):
    tried = {}
    tried['seed_body'] = attempt(lambda: random.seed(0))
    tried['seed_step'] = step.do('seed', lambda: attempt(lambda: random.seed(0)))
    tried['math_pi'] = attempt(lambda: setattr(math, 'pi', 3))
    tried['json_dumps'] = attempt(lambda: setattr(json, 'dumps', None))
    tried['decimal_prec'] = attempt(lambda: setattr(decimal.getcontext(), 'prec', 2))
    tried['decimal_setcontext'] = attempt(lambda: decimal.setcontext(decimal.Context(prec=2)))
    tried['datetime_now'] = attempt(lambda: setattr(datetime.datetime, 'now', None))
    tried['string_letters'] = attempt(lambda: setattr(string, 'ascii_letters', 'x'))
    tried['time_time'] = attempt(lambda: setattr(time, 'time', None))
    tried['counter_class'] = attempt(lambda: setattr(collections.Counter, 'most_common', None))
    tried['partial_class'] = attempt(lambda: setattr(functools.partial, 'x', 1))
    return tried
"""

VICTIM = """
import math, json, random, decimal, datetime, string, time, collections, functools

def run(event, step):
    return {
        'pi': math.pi,
        'dumps': json.dumps({'a': 1}),
        'third': str(decimal.Decimal(1) / decimal.Decimal(3)),
        'letters': string.ascii_letters,
        'step_random': step.do('r', lambda: [random.random() for i in range(3)]),
        'now_is_callable': callable(datetime.datetime.now),
        'most_common': [list(x) for x in collections.Counter('aab').most_common(1)],
    }
"""


async def test_no_shared_state_between_tenants_on_one_worker() -> None:
    async with RestrictedBackend(pool_size=1) as backend:
        attacker = await backend.load(make_bundle(POISON), limits=FAST_LIMITS)
        tried = (await attacker.invoke(event(), FakeHost())).output
        assert tried["seed_body"] == tried["seed_step"] == "done"  # their own generators
        assert tried["decimal_setcontext"] == "done"  # the context is reset per invocation
        refused = {k for k, v in tried.items() if v == "refused"}
        assert refused == {
            "math_pi",
            "json_dumps",
            "decimal_prec",
            "datetime_now",
            "string_letters",
            "time_time",
            "counter_class",
            "partial_class",
        }
        victim = await backend.load(make_bundle(VICTIM), limits=FAST_LIMITS)
        seen = (await victim.invoke(event(), FakeHost())).output
        assert seen["pi"] == 3.141592653589793
        assert seen["dumps"] == '{"a": 1}'
        assert seen["third"] == "0.3333333333333333333333333333"
        assert seen["letters"].startswith("abcdef")
        assert seen["now_is_callable"] and seen["most_common"] == [["a", 2]]
        import random

        seeded = random.Random(0)
        assert seen["step_random"] != [seeded.random() for _ in range(3)]
        assert {w["invocations"] for w in backend.pool_snapshot()["workers"]} == {2}


def _reachable(value: Any, depth: int, seen: set[int], found: list[str], path: str) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    assert not isinstance(value, types.ModuleType), f"real module reachable at {path}"
    assert not isinstance(value, types.FrameType | types.CodeType), path
    if isinstance(value, dict | list | set | bytearray | collections.deque):
        found.append(path)
        return
    if isinstance(value, str | bytes | int | float | complex | bool) or value is None:
        return
    for name in dir(value):
        if name.startswith("_"):
            continue
        try:
            attribute = getattr(value, name)
        except Exception:
            continue
        _reachable(attribute, depth - 1, seen, found, f"{path}.{name}")


async def test_proxies_expose_no_module_and_no_shared_mutable_container() -> None:
    importer = Importer({}, lambda name: None)
    found: list[str] = []
    for module in ALLOWLIST:
        proxy = importer(module, fromlist=("x",))
        assert isinstance(proxy, ModuleProxy)
        for name in ALLOWLIST[module].split():
            _reachable(getattr(proxy, name), 2, set(), found, f"{module}.{name}")
    assert found == []


async def test_proxies_are_per_tenant() -> None:
    first, second = Importer({}, lambda n: None), Importer({}, lambda n: None)
    assert first("json") is first("json")
    assert first("json") is not second("json")


async def test_builtins_are_fresh_and_reduced() -> None:
    hook = Importer({}, lambda name: None)
    one, two = make_builtins(hook), make_builtins(hook)
    assert one is not two and one == two
    for name in ("eval", "exec", "compile", "open", "globals", "locals", "vars", "dir", "type", "object"):
        assert name not in one
    for name in ("breakpoint", "input", "help", "id", "hash", "SystemExit", "KeyboardInterrupt"):
        assert name not in one
    assert one["getattr"].__name__ == "guarded_getattr"


async def test_every_handler_and_finally_calls_the_limit_guard() -> None:
    code = compile_module("try:\n    x = 1\nexcept Exception:\n    pass\nfinally:\n    y = 2\n", "m.py")
    assert GUARD_NAME in code.co_names


@pytest.mark.parametrize(
    ("source", "line", "needle"),
    [
        ("def run(event, step):\n    return (\n", 2, "SyntaxError"),
        ("x = 1\ny = _secret\n", 2, "invalid variable name"),
        ("x = " + "(" * 300 + ")" * 300 + "\n", 1, "too many nested parentheses"),
        ("x = " + "-" * 100000 + "1\n", None, "nested"),
    ],
)
async def test_compile_errors_are_clean_load_errors(source: str, line: int | None, needle: str) -> None:
    bundle = Bundle(
        "sha256:c",
        {"main.py": b"import helpers\ndef run(event, step):\n    return 1\n", "helpers.py": source.encode()},
    )
    with pytest.raises(LoadError) as info:
        compile_bundle(bundle)
    assert info.value.file == "helpers.py"
    assert info.value.line == line
    assert needle in info.value.message


async def test_derived_form_is_checked(shared_backend: RestrictedBackend) -> None:
    bundle = make_bundle("return 1")
    derived = await shared_backend.prepare(bundle)
    assert load_derived(derived, bundle.digest).entry == "main"
    sandbox = await shared_backend.load(bundle, limits=FAST_LIMITS, derived=derived)
    assert (await sandbox.invoke(event(), FakeHost())).output == 1
    # A derived form of another bundle or version is never trusted: the bundle is recompiled.
    other = make_bundle("return 2")
    recompiled = await shared_backend.load(other, limits=FAST_LIMITS, derived=derived)
    assert (await recompiled.invoke(event(), FakeHost())).output == 2
    stale = await shared_backend.load(bundle, limits=FAST_LIMITS, derived=b"garbage")
    assert (await stale.invoke(event(), FakeHost())).output == 1
    with pytest.raises(ValueError, match="corrupted"):
        load_derived(derived[:-3] + b"xyz", bundle.digest)


LINGERING = """
def forever():
    try:
        while True:
            yield 1
    finally:
        print('tenant A output')
        step_ref[0].do('a-sneaks-in', lambda: 1)

step_ref = []
held = []

import enum

def spy(self):
    print('tenant A finalizer')
    step_ref[0].do('a-finalizer', lambda: 1)

# __del__ through enum's functional API (RestrictedPython forbids defining it directly)
Spy = enum.Enum('Spy', [('member', 1), ('__del__', spy)])

def run(event, step):
    step_ref.append(step)
    gen = forever()
    next(gen)
    held.append(gen)
    cycle = []
    cycle.append(cycle)
    cycle.append(forever())
    next(cycle[1])
    return 'armed'
"""


async def test_a_tenants_finalizers_never_run_in_another_tenants_turn() -> None:
    async with RestrictedBackend(pool_size=1, lru_size=1) as backend:
        attacker = await backend.load(make_bundle(LINGERING), limits=FAST_LIMITS)
        assert (await attacker.invoke(event(), FakeHost())).output == "armed"
        host = FakeHost()
        # Loading another bundle evicts the attacker's modules from the one-entry LRU: its
        # suspended generators are finalized while the victim is current.
        source = "junk = [[i] for i in range(300000)]\nreturn step.do('b', lambda: 2)"
        victim = await backend.load(make_bundle(source), limits=FAST_LIMITS)
        # Its allocations make the worker's cyclic GC collect the attacker's generators.
        result = await victim.invoke(event(), host)
        assert result.output == 2 and "tenant A" not in result.stdout
        assert [args["name"] for name, args in host.calls if name == "step.do"] == ["b"]
