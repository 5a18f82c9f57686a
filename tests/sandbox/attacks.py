"""The shared isolation table: attack snippets run against every tenant backend.

Each ``Attack.source`` is the body of ``run(event, step)``. ``{CANARY_PATH}`` and ``{CANARY_ENV}``
are substituted before loading. The test plants ``CANARY`` in the host's ``os.environ`` (under
``CANARY_ENV``) and in a host file at ``CANARY_PATH``. A case passes when

* the outcome is one of ``expect``: ``load`` (LoadError), ``tenant`` (TenantError), ``limit``
  (LimitExceededError, with ``limit`` in ``limits`` when given), ``crash`` (SandboxCrashError: the
  sandbox was discarded, e.g. after ``os._exit``), ``ok`` (it ran, reaching nothing);
* nothing the invocation produced (output, stdout, error message, traceback) contains the canary or
  any of ``FORBIDDEN`` (host file contents, host paths);
* another tenant's warm sandbox of the same backend still works afterwards.

Expectations are written to hold for every backend: ``import os`` works in the wasm guest (a
WASI ``os`` with no files, no environment, no processes) but is refused by the restricted
backend, so such cases accept ``ok`` as well as ``load``/``tenant``; the canary and forbidden
strings are what prove isolation.
"""

from __future__ import annotations

from dataclasses import dataclass

CANARY = "tf-iso-canary-5d81e0"
CANARY_ENV = "TENANTFLOW_ISOLATION_CANARY"
FORBIDDEN = ("root:x:0:0", "/work/", "site-packages", "/.venv/", "/home/", "/root/")
"""Strings no outcome may contain: /etc/passwd content and host paths."""

DENIED = frozenset({"load", "tenant"})
HARMLESS = frozenset({"ok", "load", "tenant"})
LIMIT = frozenset({"limit"})


@dataclass(frozen=True)
class Attack:
    id: str
    category: str
    source: str
    expect: frozenset[str]
    limits: frozenset[str] = frozenset()
    """Acceptable limit names when ``limit`` is expected (empty: any)."""


def _a(id: str, category: str, source: str, expect: frozenset[str], *limits: str) -> Attack:
    return Attack(id, category, source, expect, frozenset(limits))


ATTACKS: list[Attack] = [
    # ---- imports that would grant authority -----------------------------------------------------
    _a("os-environ", "import", "import os\nreturn dict(os.environ)", HARMLESS),
    _a("os-getenv-canary", "env", "import os\nreturn os.getenv('{CANARY_ENV}')", HARMLESS),
    _a(
        "subprocess-run",
        "import",
        "import subprocess\nreturn subprocess.run(['id'], capture_output=True).stdout.decode()",
        DENIED,
    ),
    _a(
        "socket-connect",
        "network",
        "import socket\nsocket.create_connection(('127.0.0.1', 22), 1)\nreturn 'connected'",
        DENIED,
    ),
    _a("ctypes-libc", "import", "import ctypes\nreturn ctypes.CDLL(None).getpid()", DENIED),
    _a(
        "threading-start",
        "threads",
        "import threading\nthreading.Thread(target=print).start()\nreturn 'started'",
        DENIED,
    ),
    _a(
        "multiprocessing",
        "import",
        "import multiprocessing\nreturn multiprocessing.Process(target=print).start()",
        DENIED,
    ),
    _a(
        "importlib-posix",
        "import",
        "import importlib\nposix = importlib.import_module('posix')\nreturn {{k.decode(): v.decode() for k, v in posix.environ.items()}}",
        HARMLESS,
    ),
    _a("sys-modules-os", "import", "import sys\nreturn dict(sys.modules['os'].environ)", HARMLESS),
    # ---- dangerous builtins -------------------------------------------------------------------
    _a("open-passwd", "files", "return open('/etc/passwd').read()", DENIED),
    _a("open-canary", "files", "return open('{CANARY_PATH}').read()", DENIED),
    _a("eval-import", "builtins", "return eval(\"__import__('os').getcwd()\")", HARMLESS),
    _a(
        "exec-open",
        "builtins",
        "ns = {{}}\nexec(\"x = open('{CANARY_PATH}').read()\", ns)\nreturn ns['x']",
        DENIED,
    ),
    _a("dunder-import-listdir", "builtins", "return __import__('os').listdir('/')", DENIED),
    _a(
        "compile-exec-env",
        "builtins",
        "code = compile(\"import os\\nr = os.environ.get('{CANARY_ENV}')\", 'x', 'exec')\nns = {{}}\nexec(code, ns)\nreturn ns['r']",
        HARMLESS,
    ),
    _a("builtins-open", "builtins", "import builtins\nreturn builtins.open('{CANARY_PATH}').read()", DENIED),
    # ---- introspection ----------------------------------------------------------------------------
    _a(
        "subclasses-catch-warnings",
        "introspection",
        "for c in ().__class__.__base__.__subclasses__():\n"
        "    if c.__name__ == 'catch_warnings':\n"
        "        return c()._module.__builtins__['open']('{CANARY_PATH}').read()\n"
        "return 'none'",
        HARMLESS,
    ),
    _a(
        "subclasses-popen",
        "introspection",
        "for c in object.__subclasses__():\n    if c.__name__ == 'Popen':\n        return str(c(['id']).communicate())\nreturn 'no popen'",
        HARMLESS,
    ),
    _a("run-globals", "introspection", "return sorted(run.__globals__)", HARMLESS),
    _a("step-class-init-globals", "facades", "return sorted(step.__class__.__init__.__globals__)", DENIED),
    _a("step-do-globals", "facades", "return sorted(step.do.__globals__)[:50]", HARMLESS),
    _a("step-private-host", "facades", "return repr(step._host)", DENIED),
    _a(
        "step-closure-cells",
        "facades",
        "return [repr(c.cell_contents)[:80] for c in step.do.__closure__]",
        HARMLESS,
    ),
    _a("step-dict", "facades", "return repr(vars(step))", DENIED),
    _a("event-is-plain-data", "facades", "return [type(event).__name__, sorted(event)]", HARMLESS),
    _a(
        "env-class-dict",
        "facades",
        "from tenantflow import env\nreturn repr(type(env).__dict__)[:500]",
        HARMLESS,
    ),
    _a("env-private", "facades", "from tenantflow import env\nreturn repr(env._host)", DENIED),
    _a(
        "env-binding-private",
        "facades",
        "from tenantflow import env\nreturn repr(env.kv._binding_name)",
        DENIED,
    ),
    _a(
        "generator-frame-walk",
        "introspection",
        "def g():\n    yield 1\ngen = g()\nnext(gen)\nf = gen.gi_frame\nreturn [repr(f.f_back), sorted(f.f_globals)[:20]]",
        HARMLESS,
    ),
    _a(
        "traceback-frame-walk",
        "introspection",
        "try:\n    1 / 0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame\n"
        "    while f.f_back:\n        f = f.f_back\n    return sorted(f.f_globals)[:50]",
        HARMLESS,
    ),
    _a(
        "sys-getframe",
        "introspection",
        "import sys\nreturn [sys._getframe(i).f_code.co_filename for i in range(3)]",
        HARMLESS,
    ),
    _a("format-string-walk", "format", "return '{{0.__class__.__init__.__globals__}}'.format(step)", DENIED),
    _a("format-string-do-globals", "format", "return '{{0.do.__globals__}}'.format(step)[:2000]", HARMLESS),
    _a(
        "gc-host-objects",
        "introspection",
        "import gc\nreturn sorted({{type(o).__name__ for o in gc.get_objects()}} & {{'Store', 'Engine', 'Popen', 'Connection'}})",
        HARMLESS,
    ),
    # ---- files ------------------------------------------------------------------------------
    _a("listdir-root", "files", "import os\nreturn os.listdir('/')", DENIED),
    _a(
        "os-open-canary",
        "files",
        "import os\nfd = os.open('{CANARY_PATH}', os.O_RDONLY)\nreturn os.read(fd, 200).decode()",
        DENIED,
    ),
    _a("pathlib-read", "files", "import pathlib\nreturn pathlib.Path('{CANARY_PATH}').read_text()", DENIED),
    _a(
        "write-file",
        "files",
        "with open('/tmp/tenantflow-pwned', 'w') as f:\n    f.write('x')\nreturn 'wrote'",
        DENIED,
    ),
    # ---- network ----------------------------------------------------------------------------
    _a(
        "urllib-request",
        "network",
        "import urllib.request\nreturn urllib.request.urlopen('http://127.0.0.1:9/').read()",
        DENIED,
    ),
    _a(
        "raw-socket",
        "network",
        "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', 9))\nreturn 'connected'",
        DENIED,
    ),
    # ---- threads and processes --------------------------------------------------------------
    _a("os-system", "processes", "import os\nreturn os.system('touch /tmp/tenantflow-pwned')", DENIED),
    _a("os-fork", "processes", "import os\nreturn os.fork()", DENIED),
    _a("os-execv", "processes", "import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])", DENIED),
    _a("sys-exit", "processes", "import sys\nsys.exit(0)", DENIED),
    _a("sys-exit-in-step", "processes", "return step.do('x', lambda: exit())", DENIED),
    _a("os-exit", "processes", "import os\nos._exit(0)", frozenset({"load", "tenant", "crash"})),
    _a("os-abort", "processes", "import os\nos.abort()", frozenset({"load", "tenant", "crash"})),
    _a("raise-keyboard-interrupt", "processes", "raise KeyboardInterrupt", DENIED),
    _a(
        "thread-start-new",
        "threads",
        "import _thread\n_thread.start_new_thread(print, ('x',))\nreturn 'started'",
        DENIED,
    ),
    # ---- CPU --------------------------------------------------------------------------------
    _a("cpu-loop", "cpu", "while True:\n    pass", LIMIT, "cpu", "wall"),
    _a(
        "cpu-loop-swallowing",
        "cpu",
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
        LIMIT,
        "cpu",
        "wall",
    ),
    _a(
        "cpu-bomb-in-step",
        "cpu",
        "def bomb():\n    while True:\n        pass\nreturn step.do('bomb', bomb)",
        LIMIT,
        "cpu",
        "wall",
    ),
    _a("cpu-bigint", "cpu", "return len(str(7 ** 7 ** 9))", LIMIT, "cpu", "wall", "memory"),
    # ---- memory -----------------------------------------------------------------------------
    _a("memory-huge-str", "memory", "return len('a' * 2 ** 30)", LIMIT, "memory"),
    _a("memory-growth", "memory", "x = []\nwhile True:\n    x.append(bytearray(10 ** 6))", LIMIT, "memory"),
    _a(
        "memory-caught",
        "memory",
        "try:\n    'a' * 2 ** 30\nexcept MemoryError:\n    return 'survived'",
        LIMIT,
        "memory",
    ),
    # ---- recursion --------------------------------------------------------------------------
    _a(
        "recursion",
        "recursion",
        "def f():\n    return f()\nreturn f()",
        frozenset({"tenant", "limit"}),
        "recursion",
    ),
    _a(
        "recursion-raised-limit",
        "recursion",
        "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1)\nreturn f(0)",
        frozenset({"tenant", "limit", "load"}),
        "recursion",
        "memory",
    ),
    # ---- output -----------------------------------------------------------------------------
    _a(
        "output-flood",
        "output",
        "for i in range(100000):\n    print('x' * 100)\nreturn 'ok'",
        frozenset({"ok", "limit"}),
        "output",
        "cpu",
    ),
    _a(
        "output-flood-forever", "output", "while True:\n    print('y' * 1000)", LIMIT, "cpu", "wall", "output"
    ),
    # ---- hostile return values ----------------------------------------------------------------
    _a("return-dict-subclass", "results", "class D(dict):\n    pass\nreturn D(a=1)", DENIED),
    _a("return-generator", "results", "return (i for i in range(3))", DENIED),
    _a("return-function", "results", "return run", DENIED),
    _a("return-huge", "results", "return 'x' * (3 * 1024 * 1024)", LIMIT, "result_size"),
    _a("return-cycle", "results", "x = []\nx.append(x)\nreturn x", DENIED),
    # Freeing a 10,000-deep list can exhaust the wasm guest's C stack: a recursion limit is fine.
    _a(
        "return-deep-nesting",
        "results",
        "x = []\nfor _ in range(10000):\n    x = [x]\nreturn x",
        frozenset({"load", "tenant", "limit"}),
        "recursion",
    ),
    _a(
        "step-result-dict-subclass",
        "results",
        "class D(dict):\n    pass\nreturn step.do('s', lambda: D())",
        DENIED,
    ),
    _a(
        "step-result-huge",
        "results",
        "return step.do('s', lambda: ['x' * 1000] * 3000)",
        LIMIT,
        "result_size",
    ),
    # ---- host calls -------------------------------------------------------------------------
    _a(
        "host-call-flood",
        "host-calls",
        "i = 0\nwhile True:\n    i += 1\n    step.do(f's{{i}}', lambda: i)",
        LIMIT,
        "host_calls",
        "cpu",
    ),
    _a(
        "forge-host-call",
        "host-calls",
        "import wit_world.imports.host as h\nreturn h.call('env.secrets.get', '{{\"name\": \"db\"}}')",
        DENIED,
    ),
    _a(
        "ungranted-binding",
        "host-calls",
        "from tenantflow import env\nreturn env.secrets.get(name='db')",
        DENIED,
    ),
    # ---- added by the reliability suite (tests/reliability runs every case through the platform) ----
    _a(
        "format-map-globals",
        "format",
        "return '{{s.do.__globals__}}'.format_map({{'s': step}})[:2000]",
        HARMLESS,
    ),
    _a(
        "string-formatter-get-field",
        "format",
        "import string\nreturn repr(string.Formatter().get_field('0.__class__.__init__.__globals__', [step], {{}}))[:2000]",
        HARMLESS,
    ),
    _a(
        "format-subclasses-index",
        "format",
        "return '{{0.__class__.__mro__[1].__subclasses__}}'.format(())[:2000]",
        HARMLESS,
    ),
    _a(
        "attribute-error-obj",
        "introspection",
        "try:\n    step.no_such_attribute\nexcept AttributeError as e:\n    return repr(getattr(e, 'obj', None))",
        HARMLESS,
    ),
    _a(
        "bound-method-self",
        "introspection",
        "return [repr(step.do.__self__), repr(step.sleep.__self__)]",
        HARMLESS,
    ),
    _a(
        "bound-method-func-globals",
        "introspection",
        "m = step.do\nreturn sorted(m.__func__.__globals__)[:50]",
        HARMLESS,
    ),
    _a(
        "type-subclasses-walk",
        "introspection",
        "return [c.__name__ for c in type.__subclasses__(type)][:50]",
        HARMLESS,
    ),
    _a("code-consts", "introspection", "return repr(run.__code__.co_consts)[:2000]", HARMLESS),
    _a(
        "builtins-dunder-open",
        "builtins",
        "return __builtins__['open']('{CANARY_PATH}').read()",
        DENIED,
    ),
    _a(
        "getattr-dunder-chain",
        "builtins",
        "return repr(getattr(getattr(step, '__class__'), '__init__').__globals__)[:2000]",
        HARMLESS,
    ),
    _a(
        "coroutine-frame-walk",
        "frames",
        "async def c():\n    return 1\nco = c()\nf = co.cr_frame\nco.close()\nreturn [repr(f.f_back), sorted(f.f_globals)[:20]]",
        HARMLESS,
    ),
    _a(
        "async-generator-frame-walk",
        "frames",
        "async def ag():\n    yield 1\ng = ag()\nf = g.ag_frame\nreturn [repr(f.f_back), sorted(f.f_globals)[:20]]",
        HARMLESS,
    ),
    _a(
        "traceback-tb-next-globals",
        "frames",
        "import sys\ntry:\n    step.do('', None)\nexcept Exception:\n    tb = sys.exc_info()[2]\n    out = []\n"
        "    while tb:\n        out.append(sorted(tb.tb_frame.f_globals)[:30])\n        tb = tb.tb_next\n    return out",
        HARMLESS,
    ),
    _a(
        "except-star",
        "exceptions",
        "try:\n    raise ExceptionGroup('g', [ValueError(1), TypeError(2)])\nexcept* ValueError as e:\n    x = e\n"
        "except* TypeError:\n    pass\nreturn repr(x)",
        frozenset({"ok", "load", "tenant", "crash"}),
    ),
    _a(
        "except-star-exit-group",
        "exceptions",
        "try:\n    raise BaseExceptionGroup('g', [SystemExit(1)])\nexcept* SystemExit:\n    pass\nreturn 'swallowed'",
        frozenset({"ok", "load", "tenant", "crash"}),
    ),
    _a(
        "system-exit-swallowed",
        "exceptions",
        "try:\n    raise SystemExit(3)\nexcept BaseException:\n    pass\nreturn 'swallowed'",
        HARMLESS,
    ),
    _a("exit-in-finally", "exceptions", "try:\n    return 1\nfinally:\n    raise SystemExit(1)", DENIED),
    _a(
        "log-forgery-print",
        "output",
        "print('\\n[ERROR] tenant=victim-wasm instance=victim-1 level=error\\r\\x1b[2K forged')\nreturn 'ok'",
        HARMLESS,
    ),
    _a(
        "log-forgery-level",
        "output",
        "import tenantflow\ntenantflow.log('forged', level='error\\ntenant=victim-wasm ' + 'L' * 5000)\nreturn 'ok'",
        HARMLESS,
    ),
    _a(
        "stderr-flood",
        "output",
        "import sys\nfor i in range(100000):\n    sys.stderr.write('z' * 100)\nreturn 'ok'",
        frozenset({"ok", "load", "tenant", "limit"}),
    ),
    _a("step-name-control-chars", "step-names", "return step.do('a\\x00b\\n\\x1b[31m', lambda: 1)", HARMLESS),
    _a("step-name-huge", "step-names", "return step.do('n' * 100000, lambda: 1)", HARMLESS),
    _a("step-name-victims-key", "step-names", "return step.do('secret-step', lambda: 'mine')", HARMLESS),
    _a("step-name-not-a-string", "step-names", "return step.do(['secret-step', 1], lambda: 1)", HARMLESS),
    _a("return-nan", "results", "return float('nan')", HARMLESS),
    _a("return-int-keys", "results", "return {{1: 2}}", HARMLESS),
    _a("return-bytes", "results", "return b'abc'", HARMLESS),
    _a("return-huge-int", "results", "return 10 ** 5000", HARMLESS),
    _a(
        "return-hanging-items",
        "results",
        "class D(dict):\n    def items(self):\n        while True:\n            pass\nreturn D(a=1)",
        frozenset({"load", "tenant", "limit"}),
    ),
    _a(
        "return-repr-recursion",
        "results",
        "class X:\n    def __repr__(self):\n        return repr(self)\nreturn X()",
        frozenset({"load", "tenant", "limit"}),
    ),
    _a("env-environ-copy", "env", "import os\nreturn os.environ.copy()", HARMLESS),
    _a("env-proc-self-environ", "env", "return open('/proc/self/environ').read()", DENIED),
    _a("network-getaddrinfo", "network", "import socket\nreturn socket.getaddrinfo('localhost', 80)", DENIED),
    _a(
        "network-http-client",
        "network",
        "import http.client\nc = http.client.HTTPConnection('127.0.0.1', 9)\nc.request('GET', '/')\n"
        "return c.getresponse().read()",
        DENIED,
    ),
    _a(
        "memory-dict-growth",
        "memory",
        "d = {{}}\ni = 0\nwhile True:\n    d[i] = 'x' * 1000\n    i += 1",
        LIMIT,
        "memory",
        "cpu",
        "wall",
    ),
    _a(
        "recursion-in-step",
        "recursion",
        "def f(n):\n    return f(n + 1)\nreturn step.do('r', lambda: f(0))",
        frozenset({"tenant", "limit"}),
        "recursion",
    ),
    _a(
        "cpu-regex-redos", "cpu", "import re\nreturn re.match('(a+)+$', 'a' * 40 + 'b')", LIMIT, "cpu", "wall"
    ),
    _a(
        "time-and-random-outside-steps",
        "nondeterminism",
        "import time, random\nreturn [time.time() > 0, 0 <= random.random() < 1]",
        HARMLESS,
    ),
    _a("event-mutation", "facades", "event['payload'] = 'x'\nevent.clear()\nreturn 'ok'", HARMLESS),
]

assert len({attack.id for attack in ATTACKS}) == len(ATTACKS), "attack ids must be unique"
