"""Memory per warm tenant sandbox through the full stack: proportional set size (PSS) of the
platform process with 1,000 tenants warm (wasm backend unless stated).

    python -m benchmarks bench_full_tenants [--quick]

Each run is a fresh child process (so earlier benchmarks' memory does not count) holding one
``dispatcher.Platform``. One tenant is created, deployed (the 10-step workflow) and run first, so
what every sandbox shares (the compiled runner, the module cache, the engine) is mapped; then
``n`` more tenants are created, each deployed with its own copy of the workflow (a distinct
bundle) and run once, leaving one warm sandbox each in the cache. The figure is the growth of the
process's PSS (``/proc/self/smaps_rollup``) divided by ``n``: sandbox plus everything else the
platform keeps per tenant (policy, cache entry, prepared bundle). The engine runs at
``synchronous=OFF`` here: durability does not change memory and the setup is faster.
Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_full import TEN_STEPS, add_tenant, open_platform, run_one, summary

MiB = 1024 * 1024


def _pss_kib() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def _measure(data_dir: Path, tenants: int, backend: str) -> dict[str, Any]:
    cache = {"max_entries": tenants + 10, "max_memory_bytes": 1 << 40, "pool_size": 1}
    platform = await open_platform(data_dir, synchronous="OFF", cache_options=cache)
    try:
        await add_tenant(platform, "t-base", TEN_STEPS, backend=backend)
        await run_one(platform, "t-base")
        gc.collect()
        before = _pss_kib()
        for i in range(tenants):
            tenant = f"t-{i:05d}"
            await add_tenant(platform, tenant, f"# tenant {tenant}\n{TEN_STEPS}", backend=backend)
            await run_one(platform, tenant)
        gc.collect()
        after = _pss_kib()
        return {
            "pss_per_tenant_mib": (after - before) / tenants / 1024,
            "pss_total_mib": after / 1024,
            "warm_sandboxes": platform.cache.sandboxes,
        }
    finally:
        await platform.aclose()


def _child(tenants: int, backend: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tf-bench-tenants-") as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_full_tenants", "--child", str(tenants), backend, tmp],
            cwd=Path(__file__).parent.parent,
            check=False,
            capture_output=True,
            text=True,
        )
    if out.returncode:
        raise RuntimeError(f"benchmark child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> dict[str, Any]:
    tenants = 50 if quick else 1_000
    runs = [_child(tenants, "wasm") for _ in range(1 if quick else 5)]
    return {
        f"pss_per_warm_tenant_mib_{tenants}_tenants": summary([r["pss_per_tenant_mib"] for r in runs]),
        "pss_total_mib": summary([r["pss_total_mib"] for r in runs], 1),
        "warm_sandboxes": runs[-1]["warm_sandboxes"],
    }


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        count, backend, directory = int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
        print(json.dumps(asyncio.run(_measure(directory / "data", count, backend))))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
