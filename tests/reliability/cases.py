"""Isolation cases that need the whole platform (several tenants, replays, events), in addition to
the shared single-snippet table ``tests/sandbox/attacks.py``.

* ``POISONING``: pairs. Tenant A runs ``poison`` (each statement tried on its own, failures ignored),
  then tenant B on the same backend (same wasm engine, same restricted worker pool) runs ``check``,
  whose output must equal ``clean``: what it returns on a fresh platform.
* ``NONDETERMINISM``: workflows that read time, randomness or set order around a durable sleep, so
  the second wake-up replays from the top. ``memoized`` cases must complete with the recorded
  values; the others may complete or fail cleanly with a non-determinism error.
* ``STEP_NAMES``: hostile step names (control characters, huge, another tenant's step names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Poisoning:
    id: str
    poison: tuple[str, ...]
    check: str
    clean: Any
    bindings: tuple[str, ...] = ()


def poison_source(statements: tuple[str, ...]) -> str:
    """A body that tries each statement on its own and returns the indexes that did not raise."""
    lines = ["done = []"]
    for index, statement in enumerate(statements):
        lines += ["try:"]
        lines += ["    " + line for line in statement.splitlines()]
        lines += [f"    done.append({index})", "except Exception:", "    pass"]
    lines.append("return done")
    return "\n".join(lines)


POISONING: list[Poisoning] = [
    Poisoning(
        "builtins",
        (
            "import builtins\nbuiltins.len = lambda x: 42",
            "__builtins__['len'] = lambda x: 42",
            "__builtins__.len = lambda x: 42",
            "import builtins\nbuiltins.sorted = lambda x: 'pwned'",
            "import builtins\nbuiltins.str = lambda x: 'pwned'",
            "import builtins\nbuiltins.__dict__['abs'] = lambda x: -1",
            "step.do.__globals__['__builtins__']['len'] = lambda x: 42",
        ),
        "return [len([1, 2, 3]), sorted([3, 1, 2]), str(5), abs(-2)]",
        [3, [1, 2, 3], "5", 2],
    ),
    Poisoning(
        "module-attributes",
        (
            "import json\njson.dumps = lambda *a, **k: 'pwned'",
            "import json\njson.loads = lambda *a, **k: 'pwned'",
            "import math\nmath.pi = 3",
            "import re\nre.compile = None",
            "import collections\ncollections.Counter = dict",
            "import json\njson.JSONEncoder.item_separator = '|'",
            "import json\njson.JSONEncoder.encode = lambda self, o: 'pwned'",
            "import sys\nsys.modules['json'] = None",
            "import sys\nsys.modules['math'].pi = 3",
        ),
        "import json, math, re, collections\n"
        "return [json.dumps({'a': [1, 2]}), json.loads('[1]'), math.pi, re.compile('a').pattern,\n"
        "        collections.Counter('aab')['a'], json.JSONEncoder().encode({'b': [1, 2]})]",
        ['{"a": [1, 2]}', [1], 3.141592653589793, "a", 2, '{"b": [1, 2]}'],
    ),
    Poisoning(
        "random-state",
        (
            "import random\nrandom.seed(0)",
            "import random\nrandom.random = lambda: 0.5",
            "import random\nrandom.setstate(random.Random(0).getstate())",
            "import random\nrandom.Random.random = lambda self: 0.5",
        ),
        "import random\nreturn [random.random() for _ in range(3)] + [random.Random(1).random()]",
        None,  # checked by the test: not seed(0)'s sequence, no 0.5, Random(1) unchanged
    ),
    Poisoning(
        "decimal-context",
        ("import decimal\ndecimal.getcontext().prec = 2", "import decimal\ndecimal.DefaultContext.prec = 3"),
        "import decimal\nreturn str(decimal.Decimal(1) / decimal.Decimal(3))",
        "0.3333333333333333333333333333",
    ),
    Poisoning(
        "sdk-and-facades",
        (
            "import tenantflow\ntenantflow.NonRetryableError = None",
            "import tenantflow\ntenantflow.log = None",
            "type(step).do = lambda *a, **k: 'pwned'",
            "step.__class__.do = lambda *a, **k: 'pwned'",
            "step.do = lambda *a, **k: 'pwned'",
        ),
        "import tenantflow\nreturn [issubclass(tenantflow.NonRetryableError, Exception), step.do('x', lambda: 1)]",
        [True, 1],
    ),
    Poisoning(
        "interpreter-state",
        (
            "import sys\nsys.setrecursionlimit(60)",
            "import os\nos.environ['TF_POISON'] = 'x'",
            "import os\nos.putenv('TF_POISON', 'x')",
            "import warnings\nwarnings.simplefilter('error')",
            "import sys\nsys.stdout = None",
        ),
        "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\n"
        "try:\n    import os\n    seen = os.environ.get('TF_POISON')\nexcept Exception:\n    seen = None\n"
        "print('still printing')\nreturn [f(200), seen]",
        [200, None],
    ),
    Poisoning(
        "kv-store",
        ("from tenantflow import env\nenv.kv.put(key='shared', value='poison-A')",),
        "from tenantflow import env\nreturn env.kv.get(key='shared')",
        None,
        bindings=("kv",),
    ),
]


@dataclass(frozen=True)
class Replay:
    id: str
    source: str
    memoized: bool
    """True: must complete, and ``output['again'] == output['first']``."""


NONDETERMINISM: list[Replay] = [
    Replay(
        "memoized-time-random-set-order",
        "import random, time\n"
        "first = step.do('first', lambda: [random.random(), time.time(), list({'alpha', 'beta', 'gamma', 'delta'})])\n"
        "step.sleep('nap', '1 second')\n"
        "again = step.do('again', lambda: first)\n"
        "return {'first': first, 'again': again}",
        True,
    ),
    Replay(
        "branch-on-random",
        "import random\nname = 'a' if random.random() < 0.5 else 'b'\nstep.do(name, lambda: 1)\n"
        "step.sleep('nap', '1 second')\nreturn step.do('end', lambda: name)",
        False,
    ),
    Replay(
        "branch-on-set-order",
        "first = list({'k1', 'k2', 'k3', 'k4', 'k5', 'k6'})[0]\nstep.do(first, lambda: 1)\n"
        "step.sleep('nap', '1 second')\nreturn step.do('end', lambda: first)",
        False,
    ),
    Replay(
        "branch-on-time",
        "import time\nstep.do(f'at-{int(time.time() * 1000)}', lambda: 1)\n"
        "step.sleep('nap', '1 second')\nreturn step.do('end', lambda: 2)",
        False,
    ),
]

STEP_NAMES_REFUSED = ["a\x00b", "\n\r\x1b[2J[ERROR] forged", "tab\there", "del\x7f"]
"""Names with control characters: the engine refuses them (a clean ValueError in the guest)."""
STEP_NAMES = [
    "secret-step",
    "victim-1/secret-step",
    "('secret-step', 1)",
    "victim-wasm:victim-1:secret-step",
    "‮evil\u200b",
    " ",
]
