"""``tenantflow worker``: a worker process on a shared PostgreSQL database (no HTTP).

It claims runnable instances from the database and runs them in this machine's sandboxes until
SIGINT or SIGTERM, then hands the instances it was running back (the engine releases its leases).
``check_database`` also serves ``tenantflow serve --db``: it opens (and migrates) the stores once
before anything else starts, so a bad DSN or an unreachable server is one clear line, not a trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from .._errors import DatabaseUnavailableError
from .._platform import Platform, default_data_dir, redact_dsn

_HINT = "check the DSN (--db or $TENANTFLOW_DB) and that PostgreSQL is running and reachable"


def database_of(args: argparse.Namespace) -> str | None:
    db: str | None = args.db or os.environ.get("TENANTFLOW_DB") or None
    return db


async def _check(db: str, schema: str, data_dir: Path) -> None:
    platform = await Platform.open(data_dir, db=db, schema=schema, start=False)
    await platform.aclose()


def check_database(db: str, schema: str, data_dir: Path) -> str | None:
    """None if the platform's stores open on ``db``; else what went wrong, for the user."""
    try:
        asyncio.run(_check(db, schema, data_dir))
    except DatabaseUnavailableError as exc:
        return f"{exc}\n  {_HINT}"
    except (ValueError, ImportError) as exc:
        return str(exc)
    return None


def worker(args: argparse.Namespace) -> int:
    db = database_of(args)
    if db is None:
        print("tenantflow worker: --db postgresql://... (or $TENANTFLOW_DB) is required", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        return asyncio.run(_work(db, args.schema, data_dir))
    except KeyboardInterrupt:
        return 130


async def _work(db: str, schema: str, data_dir: Path) -> int:
    try:
        platform = await Platform.open(data_dir, db=db, schema=schema)
    except DatabaseUnavailableError as exc:
        print(f"tenantflow worker: {exc}\n  {_HINT}", file=sys.stderr)
        return 1
    except (ValueError, ImportError) as exc:
        print(f"tenantflow worker: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker_id = getattr(platform.engine, "worker_id", None) or f"pid {os.getpid()}"
    print(f"tenantflow: worker {worker_id} on {redact_dsn(db)} (schema prefix {schema!r}), "
          f"local caches in {data_dir}", flush=True)  # fmt: skip
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        metrics = platform.metrics()
        await platform.aclose()
    affinity, cache = metrics["affinity"], metrics["cache"]
    print(f"tenantflow: worker stopped after {metrics['runs_started']} runs, "
          f"{metrics['steps_committed']} steps; warm hits {cache['hits']}/{cache['hits'] + cache['misses']}, "
          f"preferred claims {affinity['claims_preferred']}/{affinity['claims']}", flush=True)  # fmt: skip
    return 0
