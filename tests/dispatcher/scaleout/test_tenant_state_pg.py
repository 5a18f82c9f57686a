"""Tenant state that survives a machine: two platforms (two machines) on one PostgreSQL schema.

Each platform has its own data directory, as two machines would; the tenant code runs in the real
sandboxes. What one machine's instance writes through ``env.kv`` is read by an instance on the
other after the first is gone; the storage quota and the creation rate hold across both; ``env.db``
is refused with the reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatcher import OPERATOR, InvalidRequestError, Platform, RateLimitedError
from dispatcher._bindings import DB_ON_POSTGRES
from engine import Status
from tests.dispatcher.conftest import deploy, finish

from .conftest import PgPrefix

pytestmark = pytest.mark.postgres

WRITER = """
from tenantflow import env

def run(event, step):
    def write():
        env.kv.put("order:1", {"total": 42, "by": event["payload"]["machine"]})
        stored = 0
        try:
            for i in range(event["payload"]["fill"]):
                env.kv.put("fill:%s:%03d" % (event["payload"]["machine"], i), "v" * 4000)
                stored += 1
        except Exception as exc:  # QuotaExceeded (the class is not importable; its message says)
            return {"stored": stored, "quota": str(exc)}
        return {"stored": stored, "quota": None}
    return step.do("write", write)
"""

READER = """
from tenantflow import env

def run(event, step):
    return step.do("read", lambda: {"order": env.kv.get("order:1"),
                                    "keys": len(env.kv.list(prefix="fill:", limit=1000)["keys"])})
"""

USES_DB = """
from tenantflow import BindingNotGranted, env

def run(event, step):
    def work():
        env.kv.put("k", "kv works")
        try:
            env.db.execute("SELECT 1")
            db = "allowed"
        except BindingNotGranted as exc:
            db = "BindingNotGranted: " + str(exc)
        return {"kv": env.kv.get("k"), "db": db}
    return step.do("work", work)
"""

QUOTA = 64 * 1024


async def _open(data_dir: Path, pg: PgPrefix, **options: object) -> Platform:
    return await Platform.open(data_dir, db=pg.dsn, schema=pg.prefix, **options)  # type: ignore[arg-type]


async def _run(platform: Platform, workflow: str, instance_id: str, payload: object) -> object:
    await platform.create_instance(OPERATOR, "shop", workflow, payload, instance_id=instance_id)
    done = await finish(platform, "shop", instance_id, timeout=60)
    assert done.status == Status.COMPLETE, done.error
    return done.output


@pytest.mark.parametrize("backend", ["restricted", "wasm"])
async def test_kv_written_on_one_machine_is_read_on_another_after_the_first_is_gone(
    tmp_path: Path, pg_prefix: PgPrefix, backend: str
) -> None:
    policy = {"backend": backend, "bindings": ["kv"], "storage_quota_bytes": QUOTA}
    first = await _open(tmp_path / "machine-a", pg_prefix)
    try:
        await deploy(first, "shop", WRITER, workflow="writer", **policy)
        await deploy(first, "shop", READER, workflow="reader")
        written = await _run(first, "writer", "w1", {"machine": "a", "fill": 5})
        assert written == {"stored": 5, "quota": None}
    finally:
        await first.aclose()  # machine A is gone; its data directory holds no tenant state
    assert not (tmp_path / "machine-a" / "tenants").exists()
    second = await _open(tmp_path / "machine-b", pg_prefix)
    try:
        assert await _run(second, "reader", "r1", None) == {"order": {"total": 42, "by": "a"}, "keys": 5}
        # The quota counts what machine A stored: B fills only the rest of it.
        filled = await _run(second, "writer", "w2", {"machine": "b", "fill": 100})
        assert isinstance(filled, dict) and filled["quota"] is not None
        assert f"storage quota of {QUOTA} bytes (counted across every machine" in filled["quota"]
        entry = len("fill:a:000") + len('"' + "v" * 4000 + '"') + 64  # key + JSON + per-entry overhead
        order = len("order:1") + len('{"total":42,"by":"a"}') + 64
        assert 5 + filled["stored"] == (QUOTA - order) // entry == 16
        assert await _run(second, "reader", "r2", None) == {
            "order": {"total": 42, "by": "b"},
            "keys": 5 + filled["stored"],
        }
    finally:
        await second.aclose()
    assert not (tmp_path / "machine-b" / "tenants").exists()


async def test_kv_is_shared_by_two_live_machines(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    a = await _open(tmp_path / "machine-a", pg_prefix)
    b = await _open(tmp_path / "machine-b", pg_prefix)
    try:
        await deploy(a, "shop", WRITER, workflow="writer", backend="restricted", bindings=["kv"])
        await deploy(a, "shop", READER, workflow="reader")
        await b.refresh_tenants()
        await _run(a, "writer", "w1", {"machine": "a", "fill": 2})
        # Whichever machine claims the readers, they see the same state.
        outputs = [await _run(p, "reader", f"r{i}", None) for i, p in enumerate((a, b, a, b))]
        assert all(o == {"order": {"total": 42, "by": "a"}, "keys": 2} for o in outputs), outputs
    finally:
        await b.aclose()
        await a.aclose()


async def test_creation_rate_holds_across_machines(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    a = await _open(tmp_path / "api-a", pg_prefix, worker=False)
    b = await _open(tmp_path / "api-b", pg_prefix, worker=False)
    try:
        # One per second, bursts of one: a call arriving within the second after another is refused
        # (calls here take milliseconds, far less than the refill time of a token).
        await deploy(a, "shop", READER, workflow="reader", creation_rate=1)
        await b.refresh_tenants()
        await a.create_instance(OPERATOR, "shop", "reader")
        for platform in (b, a):  # a bucket per process would let b create one more
            with pytest.raises(RateLimitedError) as info:
                await platform.create_instance(OPERATOR, "shop", "reader")
            assert 0 < info.value.retry_after <= 1.0
        # A batch larger than the burst can never pass, and takes nothing.
        with pytest.raises(RateLimitedError):
            await a.create_instances(OPERATOR, "shop", "reader", [(None, None)] * 2)
        await asyncio.sleep(info.value.retry_after + 0.05)
        await b.create_instance(OPERATOR, "shop", "reader")  # refilled, for both machines
        with pytest.raises(RateLimitedError):
            await a.create_instance(OPERATOR, "shop", "reader")
        assert sum((await a.instance_counts(OPERATOR, "shop")).values()) == 2
    finally:
        await b.aclose()
        await a.aclose()


async def test_the_creation_rate_refills_at_the_policy_rate(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    a = await _open(tmp_path / "api-a", pg_prefix, worker=False)
    b = await _open(tmp_path / "api-b", pg_prefix, worker=False)
    try:
        await deploy(a, "shop", READER, workflow="reader", creation_rate=20)
        await b.refresh_tenants()
        created = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while created < 40 and loop.time() - started < 20:
            try:
                await (a, b)[created % 2].create_instance(OPERATOR, "shop", "reader")
                created += 1
            except RateLimitedError as exc:
                await asyncio.sleep(exc.retry_after)
        elapsed = loop.time() - started
        # 40 instances need the burst (20) plus one second of refill (20/s), whichever machine asks;
        # per-machine buckets would have allowed them in about half a second. A slow machine only
        # makes elapsed longer, never the bound tighter.
        assert created == 40
        assert created <= 20 + 20 * elapsed + 1, elapsed
    finally:
        await b.aclose()
        await a.aclose()


async def test_granting_db_is_refused_on_postgres_with_the_reason(
    tmp_path: Path, pg_prefix: PgPrefix
) -> None:
    platform = await _open(tmp_path / "machine-a", pg_prefix, worker=False)
    try:
        with pytest.raises(InvalidRequestError) as info:
            await platform.create_tenant(OPERATOR, "shop", policy={"bindings": ["kv", "db"]})
        assert info.value.field == "policy.bindings"
        assert "SQLite database on each machine" in info.value.message and "env.kv" in info.value.message
        assert [t.id for t in await platform.list_tenants(OPERATOR)] == []  # nothing was created
        await platform.create_tenant(OPERATOR, "shop", policy={"bindings": ["kv"]})
        with pytest.raises(InvalidRequestError, match="cannot grant 'db'"):
            await platform.update_policy(OPERATOR, "shop", {"bindings": ["kv", "db"]})
        assert (await platform.get_tenant(OPERATOR, "shop")).policy.bindings == {"kv"}
    finally:
        await platform.aclose()


@pytest.mark.parametrize("backend", ["restricted", "wasm"])
async def test_an_existing_policy_granting_db_fails_at_call_time_with_the_reason(
    tmp_path: Path, pg_prefix: PgPrefix, backend: str
) -> None:
    platform = await _open(tmp_path / "machine-a", pg_prefix)
    try:
        await deploy(platform, "shop", USES_DB, backend=backend, bindings=["kv"])
        # A policy written before (or by an embedded platform on this database) that grants db.
        tenant = await platform.get_tenant(OPERATOR, "shop")
        from dataclasses import replace

        stored = await platform.control.update_tenant(
            "shop", policy=replace(tenant.policy, bindings=frozenset({"kv", "db"}))
        )
        await platform.refresh_tenants()
        assert (await platform.get_tenant(OPERATOR, "shop")).policy.bindings == stored.policy.bindings
        output = await _run(platform, "flow", "i1", None)
        assert isinstance(output, dict) and output["kv"] == "kv works"
        assert output["db"].startswith("BindingNotGranted: binding 'db' is granted but cannot run here")
        assert DB_ON_POSTGRES in output["db"]
        # Its other fields may still change; re-granting db explicitly is refused.
        await platform.update_policy(OPERATOR, "shop", {"creation_rate": 50})
        with pytest.raises(InvalidRequestError):
            await platform.update_policy(OPERATOR, "shop", {"bindings": ["db"]})
    finally:
        await platform.aclose()
    assert not (tmp_path / "machine-a" / "tenants").exists()
