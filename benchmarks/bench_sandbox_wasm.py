"""Benchmark of the wasm sandbox backend. Reports numbers; asserts nothing.

    python -m benchmarks.bench_sandbox_wasm [--quick]

* cold start: a bundle and its derived form in hand -> a loaded sandbox (``backend.load``), for
  a one-line ``run`` and a 60-line two-file workflow (dataclass, regex, imports); ``sporadic``
  cold starts are 5 ms apart (the spare instances are refilled in between), ``burst`` ones back
  to back
* warm invoke: ``run`` returning a constant, on a warm sandbox, through ``sandbox.invoke``
* host call: one step host-call round trip (the gap between consecutive cached ``step.do``
  calls as the host bridge sees them: host -> guest SDK -> host)
* memory: proportional set size (``/proc/self/smaps_rollup``) per live warm sandbox, 1,000 live,
  each invoked once (the workflow's run suspends at its sleep; the trivial one returns)

Each figure is the median over several runs of that run's p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from typing import Any

import sandbox
from sandbox import Bundle, Limits

TENANT = '''
"""A realistic small workflow module (~60 lines)."""
import json
import re
from dataclasses import dataclass, asdict
from datetime import datetime, timezone

import helpers
from tenantflow import NonRetryableError, env

EMAIL = re.compile(r"^[^@]+@[^@]+$")


@dataclass
class Order:
    id: str
    email: str
    amount_cents: int
    items: list


def parse(payload):
    order = Order(**payload)
    if not EMAIL.match(order.email):
        raise NonRetryableError(f"bad email {order.email!r}")
    if order.amount_cents <= 0:
        raise NonRetryableError("amount must be positive")
    return order


def total(items):
    return sum(helpers.price(item) * item.get("qty", 1) for item in items)


def run(event, step):
    order = parse(event["payload"])

    @step.do("validate", retries={"limit": 3, "delay": 1000, "backoff": "exponential"})
    def validate(ctx):
        return {"ok": total(order.items) == order.amount_cents, "attempt": ctx["attempt"]}

    checked = validate()
    if not checked["ok"]:
        raise NonRetryableError("total mismatch")

    receipt = step.do("charge", lambda: {"charged": order.amount_cents, "at": helpers.now_iso()})
    step.sleep("cool-off", "10 seconds")
    step.do("email", lambda: {"to": order.email, "body": json.dumps(asdict(order))})
    return {"order": order.id, "receipt": receipt}
'''

HELPERS = """
from datetime import datetime, timezone

PRICES = {"apple": 50, "pear": 70, "plum": 20}


def price(item):
    return PRICES.get(item["sku"], 0)


def now_iso():
    return datetime.now(timezone.utc).isoformat()
"""

TRIVIAL = "def run(event, step):\n    return 1\n"
STEPS = "def run(event, step):\n    for i in range(event['payload']):\n        step.do('s', lambda: i)\n    return 0\n"


_CACHED_ANSWER = {"action": "cached", "result": 1, "time": 1_700_000_000_000}


class _Cached:
    """A bridge answering every step.do from memory (a replay), recording call times."""

    __slots__ = ("stamps",)

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def call(self, name: str, args: Any) -> Any:
        self.stamps.append(time.perf_counter())
        return _CACHED_ANSWER


class _Null:
    def call(self, name: str, args: Any) -> Any:
        return None


SPORADIC_GAP = 0.005
"""Seconds between sporadic cold starts: time for the backend to refill its spare instances."""

EVENT = {"payload": 0, "timestamp": 1_700_000_000_000, "instanceId": "bench", "workflowName": "bench"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(runs: list[list[float]], unit: float) -> dict[str, float]:
    return {
        "p50": round(statistics.median(_pct(r, 0.5) for r in runs) * unit, 2),
        "p99": round(statistics.median(_pct(r, 0.99) for r in runs) * unit, 2),
    }


def _pss_kib() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


async def _cold(backend: Any, runs: int, n: int, bundle: Bundle, gap: float) -> list[list[float]]:
    """Cold starts ``gap`` seconds apart (0: a burst, back to back); the gap is not timed."""
    derived = await backend.prepare(bundle)
    limits = Limits()
    results = []
    for _ in range(runs):
        samples = []
        for _ in range(n):
            if gap:
                await asyncio.sleep(gap)
            started = time.perf_counter()
            sb = await backend.load(bundle, limits=limits, derived=derived)
            samples.append(time.perf_counter() - started)
            await sb.aclose()
        results.append(samples)
    return results


async def _warm(backend: Any, runs: int, n: int) -> list[list[float]]:
    sb = await backend.load(Bundle("sha256:bench-warm", {"main.py": TRIVIAL.encode()}), limits=Limits())
    bridge = _Null()
    for _ in range(50):
        await sb.invoke(EVENT, bridge)
    results = []
    for _ in range(runs):
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await sb.invoke(EVENT, bridge)
            samples.append(time.perf_counter() - started)
        results.append(samples)
    await sb.aclose()
    return results


async def _host_calls(backend: Any, runs: int, n: int) -> list[list[float]]:
    sb = await backend.load(Bundle("sha256:bench-steps", {"main.py": STEPS.encode()}), limits=Limits())
    event = dict(EVENT, payload=n)
    await sb.invoke(event, _Cached())
    results = []
    for _ in range(runs):
        bridge = _Cached()
        await sb.invoke(event, bridge)
        results.append([b - a for a, b in zip(bridge.stamps, bridge.stamps[1:], strict=False)])
    await sb.aclose()
    return results


async def _memory(backend: Any, live: int, bundle: Bundle) -> float:
    """PSS growth per live sandbox (MiB), each loaded and invoked once (a typical wake-up)."""
    derived = await backend.prepare(bundle)
    warm = await backend.load(bundle, limits=Limits(), derived=derived)  # everything shared is mapped
    gc.collect()
    before = _pss_kib()
    boxes = []
    payload = {
        "id": "o1",
        "email": "a@b.c",
        "amount_cents": 120,
        "items": [{"sku": "apple", "qty": 1}, {"sku": "pear"}],
    }
    for i in range(live):
        sb = await backend.load(bundle, limits=Limits(), derived=derived)
        await sb.invoke(dict(EVENT, payload=payload, instanceId=f"i{i}"), _Replay())
        boxes.append(sb)
    gc.collect()
    after = _pss_kib()
    for sb in [*boxes, warm]:
        await sb.aclose()
    return round((after - before) / live / 1024, 3)


class _Replay:
    """Answers steps as if each was journaled, and suspends at the sleep: a typical wake-up."""

    def call(self, name: str, args: Any) -> Any:
        if name == "step.do":
            return {"action": "run", "count": 1, "attempt": 1, "config": args["config"], "time": 1}
        if name == "step.sleep":
            return {"action": "suspend"}
        return {"time": 2}


async def _run(quick: bool) -> dict[str, Any]:
    backend = sandbox.create_backend("wasm")
    await asyncio.to_thread(backend.warm_up)  # type: ignore[attr-defined]
    runs = 5
    try:
        realistic = Bundle("sha256:bench-cold", {"main.py": TENANT.encode(), "helpers.py": HELPERS.encode()})
        trivial = Bundle("sha256:bench-cold-trivial", {"main.py": TRIVIAL.encode()})
        n = 40 if quick else 200
        cold = {
            name: {
                "sporadic": _summary(await _cold(backend, runs, n, bundle, SPORADIC_GAP), 1e3),
                "burst": _summary(await _cold(backend, runs, n, bundle, 0.0), 1e3),
            }
            for name, bundle in (("trivial", trivial), ("workflow60", realistic))
        }
        warm = await _warm(backend, runs, 300 if quick else 2000)
        calls = await _host_calls(backend, runs, 300 if quick else 2000)
        live = 200 if quick else 1000
        memory = {
            "live": live,
            "pss_mib_per_sandbox": await _memory(backend, live, realistic),
            "pss_mib_per_sandbox_trivial": await _memory(backend, live, trivial),
        }
    finally:
        await backend.aclose()
    return {
        "cold_start_ms": cold,
        "warm_invoke_us": _summary(warm, 1e6),
        "host_call_us": _summary(calls, 1e6),
        "memory": memory,
        "runs": runs,
        "quick": quick,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Run the benchmark and return its figures (also used by the project's benchmark report)."""
    return asyncio.run(_run(quick))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations and 200 live sandboxes")
    args = parser.parse_args(argv)
    figures = run(args.quick)
    cold = figures["cold_start_ms"]
    print(json.dumps(figures, indent=2))
    print(
        f"cold start p50 trivial {cold['trivial']['sporadic']['p50']} ms "
        f"(burst {cold['trivial']['burst']['p50']}), 60-line workflow {cold['workflow60']['sporadic']['p50']} ms "
        f"(burst {cold['workflow60']['burst']['p50']}) | "
        f"warm invoke p50 {figures['warm_invoke_us']['p50']} us (p99 {figures['warm_invoke_us']['p99']}) | "
        f"host call p50 {figures['host_call_us']['p50']} us (p99 {figures['host_call_us']['p99']}) | "
        f"PSS {figures['memory']['pss_mib_per_sandbox']} MiB/sandbox with {figures['memory']['live']} live "
        f"(trivial module {figures['memory']['pss_mib_per_sandbox_trivial']})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
