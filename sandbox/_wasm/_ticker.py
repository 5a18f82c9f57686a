"""One epoch ticker thread per backend: the clock behind every sandbox's CPU and wall deadlines."""

from __future__ import annotations

import math
import threading

from wasmtime import Engine

TICK_SECONDS = 0.01
"""Epoch period. Deadlines are accurate to about one tick."""


def ticks_for(seconds: float) -> int:
    """Epoch ticks covering ``seconds`` (at least one, plus one for the partial current tick)."""
    return max(1, math.ceil(seconds / TICK_SECONDS)) + 1


class EpochTicker:
    """Increments the engine's epoch every ``TICK_SECONDS`` until stopped. Started lazily."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="tenantflow-wasm-epoch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        increment = self._engine.increment_epoch
        wait = self._stop.wait
        while not wait(TICK_SECONDS):
            increment()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
