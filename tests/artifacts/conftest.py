from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from artifacts import SqliteArtifactStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteArtifactStore]:
    opened = await SqliteArtifactStore.open(tmp_path / "artifacts.db")
    yield opened
    await opened.aclose()
