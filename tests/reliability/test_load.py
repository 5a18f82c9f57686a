"""The load test at CI size (1,000 instances across 20 tenants); the full size is
``python -m tests.reliability.load --full`` (10,000 across 100)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .load import run_load


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_load_at_ci_size(tmp_path: Path) -> None:
    report = await run_load(tmp_path / "data", instances=1_000, tenants=20)
    assert report["problems"] == [], report["problems"][:20]
    assert sum(report["counts"].values()) == 1_000
    assert set(report["counts"]) <= {"complete", "errored"}
