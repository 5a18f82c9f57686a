"""``tenantflow serve``: the HTTP API and the engine's workers in one process.

With ``--db postgresql://...`` every store is in that database (shared with other ``serve`` and
``worker`` processes) and ``--no-worker`` serves the API only: instances run in ``tenantflow worker``s.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from .._platform import Platform, default_data_dir, redact_dsn
from ..api import ApiConfig, create_serving_app
from ._worker import check_database, database_of


def serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    secret = os.environ.get("TENANTFLOW_OPERATOR_TOKEN") or None
    url = f"http://{args.host}:{args.port}"
    db = database_of(args)
    run_worker = not args.no_worker
    if db is None and not run_worker:
        print("tenantflow serve: --no-worker needs --db postgresql://... (the workers share that "
              "database); without it nothing would ever run", file=sys.stderr)  # fmt: skip
        return 2
    if db is not None:
        problem = check_database(db, args.schema, data_dir)
        if problem is not None:
            print(f"tenantflow serve: {problem}", file=sys.stderr)
            return 1

    async def open_platform() -> Platform:
        return await Platform.open(data_dir, db=db, schema=args.schema, worker=run_worker)

    async def ready(platform: Platform) -> None:
        generated = await platform.ensure_operator_token(secret)
        if db is None:
            print(f"tenantflow: data in {data_dir}", flush=True)
        else:
            role = "API and worker" if run_worker else "API only (instances run in tenantflow workers)"
            print(f"tenantflow: data in {redact_dsn(db)} (schema prefix {args.schema!r}), "
                  f"local caches in {data_dir}; {role}", flush=True)  # fmt: skip
        if generated:
            print("tenantflow: operator token (shown once, keep it safe):", flush=True)
            print(f"  {generated}", flush=True)
            print(f"  export TENANTFLOW_URL={url} TENANTFLOW_TOKEN={generated}", flush=True)
        elif secret:
            print("tenantflow: operator token from TENANTFLOW_OPERATOR_TOKEN", flush=True)
        else:
            print("tenantflow: using the operator token created earlier in this data directory or database "
                  "(set TENANTFLOW_OPERATOR_TOKEN to register one you know)", flush=True)  # fmt: skip
        print(f"tenantflow: serving on {url}  (OpenAPI: {url}/openapi.json)", flush=True)

    config = ApiConfig(max_body_bytes=args.max_body_bytes, max_upload_bytes=args.max_upload_bytes)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    app = create_serving_app(open_platform, config, on_ready=ready)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    except OSError as exc:
        print(f"tenantflow: cannot listen on {url}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
