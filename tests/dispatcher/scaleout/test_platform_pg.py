"""A whole platform on PostgreSQL: every store in the database, local caches only in data_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher import OPERATOR, DatabaseUnavailableError, Platform
from dispatcher._platform import affinity_tag, redact_dsn
from engine import Status
from sandbox import create_backend
from tests.dispatcher.conftest import deploy, finish
from tests.dispatcher.test_end_to_end import _run_order_flow

from .conftest import PgPrefix

pytestmark = pytest.mark.postgres


async def _open(data_dir: Path, pg: PgPrefix, **options: object) -> Platform:
    return await Platform.open(data_dir, db=pg.dsn, schema=pg.prefix, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["wasm", "restricted"])
async def test_order_flow_on_postgres(tmp_path: Path, pg_prefix: PgPrefix, backend: str) -> None:
    platform = await _open(tmp_path / "data", pg_prefix)
    try:
        await platform.create_tenant(OPERATOR, "shop", policy={"backend": backend})
        await _run_order_flow(platform)
        assert platform.cache.stats.cold_starts >= 1 and platform.cache.stats.hits >= 1
        metrics = platform.metrics()
        assert metrics["artifact_cache"]["misses"] >= 1
        from dispatcher.api._metrics import HttpMetrics, render

        text = await render(platform, HttpMetrics())
        for series in ("tenantflow_claims_total", "tenantflow_claims_preferred_total",
                       "tenantflow_warm_hit_ratio", "tenantflow_artifact_cache_misses_total"):  # fmt: skip
            assert f"\n{series} " in text, series
    finally:
        await platform.aclose()
    # Nothing but local caches in the data directory.
    assert {p.name for p in (tmp_path / "data").iterdir()} <= {"artifact-cache", "tenants"}
    assert list((tmp_path / "data" / "artifact-cache" / "bundles").glob("*.json"))


async def test_state_is_shared_by_every_process_on_the_database(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    backend = create_backend("inprocess")
    backends = {"wasm": backend, "restricted": backend}
    first = await _open(tmp_path / "a", pg_prefix, backends=backends)
    try:
        token = await deploy(first, "acme", "def run(event, step):\n    return step.do('s', lambda: 42)\n")
        operator = await first.ensure_operator_token()
        assert operator is not None
        instance = await first.create_instance(OPERATOR, "acme", "flow", None, instance_id="i1")
        assert (await finish(first, "acme", instance.id)).output == 42
    finally:
        await first.aclose()
    second = await _open(tmp_path / "b", pg_prefix, backends=backends)
    try:
        assert (await second.authenticate(token)).tenant == "acme"
        assert (await second.authenticate(operator)).is_operator
        assert await second.ensure_operator_token() is None  # one exists in the database
        assert (await second.get_instance(OPERATOR, "acme", "flow", "i1")).output == 42
        assert [v.number for v in await second.list_versions(OPERATOR, "acme", "flow")] == [1]
    finally:
        await second.aclose()


async def test_instances_carry_their_affinity_tag(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    backend = create_backend("inprocess")
    platform = await _open(tmp_path / "a", pg_prefix, backends={"wasm": backend, "restricted": backend})
    try:
        await deploy(platform, "acme", "def run(event, step):\n    return step.do('s', lambda: 1)\n")
        version = await platform.resolve_version(OPERATOR, "acme", "flow", "latest")
        await platform.create_instance(OPERATOR, "acme", "flow", None, instance_id="i1")
        await finish(platform, "acme", "i1")
        stored = await platform.engine.get("acme", "i1")
        assert stored.affinity == affinity_tag("acme", version.digest) == f"acme@{version.digest}"
        assert platform.warm_affinity() == {stored.affinity}
        affinity = platform.metrics()["affinity"]
        assert affinity["claims"] >= 1 and affinity["preferred_rate"] is not None
    finally:
        await platform.aclose()


async def test_an_api_only_platform_runs_nothing_and_a_worker_does(
    tmp_path: Path, pg_prefix: PgPrefix
) -> None:
    backend = create_backend("inprocess")
    backends = {"wasm": backend, "restricted": backend}
    api = await _open(tmp_path / "api", pg_prefix, backends=backends, worker=False)
    worker: Platform | None = None
    try:
        await deploy(api, "acme", "def run(event, step):\n    return step.do('s', lambda: 'ran')\n")
        await api.create_instance(OPERATOR, "acme", "flow", None, instance_id="i1")
        with pytest.raises(TimeoutError):
            await api.engine.wait("acme", "i1", statuses={Status.COMPLETE}, timeout=1.5)
        assert api.executor.invocations == 0 and api.metrics()["worker"] is False
        worker = await _open(tmp_path / "worker", pg_prefix, backends=backends)
        done = await finish(api, "acme", "i1")
        assert done.status == Status.COMPLETE and done.output == "ran"
        assert worker.executor.invocations >= 1 and api.executor.invocations == 0
    finally:
        if worker is not None:
            await worker.aclose()
        await api.aclose()


async def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot use the database postgresql://u:\\*\\*\\*@"):
        await Platform.open(tmp_path, db="postgresql://u:secret@127.0.0.1:1/test")
    with pytest.raises(DatabaseUnavailableError, match="expected a DSN like postgresql://"):
        await Platform.open(tmp_path, db="mysql://localhost/x")
    with pytest.raises(ValueError, match="schema name"):
        await Platform.open(tmp_path, db="postgresql://127.0.0.1:1/x", schema="Not-Valid")


async def test_a_missing_database_is_a_clear_error(tmp_path: Path, pg_prefix: PgPrefix) -> None:
    dsn = pg_prefix.dsn.rsplit("/", 1)[0] + "/no_such_database_here"
    with pytest.raises(DatabaseUnavailableError, match="no_such_database_here"):
        await Platform.open(tmp_path, db=dsn)


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://me:pw@host:5432/db") == "postgresql://me:***@host:5432/db"
    assert redact_dsn("postgresql://me@host/db") == "postgresql://me@host/db"
