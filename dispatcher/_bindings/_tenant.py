"""``TenantBindings``: one tenant's ``env``, host side. The dispatcher's bridge calls ``call``.

A call is ``("env.<binding>.<method>", args)``. The order of checks is fixed: a malformed name or
an unknown binding (``AttributeError``, listing what exists), a binding the policy does not grant
(``BindingNotGranted``), an unknown method (``AttributeError``, listing the binding's methods), the
arguments against the method's signature (``TypeError``), then the method itself. Whatever goes
wrong leaves as ``HostCallError``; an unexpected exception is logged (name of the call only, never
its arguments) and reported to the guest as an internal error.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sandbox import JSON, HostCallError

from ._args import Signature
from ._db import DBBinding
from ._errors import NOT_GRANTED, echo, refuse
from ._fetch import FetchBinding
from ._kv import KVBinding, KVStore, SqliteKV
from ._policy import KNOWN_BINDINGS, BindingPolicy
from ._secrets import SecretsBinding
from ._storage import TenantStorage

if TYPE_CHECKING:
    from ._kv_pg import PostgresKVBackend

logger = logging.getLogger("dispatcher.bindings")

_TENANT_ID = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}", re.ASCII)
_DEFAULT_METHOD = {"fetch": "request"}
"""``env.fetch(...)`` is callable itself: the name ``env.fetch`` means ``env.fetch.request``."""
DB_ON_POSTGRES = (
    "env.db is not available on a scale-out (PostgreSQL) platform: the db binding keeps a SQLite "
    "database on each machine, so a step that runs on another machine would not see the rows and a "
    "machine that dies would lose them. Use env.kv, which every machine shares, or run the embedded "
    "(single-machine, SQLite) deployment to use env.db"
)
"""Why ``env.db`` is refused on a PostgreSQL platform (at policy time and at call time)."""


class _Binding(Protocol):
    @property
    def signatures(self) -> Mapping[str, Signature]: ...

    def invoke(self, method: str, args: dict[str, Any]) -> JSON: ...


class TenantBindings:
    """The bindings of one tenant: ``env.kv``, ``env.db``, ``env.fetch``, ``env.secrets``.

    ``call`` is synchronous and thread-safe (sandboxes call it from their worker threads). The
    database file ``data_dir/tenants/<tenant>.sqlite3`` is opened on first use. With ``shared_kv``
    (a PostgreSQL platform) ``env.kv`` lives in the shared database instead, and ``env.db`` is
    refused even when granted (``DB_ON_POSTGRES`` says why). ``close()`` is idempotent; calls after
    it fail with ``RuntimeError`` in the guest.
    """

    def __init__(
        self,
        tenant: str,
        policy: BindingPolicy,
        data_dir: Path,
        *,
        shared_kv: PostgresKVBackend | None = None,
    ) -> None:
        if not isinstance(tenant, str) or _TENANT_ID.fullmatch(tenant) is None:
            raise ValueError(f"invalid tenant id {tenant!r}")
        self.tenant = tenant
        self._policy = policy
        self._policy_lock = threading.Lock()
        self._closed = False
        self._storage = TenantStorage(
            Path(data_dir) / "tenants" / f"{tenant}.sqlite3",
            quota_bytes=policy.storage_quota_bytes,
            timeout_seconds=policy.db_timeout_seconds,
        )
        self._fetch = FetchBinding(self._current_policy)
        kv: KVStore = (
            SqliteKV(self._storage)
            if shared_kv is None
            else shared_kv.for_tenant(tenant, self._current_policy)
        )
        self._db_refusal = None if shared_kv is None else DB_ON_POSTGRES
        self._bindings: dict[str, _Binding] = {
            "kv": KVBinding(kv),
            "db": DBBinding(self._storage, self._current_policy),
            "fetch": self._fetch,
            "secrets": SecretsBinding(self._current_policy),
        }

    @property
    def policy(self) -> BindingPolicy:
        return self._policy

    def _current_policy(self) -> BindingPolicy:
        return self._policy

    @property
    def database_path(self) -> Path:
        """Where this tenant's SQLite file lives (it may not exist yet; with ``shared_kv`` it holds nothing)."""
        return self._storage.path

    def update_policy(self, policy: BindingPolicy) -> None:
        """Use ``policy`` from the next call on (grants, allowlist, secrets, limits)."""
        with self._policy_lock:
            self._policy = policy
            self._storage.configure(
                quota_bytes=policy.storage_quota_bytes, timeout_seconds=policy.db_timeout_seconds
            )

    def close(self) -> None:
        self._closed = True
        self._fetch.close()
        self._storage.close()

    def __enter__(self) -> TenantBindings:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, name: str, args: JSON) -> JSON:
        """Run ``env.<binding>.<method>`` with ``args``; raise ``HostCallError`` for any failure."""
        try:
            return self._call(name, args)
        except HostCallError:
            raise
        except Exception as exc:
            call_name = name if isinstance(name, str) and len(name) <= 64 else "<invalid name>"
            logger.error(
                "binding call %s of tenant %s failed: host bug", call_name, self.tenant, exc_info=exc
            )
            raise refuse(
                "HostError", f"{call_name} failed inside the host (a tenantflow bug, logged for the operator)"
            ) from None

    def _call(self, name: str, args: JSON) -> JSON:
        binding_name, method = self._parse(name)
        policy = self._policy
        binding = self._bindings[binding_name]
        if binding_name not in policy.granted:
            raise refuse(
                NOT_GRANTED,
                f"binding {binding_name!r} is not granted to this tenant; an operator can grant it in "
                f'the tenant policy (bindings: ["{binding_name}"])',
            )
        if binding_name == "db" and self._db_refusal is not None:
            raise refuse(NOT_GRANTED, f"binding 'db' is granted but cannot run here: {self._db_refusal}")
        signature = binding.signatures.get(method)
        if signature is None:
            methods = ", ".join(f"env.{binding_name}.{m}" for m in sorted(binding.signatures))
            raise refuse(
                "AttributeError", f"env.{binding_name} has no method {echo(method)}; it has {methods}"
            )
        if self._closed:
            raise refuse("RuntimeError", "this tenant's bindings are closed; the invocation is ending")
        return binding.invoke(method, signature.bind(args))

    def _parse(self, name: object) -> tuple[str, str]:
        available = ", ".join(f"env.{b}" for b in sorted(KNOWN_BINDINGS))
        if not isinstance(name, str) or not name.startswith("env."):
            raise refuse("AttributeError", f"{echo(name)} is not a binding call; bindings are {available}")
        parts = name.split(".")
        binding = parts[1]
        if binding not in KNOWN_BINDINGS:
            granted = ", ".join(sorted(self._policy.granted)) or "none"
            raise refuse(
                "AttributeError",
                f"env has no binding {echo(binding)}; bindings are {available} (granted to this tenant: {granted})",
            )
        if len(parts) == 2 and binding in _DEFAULT_METHOD:
            return binding, _DEFAULT_METHOD[binding]
        if len(parts) != 3:
            methods = ", ".join(f"env.{binding}.{m}" for m in sorted(self._bindings[binding].signatures))
            raise refuse("AttributeError", f"{echo(name)} is not a method; env.{binding} has {methods}")
        return binding, parts[2]
