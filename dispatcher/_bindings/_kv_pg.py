"""``env.kv`` on PostgreSQL: one table every machine of a scale-out platform shares.

Design note. On a PostgreSQL platform a tenant's instance may run its next step on another
machine, and a machine may die; a per-machine SQLite file would lose the tenant's keys or hide them
from the other machines. So the entries live in the table ``kv`` of the control schema, keyed by
``(tenant, key)``, with the key stored as the ``bytea`` of its UTF-8 (byte order is code point
order, as with SQLite's BINARY collation, and no collation or NUL character can make the two
stores disagree). Isolation between tenants is a ``tenant = $1`` clause here, not a file: every
statement of this module binds the tenant of the ``PostgresKV`` it runs for, which
``TenantBindings`` fixes at creation; no argument of the guest's names a tenant.

Quota: each entry counts ``len(utf8 key) + len(json text) + ENTRY_OVERHEAD_BYTES`` against
``storage_quota_bytes``, and ``kv_usage`` keeps each tenant's sum. ``kv_put`` and ``kv_delete``
(PL/pgSQL, migration 2 of ``_control_pg.py``) lock the tenant's usage row first, so concurrent
writers on any number of machines serialize per tenant and the sum stays exact; a put that would
grow the total past the quota stores nothing (shrinking or deleting always works, so a lowered
quota never traps a tenant). Each call is one statement, hence one atomic transaction.

How a sandbox thread talks to PostgreSQL. The bindings are called synchronously on sandbox worker
threads. The platform already runs asyncpg on its event loop, so a call hands its statement to that
loop (``run_coroutine_threadsafe``-style, in a fresh context so no guest context variable leaks into
host code) and waits for the answer, bounded by the tenant's ``db_timeout_seconds``. Considered: a
synchronous driver (psycopg) on the sandbox thread; it would need a new dependency and a second pool
of connections per process, for a saving of one loop hop (tens of microseconds) against a network
round trip; ``PostgresKVBackend.open`` keeps a small pool of its own so kv traffic never queues
behind the control store's. A call made on the loop's own thread would deadlock and is refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from sandbox import HostCallError
from sandbox._protocol import run_on_loop

from ._errors import QUOTA_EXCEEDED, refuse
from ._policy import PolicyGetter

log = logging.getLogger("dispatcher.bindings")

ENTRY_OVERHEAD_BYTES = 64
"""Bytes each entry counts against the quota besides its key and value (row and index overhead)."""
POOL_SIZE = 8
"""Connections of one process's kv pool: at most this many kv calls of the process run at once."""
_GRACE_SECONDS = 2.0
"""How much longer than the call's timeout a sandbox thread waits for the loop before giving up."""

_T = TypeVar("_T")


class PostgresKVBackend:
    """The process's connection to the shared kv table; hands out one ``PostgresKV`` per tenant.

    Open on the platform's event loop with ``await PostgresKVBackend.open(dsn, schema=...)`` (the
    schema must already be migrated by ``PostgresControlStore.open``). ``aclose()`` is idempotent.
    """

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop, schema: str) -> None:
        self._pool = pool
        self._loop = loop
        self.schema = schema
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, schema: str, pool_size: int = POOL_SIZE) -> PostgresKVBackend:
        import asyncpg

        settings = {"search_path": schema, "application_name": "tenantflow-kv"}
        # min_size=0: an API-only process, which never runs tenant code, holds no kv connection.
        # reset: every kv statement runs alone in autocommit and changes no session state, so the
        # pool's default reset query (RESET ALL, UNLISTEN, ...: a second round trip per call) is
        # skipped; asyncpg still rolls back a transaction left open by a cancelled call.
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=pool_size, server_settings=settings, reset=_nothing_to_reset
        )
        return cls(pool, asyncio.get_running_loop(), schema)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()

    def for_tenant(self, tenant: str, policy: PolicyGetter) -> PostgresKV:
        return PostgresKV(self, tenant, policy)

    def run(self, what: str, timeout: float, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """Run ``work(pool)`` on the loop from a sandbox thread, within ``timeout`` seconds."""
        if self._closed:
            raise refuse("RuntimeError", f"{what}: the platform is shutting down; the invocation is ending")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "PostgresKV was called on the event loop's thread; call it from a worker thread"
            )

        async def bounded() -> _T:
            return await asyncio.wait_for(work(self._pool), timeout)

        try:
            return _wait_on_loop(bounded(), self._loop, timeout + _GRACE_SECONDS)
        except HostCallError:
            raise
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise refuse(
                "TimeoutError",
                f"{what}: the call took longer than {timeout:g} s and was stopped; it may or may not "
                "have been applied, so retry it (put and delete are idempotent)",
            ) from None
        except Exception as exc:
            raise self._translate(what, exc) from None

    def _translate(self, what: str, exc: Exception) -> Exception:
        import asyncpg

        if isinstance(exc, asyncpg.QueryCanceledError):
            return refuse("TimeoutError", f"{what}: the database stopped the call; retry it")
        if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError) or (
            isinstance(exc, asyncpg.PostgresError)
            and str(getattr(exc, "sqlstate", "")).startswith(("08", "57"))
        ):
            log.warning("%s: the platform database is unavailable: %s", what, exc)
            return refuse(
                "ConnectionError",
                f"{what}: the platform's database could not be reached; the call may or may not have "
                "been applied, so retry it (put and delete are idempotent)",
            )
        if isinstance(exc, RuntimeError) and "closed" in str(exc):  # the loop closed under us
            return refuse("RuntimeError", f"{what}: the platform is shutting down; the invocation is ending")
        return exc  # a host bug: TenantBindings.call logs it and reports an internal error


class PostgresKV:
    """``KVStore`` of one tenant on the shared table (see the module docstring)."""

    def __init__(self, backend: PostgresKVBackend, tenant: str, policy: PolicyGetter) -> None:
        self._backend = backend
        self._tenant = tenant
        self._policy = policy

    def get(self, key: str) -> str | None:
        tenant, raw = self._tenant, key.encode("utf-8")

        async def work(pool: Any) -> str | None:
            value: str | None = await pool.fetchval(
                "SELECT value FROM kv WHERE tenant = $1 AND key = $2", tenant, raw
            )
            return value

        return self._run("env.kv.get", work)

    def put(self, key: str, text: str) -> None:
        policy = self._policy()
        raw = key.encode("utf-8")
        size = len(raw) + len(text.encode("utf-8")) + ENTRY_OVERHEAD_BYTES
        quota = policy.storage_quota_bytes
        tenant = self._tenant

        async def work(pool: Any) -> tuple[bool, int]:
            row = await pool.fetchrow("SELECT stored, used FROM kv_put($1, $2, $3, $4, $5)",
                                      tenant, raw, text, size, quota)  # fmt: skip
            return bool(row["stored"]), int(row["used"])

        stored, used = self._run("env.kv.put", work)
        if not stored:
            raise refuse(
                QUOTA_EXCEEDED,
                f"env.kv.put: the tenant's storage quota of {quota} bytes (counted across every "
                f"machine; {used} in use, this entry needs {size}) is full; nothing was written. "
                "Delete keys, or ask an operator to raise storage_quota_bytes in the tenant policy",
            )

    def delete(self, key: str) -> bool:
        tenant, raw = self._tenant, key.encode("utf-8")

        async def work(pool: Any) -> bool:
            return bool(await pool.fetchval("SELECT kv_delete($1, $2)", tenant, raw))

        return self._run("env.kv.delete", work)

    def keys(self, low: str, high: str | None, after: str | None, limit: int) -> list[str]:
        sql = "SELECT key FROM kv WHERE tenant = $1 AND key >= $2"
        params: list[Any] = [self._tenant, low.encode("utf-8")]
        if high is not None:
            params.append(high.encode("utf-8"))
            sql += f" AND key < ${len(params)}"
        if after is not None:
            params.append(after.encode("utf-8"))
            sql += f" AND key > ${len(params)}"
        params.append(limit)
        sql += f" ORDER BY key LIMIT ${len(params)}"

        async def work(pool: Any) -> list[str]:
            return [bytes(row[0]).decode("utf-8") for row in await pool.fetch(sql, *params)]

        return self._run("env.kv.list", work)

    def _run(self, what: str, work: Callable[[Any], Awaitable[_T]]) -> _T:
        return self._backend.run(what, self._policy().db_timeout_seconds, work)


async def _nothing_to_reset(conn: Any) -> None:
    return None


def _wait_on_loop(coro: Coroutine[Any, Any, _T], loop: asyncio.AbstractEventLoop, timeout: float) -> _T:
    """Run ``coro`` on ``loop`` from another thread, in a fresh context; wait at most ``timeout``."""
    try:
        return run_on_loop(coro, loop, timeout)
    except concurrent.futures.CancelledError:
        raise RuntimeError("the kv call was cancelled: the loop closed") from None
