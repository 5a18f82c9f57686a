"""Binding arguments: from the guest's JSON to checked Python values.

The guest SDK sends either a plain keyword object (``{"key": "a"}``) or the positional form
(``{"args": ["a"], "kwargs": {}}``); a bare JSON list is taken as positional arguments too. No
binding method has a parameter named ``args`` or ``kwargs``, so the two forms cannot be confused.
Errors name the method's signature, the way Python's own ``TypeError`` does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sandbox import JSON, HostCallError

from ._errors import echo, refuse


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Final = _Required()


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a binding method."""

    name: str
    default: Any = REQUIRED
    """A JSON default (copied on every call), or ``REQUIRED``."""

    def __str__(self) -> str:
        return self.name if self.default is REQUIRED else f"{self.name}={self.default!r}"


@dataclass(frozen=True, slots=True)
class Signature:
    """The parameters of ``env.<binding>.<method>``, in positional order."""

    qualname: str
    params: tuple[Param, ...] = ()

    def __str__(self) -> str:
        return f"{self.qualname}({', '.join(str(p) for p in self.params)})"

    def bind(self, args: JSON) -> dict[str, Any]:
        """Map the guest's arguments onto the parameters; every problem is a ``TypeError``."""
        positional, keywords = self._split(args)
        if len(positional) > len(self.params):
            raise self._error(f"takes at most {len(self.params)} arguments ({len(positional)} given)")
        bound: dict[str, Any] = {p.name: value for p, value in zip(self.params, positional, strict=False)}
        names = {p.name for p in self.params}
        for name, value in keywords.items():
            if name not in names:
                raise self._error(f"got an unexpected argument {echo(name)}")
            if name in bound:
                raise self._error(f"got multiple values for argument {name!r}")
            bound[name] = value
        for param in self.params:
            if param.name not in bound:
                if param.default is REQUIRED:
                    raise self._error(f"is missing the required argument {param.name!r}")
                bound[param.name] = copy.deepcopy(param.default)
        return bound

    def _split(self, args: JSON) -> tuple[list[Any], Mapping[str, Any]]:
        if args is None:
            return [], {}
        if isinstance(args, list):
            return args, {}
        if not isinstance(args, dict):
            raise self._error(
                'arguments must be a JSON object of keyword arguments or {"args": [...], "kwargs": {...}}'
            )
        if args and set(args) <= {"args", "kwargs"}:
            positional = args.get("args", [])
            keywords = args.get("kwargs", {})
            if not isinstance(positional, list) or not isinstance(keywords, dict):
                raise self._error('"args" must be a JSON list and "kwargs" a JSON object')
            return positional, keywords
        return [], args

    def _error(self, what: str) -> HostCallError:
        return refuse("TypeError", f"{self} {what}")


# --------------------------------------------------------------------------- value checks


def want_str(value: object, what: str, *, max_chars: int, allow_empty: bool = False) -> str:
    """A str of at most ``max_chars`` characters that encodes to UTF-8."""
    if not isinstance(value, str):
        raise refuse("TypeError", f"{what} must be a str, not {type(value).__name__}")
    if not value and not allow_empty:
        raise refuse("ValueError", f"{what} must not be empty")
    if len(value) > max_chars:
        raise refuse("ValueError", f"{what} is {len(value)} characters long; the limit is {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(
            "ValueError", f"{what} contains an unpaired surrogate; it must be valid Unicode"
        ) from None
    return value


def want_int(value: object, what: str, *, low: int, high: int) -> int:
    """An int (not a bool) within ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise refuse("TypeError", f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise refuse("ValueError", f"{what} must be between {low} and {high}, got {value}")
    return value
