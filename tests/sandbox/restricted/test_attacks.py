"""The RestrictedPython-specific attack table (tests/sandbox/attacks_restricted.py)."""

from __future__ import annotations

import json

import pytest

from sandbox import LimitExceededError, LoadError, SandboxError, TenantError
from sandbox._restricted import RestrictedBackend
from tests.sandbox.attacks_restricted import ATTACKS, CANARY, Attack

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEALTHY = "def run(event, step):\n    import json\n    return json.loads(json.dumps({'ok': step.do('s', lambda: 1)}))\n"


async def test_the_table_is_large_and_unique() -> None:
    assert len(ATTACKS) >= 60
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)


async def outcome_of(backend: RestrictedBackend, source: str) -> tuple[str, str]:
    """Run one snippet; ("ok"|"load"|"tenant"|"limit"|"crash", everything it showed)."""
    try:
        sandbox = await backend.load(make_bundle(source), limits=FAST_LIMITS)
        result = await sandbox.invoke(event({"x": 1}), FakeHost())
    except LoadError as exc:
        return "load", str(exc)
    except TenantError as exc:
        return "tenant", f"{exc} {exc.traceback}"
    except LimitExceededError as exc:
        return "limit", str(exc)
    except SandboxError as exc:
        return "crash", str(exc)
    return "ok", json.dumps(result.output) + result.stdout


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_is_contained(shared_backend: RestrictedBackend, attack: Attack) -> None:
    kind, shown = await outcome_of(shared_backend, attack.source)
    assert CANARY not in shown
    assert "/work/" not in shown and "site-packages" not in shown, shown
    assert kind in attack.expect, f"{attack.id}: {kind}: {shown[:300]}"
    # The pool stays healthy: a benign tenant still runs.
    await shared_backend.wait_ready()
    kind, shown = await outcome_of(shared_backend, HEALTHY)
    assert (kind, shown) == ("ok", '{"ok": 1}')
