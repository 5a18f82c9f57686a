"""Load: N instances across T tenants with random sleeps, events and failing steps, invariants
checked at the end (every instance finished, step counts and outputs exact, no cross-tenant data).

    python -m tests.reliability.load            # CI size: 1,000 instances, 20 tenants
    python -m tests.reliability.load --full     # 10,000 instances, 100 tenants

Tenants alternate between the wasm and restricted backends. Each instance's params hold its tenant
and a seed; the workflow derives its plan from the seed (steps, a sleep, an event wait, a step that
fails twice and then succeeds, or one that fails for good), so the expected output and step count
of every instance are computed here independently.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher import OPERATOR, Platform
from engine import FINISHED, EngineConfig, RetryConfig, StepConfig

FLOW = """
from tenantflow import NonRetryableError

def run(event, step):
    p = event["payload"]
    total = 0
    for i in range(p["steps"]):
        total += step.do(f"s{i}", lambda i=i: p["seed"] % 97 + i)
    if p["sleep"]:
        step.sleep("nap", p["sleep"])
    got = None
    if p["event"]:
        got = step.wait_for_event("wait", "go", timeout="10 minutes")["payload"]
        if got["tenant"] != p["tenant"]:
            raise NonRetryableError("an event from another tenant arrived")
    if p["flaky"]:
        @step.do("flaky", retries={"limit": 3, "delay": 5, "backoff": "constant"})
        def flaky(ctx):
            if ctx["attempt"] < 3:
                raise ConnectionError("try again")
            return ctx["attempt"]
        total += flaky()
    if p["fail"]:
        step.do("doomed", lambda: (_ for _ in ()).throw(NonRetryableError("planned failure")))
    return {"tenant": p["tenant"], "seed": p["seed"], "total": total, "got": got}
"""


@dataclass(frozen=True)
class Plan:
    tenant: str
    instance_id: str
    params: dict[str, Any]

    def expected(self) -> tuple[str, Any, int]:
        """(status, output, number of 'do' steps in the journal)."""
        p = self.params
        total = sum(p["seed"] % 97 + i for i in range(p["steps"])) + (3 if p["flaky"] else 0)
        steps = p["steps"] + (1 if p["flaky"] else 0) + (1 if p["fail"] else 0)
        if p["fail"]:
            return "errored", None, steps
        got = {"tenant": self.tenant, "n": p["seed"]} if p["event"] else None
        return "complete", {"tenant": self.tenant, "seed": p["seed"], "total": total, "got": got}, steps


def plans(instances: int, tenants: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    out = []
    for n in range(instances):
        tenant = f"load-{n % tenants}"
        params = {
            "tenant": tenant,
            "seed": rng.randrange(10**9),
            "steps": rng.randrange(1, 5),
            "sleep": rng.choice([0, 0, 10, 50, 200]),
            "event": rng.random() < 0.3,
            "flaky": rng.random() < 0.1,
            "fail": rng.random() < 0.05,
        }
        out.append(Plan(tenant, f"i{n}", params))
    return out


async def run_load(data: Path, instances: int, tenants: int, seed: int = 7) -> dict[str, Any]:
    started = time.perf_counter()
    config = EngineConfig(synchronous="NORMAL", default_step_config=StepConfig(retries=RetryConfig(limit=0)))
    platform = await Platform.open(data, engine_config=config)
    try:
        for t in range(tenants):
            policy = {"backend": "wasm" if t % 2 == 0 else "restricted", "creation_rate": 100_000.0}
            await platform.create_tenant(OPERATOR, f"load-{t}", policy=policy)
            await platform.deploy(OPERATOR, f"load-{t}", FLOW.encode(), filename="main.py", workflow="flow")
        all_plans = plans(instances, tenants, seed)
        by_tenant: dict[str, list[Plan]] = {}
        for plan in all_plans:
            by_tenant.setdefault(plan.tenant, []).append(plan)
        for tenant, items in by_tenant.items():
            for start in range(0, len(items), 100):
                batch = items[start : start + 100]
                await platform.create_instances(
                    OPERATOR, tenant, "flow", [(p.instance_id, p.params) for p in batch]
                )
        # Events go to the instances that wait, each from its own tenant.
        waiting = [p for p in all_plans if p.params["event"]]
        for plan in waiting:
            await platform.send_event(OPERATOR, plan.tenant, "flow", plan.instance_id, "go",
                                      {"tenant": plan.tenant, "n": plan.params["seed"]})  # fmt: skip
        problems: list[str] = []
        for plan in all_plans:
            done = await platform.engine.wait(plan.tenant, plan.instance_id, statuses=FINISHED, timeout=600)
            status, output, steps = plan.expected()
            got = await platform.get_instance(OPERATOR, plan.tenant, "flow", plan.instance_id)
            if str(done.status) != status or got.output != output:
                problems.append(
                    f"{plan.tenant}/{plan.instance_id}: {done.status} {got.output!r} {done.error}"
                )
                continue
            record = await platform.describe_instance(OPERATOR, plan.tenant, "flow", plan.instance_id)
            do_steps = [s for s in record["steps"] if s["type"] == "step"]
            if len(do_steps) != steps:
                problems.append(f"{plan.tenant}/{plan.instance_id}: {len(do_steps)} steps, expected {steps}")
            other = [t for t in by_tenant if t != plan.tenant and f'"{t}"' in str(record)]
            if other:
                problems.append(f"{plan.tenant}/{plan.instance_id}: mentions {other}")
        counts: dict[str, int] = {}
        for tenant in by_tenant:
            for status, count in (await platform.instance_counts(OPERATOR, tenant)).items():
                counts[status] = counts.get(status, 0) + count
        return {
            "instances": instances,
            "tenants": tenants,
            "seconds": round(time.perf_counter() - started, 1),
            "problems": problems,
            "counts": counts,
            "events": len(waiting),
        }
    finally:
        await platform.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="10,000 instances across 100 tenants")
    parser.add_argument("--instances", type=int, default=1_000)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args(argv)
    instances, tenants = (10_000, 100) if args.full else (args.instances, args.tenants)
    with tempfile.TemporaryDirectory(prefix="tenantflow-load-") as tmp:
        report = asyncio.run(run_load(Path(tmp) / "data", instances, tenants))
    print({k: v for k, v in report.items() if k != "problems"})
    for problem in report["problems"][:50]:
        print("PROBLEM", problem)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
