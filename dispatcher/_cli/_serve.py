"""``tenantflow serve``: the HTTP API and the engine's workers in one process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from .._platform import Platform, default_data_dir
from ..api import ApiConfig, create_serving_app


def serve(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    secret = os.environ.get("TENANTFLOW_OPERATOR_TOKEN") or None
    url = f"http://{args.host}:{args.port}"

    async def open_platform() -> Platform:
        return await Platform.open(data_dir)

    async def ready(platform: Platform) -> None:
        generated = await platform.ensure_operator_token(secret)
        print(f"tenantflow: data in {data_dir}", flush=True)
        if generated:
            print("tenantflow: operator token (shown once, keep it safe):", flush=True)
            print(f"  {generated}", flush=True)
            print(f"  export TENANTFLOW_URL={url} TENANTFLOW_TOKEN={generated}", flush=True)
        elif secret:
            print("tenantflow: operator token from TENANTFLOW_OPERATOR_TOKEN", flush=True)
        else:
            print("tenantflow: using the operator token created earlier in this data directory "
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
