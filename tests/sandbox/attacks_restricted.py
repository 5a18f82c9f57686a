"""Attack snippets specific to RestrictedPython, in the format of the shared table (``attacks.py``).

Run by tests/sandbox/restricted/test_attacks.py against the restricted backend (the shared table
itself runs against every backend from tests/sandbox/test_isolation.py). As there, each
``Attack.source`` is the body of ``run(event, step)`` (here it may also be a whole module defining
``run``); ``{CANARY_PATH}`` and ``{CANARY_ENV}`` are substituted before loading (sources built
with ``_a`` have their other braces escaped for that). A case passes when the outcome is one of
``expect``, nothing the invocation produced contains the canary or any of ``FORBIDDEN``, and the
worker pool stays healthy (a benign tenant still runs).
"""

from __future__ import annotations

from tests.sandbox.attacks import CANARY, CANARY_ENV, DENIED, FORBIDDEN, HARMLESS, LIMIT, Attack

__all__ = ["ATTACKS", "CANARY", "CANARY_ENV", "DENIED", "FORBIDDEN", "HARMLESS", "LIMIT", "Attack"]

_NAMES = {"ok": "ok", "load": "load", "tenant": "tenant", "limit": "limit"}


def _a(id: str, category: str, source: str, *expect: str) -> Attack:
    """An attack whose source has no placeholders (its braces are escaped for ``str.format``)."""
    escaped = source.replace("{", "{{").replace("}", "}}")
    return _p(id, category, escaped, *expect)


def _p(id: str, category: str, source: str, *expect: str) -> Attack:
    """An attack whose source uses ``{CANARY_ENV}`` / ``{CANARY_PATH}``."""
    outcomes = frozenset(_NAMES[e] for e in expect) if expect else DENIED
    return Attack(id, category, source, outcomes)


ATTACKS: list[Attack] = [
    # --- real module objects reachable through plain attributes --------------------------------
    _p(
        "json_codecs_sys",
        "module-walk",
        "import json\nreturn json.codecs.sys.modules['os'].environ['{CANARY_ENV}']",
    ),
    _a("re_enum_sys", "module-walk", "import re\nreturn re.enum.sys.modules['os'].environ"),
    _a("datetime_sys", "module-walk", "import datetime\nreturn datetime.sys.modules['os'].environ"),
    _a("statistics_sys", "module-walk", "import statistics\nreturn statistics.sys.modules['os'].environ"),
    _a("typing_sys", "module-walk", "import typing\nreturn typing.sys.modules['os'].environ"),
    _a(
        "dataclasses_builtins",
        "module-walk",
        "import dataclasses\nreturn dataclasses.builtins.open('/etc/passwd').read()",
    ),
    _a(
        "urllib_parse_sys",
        "module-walk",
        "import urllib.parse\nreturn urllib.parse.sys.modules['os'].environ",
    ),
    _a(
        "getattr_module_walk",
        "module-walk",
        "import json\nreturn getattr(getattr(json, 'codecs'), 'sys').modules['os'].environ",
    ),
    _a(
        "from_json_import_codecs",
        "module-walk",
        "from json import codecs\nreturn codecs.sys.modules['os'].environ",
    ),
    _a(
        "import_submodule",
        "module-walk",
        "import json.decoder\nreturn json.decoder.sys.modules['os'].environ",
    ),
    _a("import_os", "import", "import os\nreturn os.environ"),
    _a("import_sys", "import", "import sys\nreturn sys.modules"),
    _a("import_importlib", "import", "import importlib\nreturn importlib.import_module('os').environ"),
    _a("import_relative", "import", "from . import os\nreturn 1"),
    _a("dunder_import", "import", "return __import__('os').environ"),
    _a("module_proxy_subscript", "module-walk", "import json\nreturn json['codecs']"),
    _a("module_proxy_iter", "module-walk", "import json\nreturn [x for x in json]"),
    _a("module_proxy_write", "module-walk", "import json\njson.codecs = 1\nreturn 1"),
    _a("stdlib_shared_state", "module-walk", "import hashlib\nreturn sorted(hashlib.algorithms_available)"),
    _a("decimal_default_context", "module-walk", "import decimal\ndecimal.DefaultContext.prec = 2\nreturn 1"),
    # --- str.format and string.Formatter attribute walks -----------------------------------------
    _a("str_format", "format", "return '{0.__class__.__mro__}'.format(1)"),
    _a("str_format_map", "format", "return '{x.__class__}'.format_map({'x': step})"),
    _a("str_format_unbound", "format", "return str.format('{0.__class__}', 1)"),
    _a("str_format_getattr", "format", "return getattr('{0.__globals__}', 'format')(run)"),
    _a("str_subclass_format", "format", "class S(str):\n    pass\nreturn S('{0.__class__}').format(1)"),
    _a(
        "string_formatter",
        "format",
        "import string\nreturn string.Formatter().get_field('0.__globals__', [run], {})",
    ),
    _a(
        "string_template_walk",
        "format",
        "import string\nreturn string.Template('${a.__class__}').substitute(a=1)",
    ),
    _a("fstring_dunder", "format", "x = 1\nreturn f'{x.__class__}'"),
    _a(
        "userstring_format",
        "format",
        "import collections, statistics\n"
        "return collections.UserString('{0.__globals__[sys].path}').format(statistics.mean)",
    ),
    _a(
        "template_dotted_idpattern",
        "format",
        "import string\nclass T(string.Template):\n    idpattern = '[a-z_.]+'\n"
        "return T('$__class__.__mro__').substitute({'a': 1})",
    ),
    _a("percent_format_walk", "format", "return '%(a)s' % {'a': step}", "ok"),
    # --- frames of generators, coroutines, async generators --------------------------------------
    _a("gen_frame", "frames", "def g():\n    yield 1\nreturn g().gi_frame.f_back.f_globals"),
    _a("gen_frame_getattr", "frames", "def g():\n    yield 1\nreturn getattr(g(), 'gi_frame')"),
    _a("gen_code", "frames", "def g():\n    yield 1\nreturn getattr(g(), 'gi_code')"),
    _a("genexp_frame", "frames", "g = (x for x in [1])\nreturn getattr(getattr(g, 'gi_frame'), 'f_globals')"),
    _a("coroutine", "frames", "async def c():\n    pass\nreturn c().cr_frame.f_globals"),
    _a("async_generator", "frames", "async def a():\n    yield 1\nreturn a().ag_frame.f_globals"),
    _a(
        "traceback_frame",
        "frames",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return e.__traceback__.tb_frame.f_globals",
    ),
    _a(
        "traceback_getattr",
        "frames",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return getattr(getattr(e, '__traceback__'), 'tb_frame')",
    ),
    # --- shadowing guard names ---------------------------------------------------------------------
    _a("posonly_getattr", "shadowing", "def run(event, step, _getattr_=getattr, /):\n    return 1\n"),
    _a("posonly_write", "shadowing", "def f(_write_, /):\n    return 1\nreturn f(1)"),
    _a("lambda_posonly", "shadowing", "f = lambda _getiter_, /: 0\nreturn f(1)"),
    _a("kwonly_getitem", "shadowing", "def f(*, _getitem_=None):\n    return 1\nreturn f()"),
    _a("assign_guard", "shadowing", "_getattr_ = getattr\nreturn 1"),
    _a("global_guard", "shadowing", "global _write_\n_write_ = 1\nreturn 1"),
    _a("guard_name_loop", "shadowing", "for _getiter_ in [1]:\n    pass\nreturn 1"),
    _a(
        "except_as_guard",
        "shadowing",
        "try:\n    1 / 0\nexcept ZeroDivisionError as _tf_guard_:\n    return 1",
    ),
    # --- __subclasses__ and class walks ------------------------------------------------------------
    _a("subclasses", "subclasses", "return ().__class__.__bases__[0].__subclasses__()"),
    _a(
        "subclasses_getattr",
        "subclasses",
        "base = int.mro()[-1]\nreturn [c for c in getattr(base, '__subclasses__')()]",
    ),
    _a("mro_object_new", "subclasses", "base = int.mro()[-1]\nreturn getattr(base, '__new__')"),
    _a("class_dict", "subclasses", "return getattr(int, '__dict__')"),
    # --- bound methods and function internals ------------------------------------------------------
    _a("bound_self", "bound-method", "return [].append.__self__"),
    _a("bound_self_getattr", "bound-method", "import random\nreturn str(getattr(random.random, '__self__'))"),
    _a(
        "func_globals",
        "bound-method",
        "import json\nreturn getattr(json.dumps, '__globals__')['__builtins__']",
    ),
    _a(
        "func_func_globals",
        "bound-method",
        "import json\nm = json.JSONEncoder().encode\nreturn getattr(getattr(m, '__func__'), '__globals__')",
    ),
    _a("step_closure", "bound-method", "return getattr(step.do, '__closure__')"),
    _a("step_host_attr", "facade", "return step.host"),
    _a("step_private", "facade", "return getattr(step, '_rt')"),
    _a("env_private", "facade", "from tenantflow import env\nreturn getattr(env.kv, '_binding_name')"),
    _a("print_collector", "facade", "print('x')\nreturn getattr(_print, 'write')"),
    # --- trusted helpers that copy or read attributes by caller-given names ----------------------
    _a(
        "wraps_updated_globals",
        "helpers",
        "import functools, statistics\ndef f():\n    pass\n"
        "functools.wraps(statistics.mean, assigned=(), updated=('__globals__',))(f)\nreturn str(sys.path)",
    ),
    _a(
        "enum_functional_dunder",
        "helpers",
        "import enum\ndef spy(self, *args):\n    return 'spied'\n"
        "E = enum.Enum('E', [('a', 1), ('__repr__', spy)])\nreturn repr(E.a)",
        "ok",
        "tenant",
        "load",
    ),
    # --- AttributeError.obj and friends -------------------------------------------------------------
    _a(
        "attributeerror_obj",
        "attributeerror",
        "import json\ntry:\n    json.nope\nexcept AttributeError as e:\n    return str(e.obj)",
    ),
    _a(
        "attributeerror_obj_getattr",
        "attributeerror",
        "import json\ntry:\n    json.nope\nexcept AttributeError as e:\n    return str(getattr(e, 'obj'))",
    ),
    _a(
        "attributeerror_obj_string",
        "attributeerror",
        "import string\ntry:\n    string.Formatter\nexcept AttributeError as e:\n    return str(getattr(e, 'obj'))",
    ),
    # --- except* (CVE-2025-22153) and other syntax -------------------------------------------------
    _a("except_star", "syntax", "try:\n    raise ValueError(1)\nexcept* ValueError:\n    pass\nreturn 1"),
    _a("nonlocal_escape", "syntax", "x = 1\ndef f():\n    nonlocal x\nreturn 1"),
    _a("metaclass_kw", "syntax", "class A(metaclass=object):\n    pass\nreturn 1"),
    _a("annotated_attribute", "syntax", "class A:\n    pass\na = A()\na.x: int = 1\nreturn 1"),
    # --- removed builtins ----------------------------------------------------------------------------
    _p("builtin_open", "builtins", "return open('{CANARY_PATH}').read()"),
    _p(
        "format_walk_to_canary",
        "format",
        "import statistics\nreturn '{{0.__globals__[sys].modules[os].environ[{CANARY_ENV}]}}'.format(statistics.mean)",
    ),
    _p(
        "wraps_globals_to_canary",
        "helpers",
        "import functools, statistics\ndef f():\n    pass\n"
        "functools.wraps(statistics.mean, assigned=(), updated=('__globals__',))(f)\n"
        "return sys.modules['os'].environ.get('{CANARY_ENV}')",
    ),
    _a("builtin_eval", "builtins", "return eval('1')"),
    _a("builtin_exec", "builtins", "exec('x = 1')\nreturn 1"),
    _a("builtin_compile", "builtins", "return compile('1', 'x', 'eval')"),
    _a("builtin_type", "builtins", "return type(1)"),
    _a("builtin_object", "builtins", "return object()"),
    _a("builtin_vars", "builtins", "return vars()"),
    _a("builtin_globals", "builtins", "return globals()"),
    _a("builtin_dir", "builtins", "return dir()"),
    _a("builtin_id", "builtins", "return id(1)"),
    _a("builtin_hash", "builtins", "return hash('a')"),
    _a("builtin_breakpoint", "builtins", "breakpoint()\nreturn 1"),
    _a("raise_systemexit", "builtins", "raise SystemExit(0)"),
    _a("raise_keyboardinterrupt", "builtins", "raise KeyboardInterrupt()"),
    _a("builtins_name", "builtins", "return __builtins__"),
    _a("raise_generatorexit", "builtins", "raise GeneratorExit()"),
    _a("raise_baseexception", "builtins", "raise BaseException('out of the boundary')"),
    # --- hostile return values ----------------------------------------------------------------------
    _a(
        "dict_subclass_items_hang",
        "result",
        "class D(dict):\n    def items(self):\n        while True:\n            pass\nreturn D(a=1)",
    ),
    _a("result_generator", "result", "return (x for x in [1])"),
    _a("result_function", "result", "return run"),
    _a("result_nan", "result", "return float('nan')"),
]
