"""The PostgreSQL schema of the engine store: ordered migrations applied under an advisory lock.

Each entry of ``MIGRATIONS`` is applied once, in order, and recorded in ``schema_version``. That
table is keyed by component (``engine`` here) so other stores can keep their own versions in the
same PostgreSQL schema. All migrations pending at startup run in ONE transaction holding
``pg_advisory_xact_lock``: several processes starting at once serialize, and the later ones find
nothing left to do. Never edit a released migration; append a new one.

The tables mirror the SQLite store's (times are epoch ms in BIGINT; payloads stay TEXT so they are
stored byte for byte as the engine encoded them, never re-serialized the way JSONB would).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

COMPONENT = "engine"

MIGRATIONS: tuple[str, ...] = (
    # 1: instances, their journals and their buffered events.
    """
    CREATE TABLE instances (
        pk BIGSERIAL PRIMARY KEY,
        ns TEXT NOT NULL,
        id TEXT NOT NULL,
        workflow TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT,
        output TEXT,
        error_name TEXT,
        error_message TEXT,
        ckey TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        ended_at BIGINT,
        updated_at BIGINT NOT NULL,
        wake_at BIGINT,
        paused_wake_at BIGINT,
        waiting_event TEXT,
        retention_ms BIGINT,
        purge_at BIGINT,
        generation BIGINT NOT NULL DEFAULT 0,
        UNIQUE (ns, id)
    );
    CREATE INDEX ix_instances_wake ON instances (wake_at) WHERE wake_at IS NOT NULL;
    CREATE INDEX ix_instances_list ON instances (ns, created_at, pk);
    CREATE INDEX ix_instances_purge ON instances (purge_at) WHERE purge_at IS NOT NULL;
    CREATE TABLE steps (
        instance_pk BIGINT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        name TEXT NOT NULL,
        count INTEGER NOT NULL,
        state TEXT NOT NULL,
        start_at BIGINT NOT NULL,
        end_at BIGINT,
        output TEXT,
        error_name TEXT,
        error_message TEXT,
        wake_at BIGINT,
        event_type TEXT,
        config TEXT,
        attempts TEXT NOT NULL,
        PRIMARY KEY (instance_pk, seq)
    );
    CREATE TABLE events (
        pk BIGSERIAL PRIMARY KEY,
        instance_pk BIGINT NOT NULL,
        type TEXT NOT NULL,
        payload TEXT,
        received_at BIGINT NOT NULL,
        consumed_seq INTEGER
    );
    CREATE INDEX ix_events_pending ON events (instance_pk, type, pk) WHERE consumed_seq IS NULL;
    CREATE INDEX ix_events_instance ON events (instance_pk, consumed_seq);
    """,
    # 2: leases for many workers (owner, expiry in server epoch ms) and the affinity label.
    """
    ALTER TABLE instances ADD COLUMN affinity TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN lease_owner TEXT;
    ALTER TABLE instances ADD COLUMN lease_until BIGINT;
    CREATE INDEX ix_instances_ready ON instances (ckey, pk) WHERE wake_at = 0;
    CREATE INDEX ix_instances_leased ON instances (lease_owner, ckey) WHERE lease_owner IS NOT NULL;
    """,
    # 3: affinity grace. ``ready_at`` (server epoch ms) is when an instance last became claimable: set
    # by the column default on insert and by a trigger whenever wake_at becomes 0 or a lease on a
    # ready instance is released, so no write path can forget it. ``workers`` holds what each live
    # worker prefers (the affinities it holds warm), refreshed by its heartbeat.
    """
    ALTER TABLE instances ADD COLUMN ready_at BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE instances ALTER COLUMN ready_at SET DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    CREATE FUNCTION instances_set_ready_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.ready_at := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER instances_ready_at BEFORE UPDATE OF wake_at, lease_owner ON instances FOR EACH ROW
    WHEN (NEW.wake_at = 0 AND (OLD.wake_at IS DISTINCT FROM 0
                               OR (OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NULL)))
    EXECUTE FUNCTION instances_set_ready_at();
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        seen_at BIGINT NOT NULL,
        preferred TEXT[] NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema_name(schema: str) -> str:
    """Accept a plain lower-case identifier only, so it never needs quoting in SQL or search_path."""
    if not isinstance(schema, str) or _SCHEMA_NAME.fullmatch(schema) is None:
        raise ValueError(
            f"PostgreSQL schema name {schema!r} is invalid: use 1 to 63 lower-case letters, digits "
            "and '_', not starting with a digit"
        )
    return schema


async def migrate(conn: Any, schema: str) -> int:
    """Create ``schema`` if needed and apply the engine's pending migrations; returns the version reached."""
    return await apply_migrations(conn, schema, COMPONENT, MIGRATIONS)


async def apply_migrations(
    conn: Any,
    schema: str,
    component: str,
    migrations: Sequence[str],
    too_new: Callable[[str], Exception] = RuntimeError,
) -> int:
    """Apply ``component``'s pending ``migrations`` (version N is ``migrations[N - 1]``) in ``schema``.

    One runner for every component that shares a schema (the engine here, the dispatcher's control
    tables): they share the ``schema_version`` table, one row per (component, version). ``too_new``
    builds the error for a database newer than this code. Returns the version reached.
    """
    latest = len(migrations)
    async with conn.transaction():
        # Held until COMMIT; keyed by schema so unrelated schemas migrate independently.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"tenantflow:migrate:{schema}"
        )
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (component TEXT NOT NULL, version INTEGER NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        current: int = await conn.fetchval(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version WHERE component = $1", component
        )
        if current > latest:
            raise too_new(
                f"PostgreSQL schema {schema!r} has {component} schema version {current}, newer than this "
                f"tenantflow ({latest}); upgrade tenantflow"
            )
        for version in range(current + 1, latest + 1):
            await conn.execute(migrations[version - 1])
            await conn.execute(
                "INSERT INTO schema_version (component, version) VALUES ($1, $2)", component, version
            )
    return latest
