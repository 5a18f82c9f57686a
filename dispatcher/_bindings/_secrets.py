"""``env.secrets``: read-only values an operator set in the tenant policy.

A value leaves the host only as the return value of ``get``. Errors name at most the secret the
tenant asked for, never a value and never the other names; nothing here logs.
"""

from __future__ import annotations

from typing import Any

from sandbox import JSON

from ._args import Param, Signature, want_str
from ._errors import echo, refuse
from ._policy import PolicyGetter

MAX_NAME_CHARS = 256

SIGNATURES = {
    "get": Signature("env.secrets.get", (Param("name"),)),
    "list": Signature("env.secrets.list"),
}


class SecretsBinding:
    """The host side of ``env.secrets``."""

    signatures = SIGNATURES

    def __init__(self, policy: PolicyGetter) -> None:
        self._policy = policy

    def invoke(self, method: str, args: dict[str, Any]) -> JSON:
        if method == "get":
            return self.get(**args)
        return self.list()

    def get(self, name: object) -> str:
        name = want_str(name, "env.secrets.get: name", max_chars=MAX_NAME_CHARS)
        value = self._policy().secrets.get(name)
        if value is None:
            raise refuse(
                "KeyError",
                f"no secret named {echo(name)} is set for this tenant; an operator can add it to the "
                "tenant policy (secrets), and env.secrets.list() shows the names that are set",
            )
        return value

    def list(self) -> list[str]:
        return sorted(self._policy().secrets)
