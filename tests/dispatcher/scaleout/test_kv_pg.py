"""env.kv on PostgreSQL: the binding as a sandbox thread calls it, against the real server.

Each "machine" is a ``PostgresKVBackend`` with its own connection pool; the calls run on worker
threads (``asyncio.to_thread``), as sandbox threads make them, and hop to the test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher._bindings import DB_ON_POSTGRES, BindingPolicy, TenantBindings
from dispatcher._bindings._kv_pg import ENTRY_OVERHEAD_BYTES, PostgresKVBackend
from dispatcher._control_pg import SCHEMA_VERSION, PostgresControlStore
from sandbox import HostCallError
from tests.conftest import run_in_thread

from .conftest import _drop

pytestmark = pytest.mark.postgres

ALL = frozenset({"kv", "db", "fetch", "secrets"})
QUOTA = 64 * 1024


class Machines:
    """Two kv backends (two machines) on one fresh control schema, and bindings made on either."""

    def __init__(self, dsn: str, schema: str, tmp_path: Path) -> None:
        self.dsn, self.schema, self.tmp_path = dsn, schema, tmp_path
        self.backends: list[PostgresKVBackend] = []
        self.made: list[TenantBindings] = []

    def bindings(self, machine: int = 0, tenant: str = "acme", **fields: Any) -> TenantBindings:
        fields.setdefault("granted", ALL)
        made = TenantBindings(
            tenant, BindingPolicy(**fields), self.tmp_path / f"m{machine}", shared_kv=self.backends[machine]
        )
        self.made.append(made)
        return made


@pytest.fixture
async def machines(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Machines]:
    schema = f"tf_test_{uuid.uuid4().hex[:12]}_control"
    control = await PostgresControlStore.open(pg_dsn, schema=schema)  # migrates: creates kv
    made = Machines(pg_dsn, schema, tmp_path)
    try:
        for _ in range(2):
            made.backends.append(await PostgresKVBackend.open(pg_dsn, schema=schema))
        yield made
    finally:
        for bindings in made.made:
            bindings.close()
        for backend in made.backends:
            await backend.aclose()
        await control.aclose()
        run_in_thread(_drop(pg_dsn, [schema]))


async def call(bindings: TenantBindings, name: str, args: Any = None) -> Any:
    return await asyncio.to_thread(bindings.call, name, args)


async def refusal(bindings: TenantBindings, name: str, args: Any = None) -> HostCallError:
    with pytest.raises(HostCallError) as info:
        await call(bindings, name, args)
    return info.value


async def put(bindings: TenantBindings, key: str, value: Any) -> None:
    assert await call(bindings, "env.kv.put", {"key": key, "value": value}) is None


async def usage(machines: Machines, tenant: str) -> tuple[int, int]:
    """(bytes recorded in kv_usage, sum of the entries' sizes) for ``tenant``."""
    import asyncpg

    conn = await asyncpg.connect(machines.dsn, server_settings={"search_path": machines.schema})
    try:
        recorded = await conn.fetchval("SELECT bytes FROM kv_usage WHERE tenant = $1", tenant)
        summed = await conn.fetchval("SELECT COALESCE(SUM(size), 0) FROM kv WHERE tenant = $1", tenant)
    finally:
        await conn.close()
    return int(recorded or 0), int(summed)


def test_the_migration_adds_a_version() -> None:
    assert SCHEMA_VERSION == 2


async def test_put_get_delete_on_one_machine_read_on_the_other(machines: Machines) -> None:
    a, b = machines.bindings(0), machines.bindings(1)
    assert await call(b, "env.kv.get", {"key": "a"}) is None
    await put(a, "a", {"n": 1, "list": [1, 2.5, "x", None, True]})
    assert await call(b, "env.kv.get", {"key": "a"}) == {"n": 1, "list": [1, 2.5, "x", None, True]}
    await put(b, "a", "replaced")
    assert await call(a, "env.kv.get", ["a"]) == "replaced"
    assert await call(a, "env.kv.delete", {"key": "a"}) is True
    assert await call(b, "env.kv.delete", {"key": "a"}) is False
    assert await call(b, "env.kv.get", {"key": "a"}) is None
    await put(a, "n", None)
    assert await call(b, "env.kv.list", {}) == {"keys": ["n"], "cursor": None}
    # Nothing was written to either machine's data directory.
    assert not (machines.tmp_path / "m0" / "tenants").exists()
    assert not (machines.tmp_path / "m1" / "tenants").exists()


async def test_list_prefix_order_and_pagination(machines: Machines) -> None:
    env = machines.bindings()
    keys = [f"user:{i:03d}" for i in range(25)] + ["user", "user;", "users:1", "other:1", "usEr:x"]
    for key in keys:
        await put(env, key, 1)
    seen: list[str] = []
    cursor = None
    while True:
        page = await call(
            machines.bindings(1), "env.kv.list", {"prefix": "user:", "limit": 10, "cursor": cursor}
        )
        assert len(page["keys"]) <= 10
        seen += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == sorted(k for k in keys if k.startswith("user:"))
    assert await call(env, "env.kv.list", {"limit": 1000}) == {"keys": sorted(keys), "cursor": None}
    first = await call(env, "env.kv.list", {"prefix": "user:", "limit": 25})
    assert len(first["keys"]) == 25 and first["cursor"] is None  # an exact page has no extra cursor


async def test_code_point_order_unicode_nul_and_patterns(machines: Machines) -> None:
    env = machines.bindings()
    keys = ["é", "éa", "é\U0010ffff", "ê", "\U0010ffff", "\U0010ffffz", "\ud7ffa", "\ue000", "a\x00b", "a%b",
            "axb", "a_b", "a_c", "Z", "~"]  # fmt: skip
    for key in keys:
        await put(env, key, key)
    assert (await call(env, "env.kv.list", {"limit": 100}))["keys"] == sorted(keys)
    assert (await call(env, "env.kv.list", {"prefix": "é"}))["keys"] == ["é", "éa", "é\U0010ffff"]
    assert (await call(env, "env.kv.list", {"prefix": "\U0010ffff"}))["keys"] == ["\U0010ffff", "\U0010ffffz"]
    assert (await call(env, "env.kv.list", {"prefix": "\ud7ff"}))["keys"] == ["\ud7ffa"]
    assert (await call(env, "env.kv.list", {"prefix": "a%"}))["keys"] == ["a%b"]
    assert (await call(env, "env.kv.list", {"prefix": "a_"}))["keys"] == ["a_b", "a_c"]
    assert (await call(env, "env.kv.list", {"prefix": "a\x00"}))["keys"] == ["a\x00b"]
    assert await call(env, "env.kv.get", {"key": "a\x00b"}) == "a\x00b"


async def test_same_errors_and_limits_as_sqlite(machines: Machines) -> None:
    env = machines.bindings()
    cases: list[tuple[str, Any, str]] = [
        ("env.kv.get", {"key": ""}, "ValueError"),
        ("env.kv.get", {"key": "x" * 513}, "ValueError"),
        ("env.kv.get", {"key": 5}, "TypeError"),
        ("env.kv.put", {"key": "a", "value": float("inf")}, "TypeError"),
        ("env.kv.put", {"key": "a", "value": "x" * (1024 * 1024 + 1)}, "ValueError"),
        ("env.kv.list", {"limit": 1001}, "ValueError"),
        ("env.kv.list", {"cursor": "!!"}, "ValueError"),
        ("env.kv.nope", {}, "AttributeError"),
    ]
    for name, args, type_name in cases:
        assert (await refusal(env, name, args)).type_name == type_name, (name, args)
    await put(env, "k" * 512, "x" * (1024 * 1024 - 2))  # the largest key and value fit
    assert await call(env, "env.kv.get", {"key": "k" * 512}) == "x" * (1024 * 1024 - 2)


async def test_quota_is_counted_across_machines(machines: Machines) -> None:
    a = machines.bindings(0, storage_quota_bytes=QUOTA)
    b = machines.bindings(1, storage_quota_bytes=QUOTA)
    entry = len("k00") + len('"' + "v" * 4000 + '"') + ENTRY_OVERHEAD_BYTES
    stored = 0
    with pytest.raises(HostCallError) as info:
        for i in range(100):
            await put((a, b)[i % 2], f"k{i:02d}", "v" * 4000)
            stored += 1
    assert stored == QUOTA // entry  # not twice that: both machines count against one quota
    error = info.value
    assert error.type_name == "QuotaExceeded"
    assert str(QUOTA) in error.message and "storage_quota_bytes" in error.message
    assert "nothing was written" in error.message and "every machine" in error.message
    assert await call(a, "env.kv.get", {"key": f"k{stored:02d}"}) is None
    assert await usage(machines, "acme") == (stored * entry, stored * entry)
    # Overwriting with a smaller value and deleting always work; the freed room is usable anywhere.
    await put(a, "k00", "small")
    assert await call(b, "env.kv.delete", {"key": "k01"}) is True
    await put(a, "fresh", "v" * 4000)
    recorded, summed = await usage(machines, "acme")
    assert recorded == summed <= QUOTA


async def test_a_lowered_quota_refuses_growth_but_not_shrinking(machines: Machines) -> None:
    env = machines.bindings(storage_quota_bytes=4 * QUOTA)
    for i in range(20):
        await put(env, f"k{i}", "v" * 4000)
    env.update_policy(BindingPolicy(granted=ALL, storage_quota_bytes=QUOTA))
    assert (await refusal(env, "env.kv.put", {"key": "new", "value": 1})).type_name == "QuotaExceeded"
    await put(env, "k0", "v" * 10)  # shrinks: allowed although still over the quota
    assert await call(env, "env.kv.delete", {"key": "k1"}) is True
    env.update_policy(BindingPolicy(granted=ALL, storage_quota_bytes=4 * QUOTA))
    await put(env, "new", 1)  # a raised quota applies at once


async def test_concurrent_writers_on_two_machines_keep_the_count_exact(machines: Machines) -> None:
    machine = [machines.bindings(0), machines.bindings(1)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        env = machine[n % 2]
        try:
            for i in range(25):
                env.call("env.kv.put", {"key": f"t{n}:{i:02d}", "value": [n, i] * (i + 1)})
                env.call("env.kv.put", {"key": "shared", "value": "s" * (n * 100 + i)})
                if i % 3 == 0:
                    env.call("env.kv.delete", {"key": f"t{n}:{i:02d}"})
                    env.call("env.kv.delete", {"key": "shared"})
        except BaseException as exc:
            errors.append(exc)

    def run_all() -> None:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await asyncio.to_thread(run_all)
    assert errors == []
    for n in range(8):
        keys = (await call(machine[1], "env.kv.list", {"prefix": f"t{n}:"}))["keys"]
        assert keys == [f"t{n}:{i:02d}" for i in range(25) if i % 3]
    recorded, summed = await usage(machines, "acme")
    assert recorded == summed > 0


async def test_tenants_never_see_each_other(machines: Machines) -> None:
    a = machines.bindings(0, tenant="tenant-a")
    b = machines.bindings(1, tenant="tenant-b")
    await put(a, "secret-plan", "A's")
    assert await call(b, "env.kv.get", {"key": "secret-plan"}) is None
    assert (await call(b, "env.kv.list", {}))["keys"] == []
    assert await call(b, "env.kv.delete", {"key": "secret-plan"}) is False
    await put(b, "secret-plan", "B's")
    assert await call(a, "env.kv.get", {"key": "secret-plan"}) == "A's"


async def test_db_is_refused_with_the_reason(machines: Machines) -> None:
    env = machines.bindings()
    error = await refusal(env, "env.db.execute", {"sql": "SELECT 1"})
    assert error.type_name == "BindingNotGranted"
    assert DB_ON_POSTGRES in error.message and "env.kv" in error.message
    assert not (machines.tmp_path / "m0" / "tenants").exists()  # no SQLite file was made
    ungranted = machines.bindings(tenant="other", granted=frozenset({"kv"}))
    assert "not granted" in (await refusal(ungranted, "env.db.execute", {"sql": "SELECT 1"})).message


async def test_a_call_stuck_on_a_lock_times_out_and_writes_nothing(machines: Machines) -> None:
    import asyncpg

    env = machines.bindings(db_timeout_seconds=0.5)
    await put(env, "before", 1)
    blocker = await asyncpg.connect(machines.dsn, server_settings={"search_path": machines.schema})
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT * FROM kv_usage WHERE tenant = 'acme' FOR UPDATE")
            started = asyncio.get_running_loop().time()
            error = await refusal(env, "env.kv.put", {"key": "stuck", "value": 2})
            waited = asyncio.get_running_loop().time() - started
            assert error.type_name == "TimeoutError" and "0.5 s" in error.message
            assert 0.4 < waited < 3
            assert await call(env, "env.kv.get", {"key": "before"}) == 1  # reads do not wait
    finally:
        await blocker.close()
    assert await call(env, "env.kv.get", {"key": "stuck"}) is None
    recorded, summed = await usage(machines, "acme")
    assert recorded == summed
    await put(env, "after", 3)  # the pool is healthy again


async def test_closed_bindings_and_backend_refuse_cleanly(machines: Machines) -> None:
    env = machines.bindings()
    await put(env, "k", 1)
    env.close()
    assert (await refusal(env, "env.kv.get", {"key": "k"})).type_name == "RuntimeError"
    other = machines.bindings(1)
    await machines.backends[1].aclose()
    error = await refusal(other, "env.kv.get", {"key": "k"})
    assert error.type_name == "RuntimeError" and "shutting down" in error.message


async def test_a_call_on_the_event_loop_thread_is_a_host_error_not_a_deadlock(machines: Machines) -> None:
    env = machines.bindings()
    call_now: Callable[..., Any] = env.call
    with pytest.raises(HostCallError) as info:
        call_now("env.kv.get", {"key": "k"})
    assert info.value.type_name == "HostError"


async def test_an_unreachable_database_is_a_connection_error_the_tenant_can_retry(tmp_path: Path) -> None:
    # min_size=0: opening connects nothing, so a server that is down shows at the first call.
    backend = await PostgresKVBackend.open("postgresql://postgres@127.0.0.1:1/test", schema="tf_nowhere")
    env = TenantBindings("acme", BindingPolicy(granted=ALL), tmp_path, shared_kv=backend)
    try:
        error = await refusal(env, "env.kv.put", {"key": "k", "value": 1})
        assert error.type_name == "ConnectionError" and "retry" in error.message
        assert "127.0.0.1" not in error.message  # the guest learns nothing about the host's network
    finally:
        env.close()
        await backend.aclose()
