"""``tenantflow demo``: a zero-configuration tour in one process.

Three example tenants with different policies on both sandbox backends, bundles deployed from
``tenants_example/``, and workflows that retry, sleep, wait for an event the demo sends, and use
the kv and db bindings. Progress is printed live; at the end each instance is described and a
summary (cold and warm starts, steps, time) is printed. Exit status 0 when every instance ended as
expected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._platform import OPERATOR, Platform
from ._output import describe, human_seconds, status_label, table

EXAMPLES = Path(__file__).resolve().parents[2] / "tenants_example"
DEADLINE_SECONDS = 120


@dataclass(frozen=True)
class DemoTenant:
    id: str
    policy: dict[str, Any]
    bundles: tuple[str, ...]
    note: str


TENANTS = (
    DemoTenant(
        "acme-shop",
        {"backend": "restricted", "creation_rate": 50, "max_concurrent_instances": 20},
        ("order_processing", "cart_reminder"),
        "restricted sandbox, no bindings, 50 creations/s",
    ),
    DemoTenant(
        "globex-finance",
        {"backend": "restricted", "limits": {"wall_seconds": 10}, "max_concurrent_instances": 5},
        ("expense_approval",),
        "restricted sandbox, 10 s wall limit, 5 concurrent",
    ),
    DemoTenant(
        "initech-warehouse",
        {"backend": "wasm", "bindings": ["kv", "db"], "storage_quota_bytes": 1024 * 1024},
        ("inventory",),
        "wasm sandbox, kv + db granted (1 MiB quota)",
    ),
)


@dataclass
class DemoRun:
    tenant: str
    workflow: str
    instance: str
    params: Any
    expect: str
    what: str
    answer: tuple[str, Any] | None = None
    """An event the demo sends once the instance waits: (type, payload)."""
    after: str | None = None
    """Create this instance only once that instance (same tenant) has completed."""
    created: bool = False
    status: str = ""
    answered: bool = False
    record: dict[str, Any] = field(default_factory=dict)


def _runs() -> list[DemoRun]:
    order = {"order_id": "1001", "items": [{"sku": "mug", "qty": 2, "price": 9.5}, {"sku": "tee", "qty": 1,
             "price": 20.0}], "card": "4242", "flaky_attempts": 2}  # fmt: skip
    return [
        DemoRun("acme-shop", "orders", "order-1001", order, "complete", "retries a flaky step twice"),
        DemoRun(
            "acme-shop",
            "orders",
            "order-1002",
            {**order, "order_id": "1002", "card": "declined", "flaky_attempts": 0},
            "errored",
            "NonRetryableError: declined card",
        ),
        DemoRun(
            "acme-shop",
            "cart-reminder",
            "cart-77",
            {"cart_id": "77", "email": "ada@example.com", "items": ["mug", "tee"], "wait": "2 seconds"},
            "complete",
            "sleeps 2 s, then reminds",
        ),
        DemoRun(
            "globex-finance",
            "expense-approval",
            "exp-1",
            {"expense_id": "exp-1", "amount": 120.0, "submitter": "ada", "timeout": "1 hour"},
            "complete",
            "waits for a decision the demo sends",
            answer=("decision", {"approved": True, "by": "grace", "note": "ok for the offsite"}),
        ),
        DemoRun(
            "globex-finance",
            "expense-approval",
            "exp-2",
            {"expense_id": "exp-2", "amount": 80.0, "submitter": "linus", "timeout": "1 second"},
            "complete",
            "nobody answers: times out, escalates",
        ),
        DemoRun(
            "initech-warehouse",
            "inventory",
            "restock-1",
            {"movements": [{"sku": "mug", "qty": 10}, {"sku": "tee", "qty": 5}]},
            "complete",
            "env.kv stock + env.db ledger",
        ),
        DemoRun(
            "initech-warehouse",
            "inventory",
            "sale-1",
            {"movements": [{"sku": "mug", "qty": -3}]},
            "complete",
            "after restock-1: warm sandbox, reads the stock it wrote",
            after="restock-1",
        ),
    ]


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _run_demo(data_dir: Path, as_json: bool) -> int:
    began = time.monotonic()
    if not EXAMPLES.is_dir():
        print(f"tenantflow demo: the example bundles are missing ({EXAMPLES}); run it from a source checkout",
              file=sys.stderr)  # fmt: skip
        return 1
    say = (lambda text="": None) if as_json else _say
    say(f"🧪 tenantflow demo: data in {data_dir}")
    platform = await Platform.open(data_dir)
    warm = asyncio.create_task(_warm_wasm(platform, say))
    try:
        say("\n1. Tenants and their policies")
        for tenant in TENANTS:
            await platform.create_tenant(OPERATOR, tenant.id, policy=tenant.policy)
            say(f"   + {tenant.id:<18} {tenant.note}")
        say("\n2. Deploying bundles from tenants_example/")
        for tenant in TENANTS:
            for bundle in tenant.bundles:
                result = await platform.deploy(OPERATOR, tenant.id, EXAMPLES / bundle)
                version = result.version
                say(f"   ✅ {tenant.id}/{version.workflow} v{version.number} ({version.digest[:19]}, "
                    f"{version.file_count} files)")  # fmt: skip
        runs = _runs()
        say("\n3. Running workflows")
        for run in runs:
            if run.after is None:
                await _create(platform, run, say)
        await _follow(platform, runs, say)
        await warm
        for run in runs:
            run.record = await platform.describe_instance(OPERATOR, run.tenant, run.workflow, run.instance)
        elapsed = time.monotonic() - began
        summary = _summary(platform, runs, elapsed)
        if as_json:
            print(json.dumps(summary, indent=2))
        else:
            say("\n4. Instances")
            for run in runs:
                say(f"\n── {run.tenant} ─────────────────────────────")
                describe(run.record)
            _print_summary(summary)
        return 0 if summary["ok"] else 1
    finally:
        warm.cancel()
        await platform.aclose()


async def _warm_wasm(platform: Platform, say: Any) -> None:
    """Build (first use only) and compile the wasm runner while the restricted tenants run."""
    began = time.monotonic()
    say("   ⚙ preparing the wasm runner in the background (built once on first use, then cached)")
    backend = platform.backends["wasm"]
    warm_up = getattr(backend, "warm_up", None)
    if warm_up is None:
        return
    try:
        await asyncio.to_thread(warm_up)
    except Exception as exc:  # the wasm instances will report the failure themselves
        say(f"   ✘ the wasm runner could not be prepared: {exc}")
        return
    say(f"   ⚙ wasm runner ready in {human_seconds(time.monotonic() - began)}")


async def _create(platform: Platform, run: DemoRun, say: Any) -> None:
    await platform.create_instance(OPERATOR, run.tenant, run.workflow, run.params, instance_id=run.instance)
    run.created = True
    say(f"   🚀 {run.tenant + '/' + run.instance:<30} {run.what}")


async def _follow(platform: Platform, runs: list[DemoRun], say: Any) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    started = time.monotonic()
    by_id = {(r.tenant, r.instance): r for r in runs}
    while time.monotonic() < deadline:
        for run in runs:
            if not run.created:
                if by_id[(run.tenant, run.after or "")].status != "complete":
                    continue
                await _create(platform, run, say)
            instance = await platform.get_instance(OPERATOR, run.tenant, run.workflow, run.instance)
            status = instance.status.value
            if status != run.status:
                stamp = human_seconds(time.monotonic() - started)
                say(f"   [{stamp:>6}] {run.tenant + '/' + run.instance:<30} {status_label(status)}")
                run.status = status
            if run.answer is not None and not run.answered and status == "waiting":
                record = await platform.describe_instance(OPERATOR, run.tenant, run.workflow, run.instance)
                if any(s.get("type") == "waitForEvent" and not s.get("finished") for s in record["steps"]):
                    event_type, payload = run.answer
                    await platform.send_event(
                        OPERATOR, run.tenant, run.workflow, run.instance, event_type, payload
                    )
                    run.answered = True
                    say(
                        f"   📨 the demo sends {event_type!r} to {run.tenant}/{run.instance}: {json.dumps(payload)}"
                    )
        if all(r.status in ("complete", "errored", "terminated") for r in runs):
            return
        await asyncio.sleep(0.1)
    say("   ✘ some instances did not finish in time")


def _summary(platform: Platform, runs: list[DemoRun], elapsed: float) -> dict[str, Any]:
    stats = platform.metrics()["cache"]
    instances = [
        {
            "tenant": r.tenant, "workflow": r.workflow, "instance": r.instance, "status": r.status,
            "expected": r.expect, "steps": r.record.get("step_count", 0),
            "attempts": sum(len(s.get("attempts", [])) for s in r.record.get("steps", []) if s.get("type") == "step"),
            "start": r.record.get("start"), "end": r.record.get("end"),
        }
        for r in runs
    ]  # fmt: skip
    return {
        "ok": all(r.status == r.expect for r in runs),
        "tenants": len(TENANTS),
        "instances": instances,
        "cold_starts": stats["cold_starts"],
        "warm_starts": stats["hits"],
        "cold_start_seconds": round(stats["cold_start_seconds"], 3),
        "invocations": platform.metrics()["invocations"],
        "steps": sum(i["steps"] for i in instances),
        "seconds": round(elapsed, 2),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from ._output import duration

    _say("\n5. Summary")
    rows = [[i["tenant"], i["instance"], status_label(i["status"]), i["steps"], i["attempts"],
             duration(i["start"], i["end"]), "✓" if i["status"] == i["expected"] else f"✘ expected {i['expected']}"]
            for i in summary["instances"]]  # fmt: skip
    table(["Tenant", "Instance", "Status", "Steps", "Attempts", "Duration", "As expected"], rows)
    _say(
        f"Cold starts: {summary['cold_starts']} ({human_seconds(summary['cold_start_seconds'])} loading)   "
        f"Warm starts: {summary['warm_starts']}   Invocations: {summary['invocations']}   "
        f"Steps: {summary['steps']}   Time: {human_seconds(summary['seconds'])}"
    )
    verdict = "✅ demo complete: every instance ended as expected" if summary["ok"] else "❌ demo failed"
    _say(verdict)


def demo(args: argparse.Namespace) -> int:
    if args.data_dir:
        return asyncio.run(_run_demo(Path(args.data_dir).expanduser(), args.json))
    with tempfile.TemporaryDirectory(prefix="tenantflow-demo-") as directory:
        return asyncio.run(_run_demo(Path(directory), args.json))
