"""Isolation through the real stack: every attack of the shared table, poisoning pairs, replays,
hostile step names and foreign event types, run as tenant bundles on a Platform with both real
backends. After each case no canary (host env var, host file, another tenant's stored step result)
appears in the instance, its describe record and logs, or the API's answer; another tenant's
workflow still completes; at the end the victims complete with their own data.
"""

from __future__ import annotations

import os
import random
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dispatcher import OPERATOR
from engine import Status
from tests.sandbox.attacks import ATTACKS, CANARY_ENV, Attack

from .cases import NONDETERMINISM, POISONING, STEP_NAMES, STEP_NAMES_REFUSED, poison_source
from .stack import BACKENDS, HOST_ENV_CANARY, VICTIM_CANARY, Stack, body, gather_limited, plant_canaries

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(400)]
PARALLEL = 4


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    previous = os.environ.get(CANARY_ENV)
    canary_path = plant_canaries(tmp_path_factory.mktemp("canary"))
    assert os.environ[CANARY_ENV] == HOST_ENV_CANARY
    opened = await Stack.open(tmp_path_factory.mktemp("iso") / "data", canary_path)
    yield opened
    await opened.aclose()
    if previous is None:
        os.environ.pop(CANARY_ENV, None)
    else:
        os.environ[CANARY_ENV] = previous


async def _attack(stack: Stack, backend: str, index: int, attack: Attack) -> str | None:
    """Run one table case through the platform; a failure description or None."""
    source = attack.source.format(CANARY_PATH=str(stack.canary_path), CANARY_ENV=CANARY_ENV)
    outcome = await stack.run(f"atk-{backend}-{index}", backend, body(source))
    await stack.neighbour_works(backend)
    problems = []
    if outcome.kind not in attack.expect:
        problems.append(f"outcome {outcome.kind} ({outcome.error_name}) not in {sorted(attack.expect)}")
    if (
        outcome.kind == "limit"
        and attack.limits
        and not any(f"{limit} limit exceeded" in outcome.text for limit in attack.limits)
    ):
        problems.append(f"limit is not one of {sorted(attack.limits)}")
    if leaks := stack.leaks(outcome.text):
        problems.append(f"leaked {leaks}")
    if attack.id == "step-name-victims-key" and outcome.kind == "ok":
        assert outcome.output == "mine"
    return f"{attack.id}: {'; '.join(problems)}" if problems else None


def _describe(result: Any) -> str:
    if isinstance(result, BaseException):
        return "".join(traceback.format_exception(result))[-1500:]
    return str(result)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_shared_attack_table_through_the_platform(stack: Stack, backend: str) -> None:
    results = await gather_limited(
        PARALLEL, *(_attack(stack, backend, i, attack) for i, attack in enumerate(ATTACKS))
    )
    failures = [_describe(r) for r in results if r is not None]
    assert not failures, f"{len(failures)} of {len(ATTACKS)} attacks failed on {backend}:\n" + "\n".join(
        failures
    )
    assert not Path("/tmp/tenantflow-pwned").exists()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", POISONING, ids=[c.id for c in POISONING])
async def test_one_tenant_cannot_poison_the_next(stack: Stack, backend: str, case: Any) -> None:
    bindings = list(case.bindings)
    # Each statement is its own bundle (so the restricted compiler refusing one does not hide the
    # others); the poisoner may break its own sandbox, it must only never reach the next tenant's.
    for index, statement in enumerate(case.poison):
        poisoner = await stack.run(f"poison-{case.id}-{backend}", backend, body(poison_source((statement,))),
                                   instance_id=f"p{index}", bindings=bindings)  # fmt: skip
        assert not stack.leaks(poisoner.text)
    # Twice: the next tenant's cold load, and a second instance of it on the now-warm sandbox.
    for run in range(2):
        checker = await stack.run(
            f"check-{case.id}-{backend}", backend, body(case.check), instance_id=f"c{run}", bindings=bindings
        )
        assert checker.status == Status.COMPLETE, checker.text[:2000]
        if case.id == "random-state":
            seeded = random.Random(0)
            assert checker.output[:3] != [seeded.random() for _ in range(3)]
            assert 0.5 not in checker.output
            assert checker.output[3] == random.Random(1).random()
        else:
            assert checker.output == case.clean, case.id
        assert not stack.leaks(checker.text)
    await stack.neighbour_works(backend)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_replays_see_recorded_time_randomness_and_order(stack: Stack, backend: str) -> None:
    async def one(case: Any) -> None:
        outcome = await stack.run(f"replay-{case.id}-{backend}", backend, body(case.source))
        if case.memoized:
            assert outcome.status == Status.COMPLETE, outcome.text[:2000]
            assert outcome.output["again"] == outcome.output["first"]
        elif outcome.status != Status.COMPLETE:
            assert outcome.error_name is not None and "NonDeterminism" in outcome.text, outcome.text[:2000]
        assert not stack.leaks(outcome.text)

    results = await gather_limited(PARALLEL, *(one(c) for c in NONDETERMINISM))
    assert [_describe(r) for r in results if r is not None] == []
    await stack.neighbour_works(backend)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_hostile_step_names(stack: Stack, backend: str) -> None:
    tenant = f"names-{backend}"
    source = f"names = {STEP_NAMES!r}\nreturn [step.do(n, lambda n=n: ['mine', n]) for n in names]"
    outcome = await stack.run(tenant, backend, body(source))
    assert outcome.status == Status.COMPLETE, outcome.text[:2000]
    assert outcome.output == [["mine", n] for n in STEP_NAMES]
    record = await stack.platform.describe_instance(OPERATOR, tenant, "flow", "case-1")
    assert [s["name"] for s in record["steps"]] == STEP_NAMES
    for index, name in enumerate(STEP_NAMES_REFUSED):
        refused = await stack.run(
            tenant, backend, body(f"return step.do({name!r}, lambda: 1)"), instance_id=f"r{index}"
        )
        assert refused.status == Status.ERRORED and refused.error_name == "ValueError", refused.text[:2000]
        assert "control characters" in refused.text and not stack.leaks(refused.text)
    for size in (257, 100_000, 3_000_000):
        huge = await stack.run(
            tenant, backend, body(f"return step.do('n' * {size}, lambda: 1)"), instance_id=f"h{size}"
        )
        assert huge.status == Status.ERRORED and huge.kind in ("tenant", "limit", "crash"), huge.text[:2000]
        assert not stack.leaks(
            huge.text
        )  # restricted: a 3 MB host call exceeds the frame cap, worker replaced
    await stack.neighbour_works(backend)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_waiting_on_another_tenants_event_type(stack: Stack, backend: str) -> None:
    waiter = body("return step.wait_for_event('w', 'go', timeout='3 seconds')['payload']")
    owner, attacker = f"ev-owner-{backend}", f"ev-attacker-{backend}"
    await stack.tenant(owner, backend, waiter)
    await stack.tenant(attacker, backend, waiter)
    for tenant in (owner, attacker):
        await stack.platform.create_instance(OPERATOR, tenant, "flow", instance_id="shared-id")
        await stack.platform.engine.wait(tenant, "shared-id", statuses={Status.WAITING}, timeout=30)
    # The attacker's token cannot send to, or read, the owner's instance through the API.
    headers = {"Authorization": f"Bearer {stack.tokens[attacker]}"}
    base = f"/client/v4/accounts/{owner}/workflows/flow/instances/shared-id"
    forged = await stack.client.post(base + "/events/go", json={"forged": True}, headers=headers)
    read = await stack.client.get(base, headers=headers)
    assert forged.status_code in (403, 404) and read.status_code in (403, 404), (forged.text, read.text)
    owner_principal = await stack.platform.authenticate(stack.tokens[owner])
    await stack.platform.send_event(
        owner_principal, owner, "flow", "shared-id", "go", {"token": VICTIM_CANARY}
    )
    mine = await stack.outcome(owner, "shared-id")
    assert mine.status == Status.COMPLETE and mine.output == {"token": VICTIM_CANARY}
    theirs = await stack.outcome(attacker, "shared-id")
    assert theirs.status == Status.ERRORED and theirs.error_name == "EventTimeoutError", theirs.text[:2000]
    assert not stack.leaks(theirs.text + forged.text + read.text)


async def test_the_victims_are_intact_and_complete_with_their_own_data(stack: Stack) -> None:
    await stack.victims_intact()
    for backend in BACKENDS:
        record = await stack.platform.describe_instance(OPERATOR, f"victim-{backend}", "flow", "victim-1")
        assert [s["name"] for s in record["steps"]] == ["secret-step", "victim-wait"]
        assert record["logs"] == []
