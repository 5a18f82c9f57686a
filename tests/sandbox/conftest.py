"""Fixtures for the sandbox tests: backends created once per session (the wasm runner is built
or loaded from the cache once), and another tenant's warm sandbox for the "host stays up" checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import sandbox
from sandbox import Bundle, Limits

from .helpers import FakeJournal, invoke, run_body


@pytest.fixture(scope="session")
def wasm_backend() -> Iterator[sandbox.SandboxBackend]:
    backend = sandbox.create_backend("wasm")
    backend.warm_up()  # type: ignore[attr-defined]  # builds/compiles the runner once (cached)
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(scope="session")
def inprocess_backend() -> Iterator[sandbox.SandboxBackend]:
    backend = sandbox.create_backend("inprocess")
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture(params=["wasm", "inprocess"])
def backend(request: pytest.FixtureRequest) -> sandbox.SandboxBackend:
    """Every SDK behaviour must be identical in the wasm backend and the in-process one."""
    fixture: sandbox.SandboxBackend = request.getfixturevalue(f"{request.param}_backend")
    return fixture


@pytest.fixture
async def load(backend: sandbox.SandboxBackend) -> AsyncIterator[Callable[..., Any]]:
    """``await load(bundle, **limit_overrides)`` -> a sandbox of the current backend."""
    opened: list[sandbox.Sandbox] = []

    async def _load(b: Bundle, **limits: Any) -> sandbox.Sandbox:
        sb = await backend.load(b, limits=Limits().override(**limits))
        opened.append(sb)
        return sb

    yield _load
    for sb in opened:
        await sb.aclose()


@pytest.fixture
async def warm_other(wasm_backend: sandbox.SandboxBackend) -> AsyncIterator[Callable[[], Any]]:
    """Another tenant's warm wasm sandbox, and a check that it still works."""
    other = await wasm_backend.load(
        run_body("return {'other': event['payload'] + 1}", digest="sha256:other"), limits=Limits()
    )
    journal = FakeJournal()
    assert (await invoke(other, journal, 1)).output == {"other": 2}

    async def still_works() -> None:
        result = await invoke(other, journal, 41)
        assert result.output == {"other": 42}

    yield still_works
    await other.aclose()
