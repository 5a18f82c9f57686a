"""A flood from one tenant does not hold back another tenant's single instance."""

import time
from pathlib import Path

from dispatcher import OPERATOR

from .conftest import deploy, open_platform

WORK = "def run(event, step):\n    return step.do('work', lambda: sum(range(2000)))\n"


async def test_a_flood_does_not_hold_back_a_lone_instance(tmp_path: Path) -> None:
    platform = await open_platform(tmp_path / "data")
    try:
        await deploy(platform, "flood", WORK, creation_rate=100_000, backend="restricted")
        await deploy(platform, "lone", WORK, backend="restricted")
        # The lone tenant's run time on a quiet platform (warm).
        for attempt in range(2):
            started = time.perf_counter()
            quiet = await platform.create_instance(OPERATOR, "lone", "flow", instance_id=f"quiet-{attempt}")
            await platform.engine.wait("lone", quiet.id)
            alone = time.perf_counter() - started
        flood_ids = []
        for _ in range(100):
            batch = await platform.create_instances(OPERATOR, "flood", "flow", [(None, None)] * 100)
            flood_ids += [i.id for i in batch]
        started = time.perf_counter()
        lone = await platform.create_instance(OPERATOR, "lone", "flow", instance_id="during-flood")
        await platform.engine.wait("lone", lone.id, timeout=60)
        during = time.perf_counter() - started
        finished = len((await platform.engine.list("flood", status="complete", limit=1000)).items)
        print(f"lone instance: {alone * 1000:.1f} ms alone, {during * 1000:.1f} ms during a 10,000-instance "
              f"flood ({finished} of the flood had finished)")  # fmt: skip
        assert finished < 5_000, "the lone instance waited for most of the flood"
        assert during < alone + 1.0, (alone, during)
        for instance_id in flood_ids[-10:]:
            await platform.engine.wait("flood", instance_id, timeout=300)
    finally:
        await platform.aclose()
