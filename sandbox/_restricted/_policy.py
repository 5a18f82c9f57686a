"""The RestrictedPython policy: compile-time transformer, guards and the per-tenant builtins.

Design note. RestrictedPython only rewrites code so that attribute access, item access, iteration,
writes, printing and imports call guard functions; what those guards allow is the policy, and it
lives here (see ../shared/reference/restricted-sandbox.md, elements 1-8). Element 9 (processes and
rlimits) lives in ``_worker.py`` and ``_pool.py``.

Limits must not be catchable. RestrictedPython has no hook for ``except``, so the transformer adds
one: every ``except`` handler and every ``finally`` block starts with a call to ``_tf_guard_()``,
a name tenant code cannot write or shadow (names starting with ``_`` are rejected at compile
time). The guard looks at the exception being handled: a ``MemoryError`` ends the worker process
(the parent reports ``LimitExceededError("memory")``), a ``RecursionError`` becomes the
uncatchable ``LimitSignal("recursion")``, and any non-``Exception`` signal (a limit, the SDK's
suspension) is re-raised. Tenants cannot define ``__exit__`` or ``__del__`` (RestrictedPython
only allows a few dunder names), so ``with`` blocks and finalizers cannot swallow them either.
The guard of each tenant also refuses to run while another tenant's invocation is current: a
generator of tenant A finalized during tenant B's turn would otherwise run A's ``finally`` code
with B's host bridge, output and deterministic clock. For the same reason every tenant function
and lambda starts with ``_tf_owner_()``: whatever hook makes platform code call a tenant function
late (cyclic GC of an object whose class got a ``__del__`` through ``enum``'s functional API, a
callable left in a shared cache), it cannot run in another tenant's turn.

Iteration of allowed objects is not filtered per item: our policy has no per-object
authorization (everything reachable is already safe to hold), so ``sorted``/``zip``/``tuple``
(which iterate in C) are offered; ``_getiter_`` still refuses to iterate non-data platform objects.
"""

from __future__ import annotations

import ast
import builtins
import collections
import datetime
import decimal
import fractions
import importlib
import operator
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, cast

from RestrictedPython.compile import compile_restricted_exec
from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
)
from RestrictedPython.Guards import (
    safer_getattr_raise as _safer_getattr_raise,
)
from RestrictedPython.transformer import RestrictingNodeTransformer

GUARD_NAME = "_tf_guard_"
OWNER_NAME = "_tf_owner_"
EXIT_MEMORY = 86
"""Worker exit status meaning "the memory limit fired" (a MemoryError anywhere in the worker)."""
RANGE_MAX = 10_000_000
"""Largest ``range`` a tenant may create (iterating more is a CPU bomb anyway)."""
POLICY_VERSION = "4"
"""Bump whenever the transformer output changes: it keys the platform's cache of derived code."""


LimitSignal: Any = importlib.import_module("sandbox._guest._tenantflow_sdk").LimitSignal
"""The SDK's limit signal (``LimitSignal(limit, message)``): not an ``Exception``; every tenant
handler re-raises it through the guard, and the SDK turns it into a ``limit`` outcome."""


def die_of_memory() -> NoReturn:
    """End the worker: a caught MemoryError must never be a way around the memory limit."""
    os._exit(EXIT_MEMORY)


def exc_guard() -> None:
    """Called first in every tenant ``except``/``finally`` block (inserted by the transformer)."""
    exc = sys.exc_info()[1]
    if exc is None or (isinstance(exc, Exception) and not isinstance(exc, MemoryError | RecursionError)):
        return
    if isinstance(exc, MemoryError):
        die_of_memory()
    if isinstance(exc, RecursionError):
        raise LimitSignal("recursion", "maximum recursion depth exceeded") from None
    if isinstance(exc, GeneratorExit):
        return
    raise exc


class TenantTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus the limit guard at the top of ``except``/``finally``."""

    @staticmethod
    def _guard_stmt(anchor: ast.AST) -> ast.stmt:
        call = ast.Expr(ast.Call(func=ast.Name(GUARD_NAME, ast.Load()), args=[], keywords=[]))
        ast.copy_location(call, anchor)
        return ast.fix_missing_locations(call)

    @staticmethod
    def _owner_call() -> ast.Call:
        return ast.Call(func=ast.Name(OWNER_NAME, ast.Load()), args=[], keywords=[])

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        function = cast(ast.FunctionDef, super().visit_FunctionDef(node))
        statement = ast.Expr(self._owner_call())
        ast.copy_location(statement, function.body[0])
        has_docstring = (
            isinstance(function.body[0], ast.Expr)
            and isinstance(function.body[0].value, ast.Constant)
            and isinstance(function.body[0].value.value, str)
        )
        function.body.insert(1 if has_docstring else 0, ast.fix_missing_locations(statement))
        return function

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        function = cast(ast.Lambda, super().visit_Lambda(node))
        check = ast.BoolOp(op=ast.Or(), values=[self._owner_call(), function.body])
        function.body = ast.fix_missing_locations(ast.copy_location(check, function.body))
        return function

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        handler = cast(ast.ExceptHandler, super().visit_ExceptHandler(node))
        handler.body.insert(0, self._guard_stmt(handler))
        return handler

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        """Allow ``name: annotation [= value]`` (dataclasses, typed locals); not on attributes or
        subscripts, whose writes would bypass ``_write_``."""
        if not isinstance(node.target, ast.Name):
            self.error(node, "Annotated assignments are only allowed to plain names.")
            return node
        return cast(ast.AST, self.node_contents_visit(node))

    def visit_Try(self, node: ast.Try) -> ast.AST:
        statement = cast(ast.Try, super().visit_Try(node))
        if statement.finalbody:
            statement.finalbody.insert(0, self._guard_stmt(statement.finalbody[0]))
        return statement


def compile_module(source: str, filename: str) -> Any:
    """Compile one tenant module; returns a code object or raises ``CompileFailure``."""
    try:
        result = compile_restricted_exec(source, filename=filename, policy=TenantTransformer)
    except SyntaxError as exc:
        raise CompileFailure(f"{type(exc).__name__}: {exc.msg}"[:300], exc.lineno) from None
    except (RecursionError, MemoryError):
        raise CompileFailure("the module is too deeply nested to compile", None) from None
    except BaseException as exc:  # any other failure inside the compiler is a clean rejection
        raise CompileFailure(f"could not compile ({type(exc).__name__})", None) from None
    if result.errors:
        first = str(result.errors[0])
        match = re.match(r"Line (\d+):", first)
        return_line = int(match.group(1)) if match else None
        messages = [re.sub(r"^Line \d+: ", "", str(error))[:300] for error in result.errors[:5]]
        raise CompileFailure("; ".join(messages), return_line)
    return result.code


class CompileFailure(Exception):
    """A tenant module was rejected by the compiler (message is safe to show)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


# --- guards --------------------------------------------------------------------------------------

_raise = object()
safer_getattr_raise: Any = _safer_getattr_raise


def guarded_getattr(obj: Any, name: str, default: Any = _raise) -> Any:
    """``safer_getattr_raise`` plus: no ``AttributeError.obj`` (it leaks the object looked in)."""
    if name == "obj" and isinstance(obj, BaseException):
        raise AttributeError('"obj" of an exception is not readable in the sandbox')
    if default is _raise:
        return safer_getattr_raise(obj, name)
    return safer_getattr_raise(obj, name, default)


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except (AttributeError, NotImplementedError, TypeError):
        return False
    return True


_ITEM_TYPES: tuple[type, ...] = (
    dict,
    list,
    tuple,
    str,
    bytes,
    bytearray,
    range,
    collections.deque,
    collections.ChainMap,
    collections.UserDict,
    collections.UserList,
    re.Match,
)
_GENERIC_TYPES = frozenset({list, dict, tuple, set, frozenset, type})


def guarded_getitem(obj: Any, index: Any) -> Any:
    """Subscripts on data types (and typing generics) only."""
    if (
        isinstance(obj, _ITEM_TYPES)
        or (isinstance(obj, type) and obj in _GENERIC_TYPES)
        or _is_typing_object(obj)
    ):
        return obj[index]
    raise TypeError(f"'{type(obj).__name__}' objects are not subscriptable in the sandbox")


def _is_typing_object(obj: Any) -> bool:
    module = getattr(type(obj), "__module__", None)
    return module == "typing" or (isinstance(obj, type) and obj.__module__ == "typing")


def guarded_iter(obj: Any) -> Any:
    """Iterate data and tenant objects; refuse the sandbox's own proxies and facades."""
    if getattr(type(obj), "_tf_opaque", False):
        raise TypeError(f"'{type(obj).__name__}' object is not iterable in the sandbox")
    return iter(obj)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


_INPLACE_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "|=": operator.ior,
    "&=": operator.iand,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}
_INPLACE_SAFE: tuple[type, ...] = (
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    list,
    tuple,
    set,
    frozenset,
    dict,
    collections.deque,
    decimal.Decimal,
    fractions.Fraction,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``x op= y`` for built-in value types only."""
    func = _INPLACE_OPS.get(op)
    if func is None or not isinstance(target, _INPLACE_SAFE):
        raise TypeError(f"in-place {op} on '{type(target).__name__}' is not allowed in the sandbox")
    return func(target, value)


def bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > RANGE_MAX:
        raise ValueError(f"range of {len(r)} items exceeds the sandbox maximum of {RANGE_MAX}")
    return r


class _TenantMeta:
    """``__metaclass__`` for tenant classes: the real metaclass, plus writable instances.

    RestrictedPython rewrites ``class C(...)`` to ``class C(..., metaclass=__metaclass__)``. With
    ``full_write_guard`` an object accepts attribute writes only if it has ``_guarded_writes``; we
    set it on classes the tenant defines (so ``self.x = 1`` works in tenant classes) and nowhere else.
    """

    __slots__ = ()
    _tf_opaque = True

    @staticmethod
    def _meta(bases: tuple[Any, ...]) -> Any:
        meta: Any = type
        for base in bases:
            candidate = type(base)
            if issubclass(candidate, meta):
                meta = candidate
            elif not issubclass(meta, candidate):
                raise TypeError("metaclass conflict between the base classes")
        return meta

    def __prepare__(self, name: str, bases: tuple[Any, ...], **kwargs: Any) -> Any:
        return self._meta(bases).__prepare__(name, bases, **kwargs)

    def __call__(self, name: str, bases: tuple[Any, ...], namespace: Any, **kwargs: Any) -> Any:
        cls = self._meta(bases)(name, bases, namespace, **kwargs)
        setattr(cls, "_guarded_writes", True)  # noqa: B010 (the name is the protocol)
        return cls


TENANT_METACLASS = _TenantMeta()

_REMOVED_BUILTINS = frozenset(
    {
        "SystemExit",
        "KeyboardInterrupt",
        "id",
        "hash",
        "_getattr_",
        "eval",
        "exec",
        "compile",
        "open",
        "globals",
        "locals",
        "vars",
        "dir",
        "type",
        "object",
        "breakpoint",
        "input",
        "help",
        "memoryview",
    }
)
_EXCEPTIONS = sorted(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type)
    and issubclass(value, Exception)
    and not issubclass(value, BaseExceptionGroup)
    and not name.startswith("_")
)
"""Every built-in ``Exception`` class (host errors arrive as them), no exception groups."""

_EXTRA_BUILTINS = (
    "list",
    "dict",
    "set",
    "frozenset",
    "tuple",
    "sorted",
    "reversed",
    "enumerate",
    "zip",
    "map",
    "filter",
    "min",
    "max",
    "sum",
    "all",
    "any",
    "iter",
    "next",
    "bytes",
    "bytearray",
    "ascii",
    "bin",
    "super",
    "property",
    "staticmethod",
    "classmethod",
    "NotImplemented",
    "StopAsyncIteration",
    "RecursionError",
    "ModuleNotFoundError",
    "TimeoutError",
    "ConnectionError",
)


def make_builtins(import_hook: Callable[..., Any]) -> dict[str, Any]:
    """A fresh builtins dict for one tenant (never the shared ``safe_builtins``)."""
    result = {name: value for name, value in safe_builtins.items() if name not in _REMOVED_BUILTINS}
    for name in (*_EXTRA_BUILTINS, *_EXCEPTIONS):
        result[name] = getattr(builtins, name)
    result.update(
        {
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "range": bounded_range,
            "__import__": import_hook,
        }
    )
    assert not _REMOVED_BUILTINS & result.keys()
    return result


class ForeignTenantSignal(BaseException):
    """Tenant code was about to run while another tenant's invocation is current (for example a
    ``finally`` block of a generator finalized late). Not an ``Exception``; nothing of it runs."""


def tenant_guard(is_current: Callable[[], bool]) -> Callable[[], None]:
    """The ``_tf_guard_`` of one tenant: ``exc_guard``, and its code only runs in its own turn."""

    def _tf_guard_() -> None:
        if not is_current():
            raise ForeignTenantSignal()
        exc_guard()

    return _tf_guard_


def tenant_owner_check(is_current: Callable[[], bool]) -> Callable[[], None]:
    """The ``_tf_owner_`` of one tenant, called first in each of its functions and lambdas."""

    def _tf_owner_() -> None:
        if not is_current():
            raise ForeignTenantSignal()

    return _tf_owner_


def _no_owner_check() -> None:
    return None


def make_globals(
    module_name: str,
    tenant_builtins: dict[str, Any],
    print_factory: Callable[..., Any],
    guard: Callable[[], None] = exc_guard,
    owner: Callable[[], None] = _no_owner_check,
) -> dict[str, Any]:
    """Globals for one tenant module: its builtins and the guards RestrictedPython code calls."""
    return {
        "__builtins__": tenant_builtins,
        "__name__": module_name,
        "__metaclass__": TENANT_METACLASS,
        "_getattr_": guarded_getattr,
        "_write_": full_write_guard,
        "_getiter_": guarded_iter,
        "_getitem_": guarded_getitem,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": guarded_inplacevar,
        "_apply_": guarded_apply,
        "_print_": print_factory,
        GUARD_NAME: guard,
        OWNER_NAME: owner,
    }
