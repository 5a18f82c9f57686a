"""A real uvicorn server on 127.0.0.1 (random port) in a thread, serving a platform in ``data_dir``."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from dispatcher import Platform
from dispatcher.api import ApiConfig, create_serving_app


class LiveServer:
    """``with LiveServer(tmp_path, "secret") as server: server.url``."""

    def __init__(
        self, data_dir: Path, operator_token: str, config: ApiConfig | None = None, **open_options: Any
    ):
        self.data_dir = data_dir
        self.operator_token = operator_token
        self._config = config
        self._open_options = open_options
        self.url = ""
        self.platform: Platform | None = None

    def __enter__(self) -> LiveServer:
        async def open_platform() -> Platform:
            self.platform = await Platform.open(self.data_dir, **self._open_options)
            return self.platform

        async def ready(platform: Platform) -> None:
            await platform.ensure_operator_token(self.operator_token)

        app = create_serving_app(open_platform, self._config, on_ready=ready)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self._sock = sock
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
