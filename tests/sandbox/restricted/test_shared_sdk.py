"""The shared SDK test-suite (tests/sandbox/test_sdk.py, written for wasm and in-process) run
unchanged against the restricted backend: the tenant SDK must behave identically everywhere.
Cases that cannot run under the restricted policy are skipped in conftest.py (``NOT_PORTABLE``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from sandbox import Bundle, Limits
from sandbox._restricted import RestrictedBackend
from tests.sandbox import test_sdk as shared

pytestmark = pytest.mark.asyncio(loop_scope="module")

for _name in dir(shared):
    if _name.startswith("test_"):
        globals()[_name] = getattr(shared, _name)


@pytest_asyncio.fixture(loop_scope="module")
async def load(backend: RestrictedBackend) -> AsyncIterator[Callable[..., Any]]:
    async def _load(bundle: Bundle, **limits: Any) -> Any:
        return await backend.load(bundle, limits=Limits().override(**limits))

    yield _load
