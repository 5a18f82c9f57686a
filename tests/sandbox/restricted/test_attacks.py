"""The RestrictedPython-specific attack table (tests/sandbox/attacks_restricted.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import LimitExceededError, LoadError, SandboxError, TenantError
from sandbox._restricted import RestrictedBackend
from tests.sandbox.attacks_restricted import ATTACKS, CANARY, CANARY_ENV, FORBIDDEN, Attack

from .conftest import FAST_LIMITS, FakeHost, event, make_bundle

pytestmark = pytest.mark.asyncio(loop_scope="module")

HEALTHY = "def run(event, step):\n    import json\n    return json.loads(json.dumps({'ok': step.do('s', lambda: 1)}))\n"


@pytest.fixture(scope="module")
def canary_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("canary") / "secret.txt"
    path.write_text(CANARY + "\n")
    yield path


async def test_the_table_is_large_and_unique() -> None:
    assert len(ATTACKS) >= 80
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)
    assert {a.category for a in ATTACKS} >= {
        "module-walk",
        "format",
        "frames",
        "shadowing",
        "subclasses",
        "bound-method",
        "attributeerror",
        "syntax",
        "builtins",
        "helpers",
        "facade",
        "result",
    }


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
async def test_attack_is_contained(
    shared_backend: RestrictedBackend, attack: Attack, canary_path: Path
) -> None:
    source = attack.source.format(CANARY_PATH=str(canary_path), CANARY_ENV=CANARY_ENV)
    kind, shown = await outcome_of(shared_backend, source)
    assert CANARY not in shown
    for forbidden in FORBIDDEN:
        assert forbidden not in shown, f"{attack.id} leaked {forbidden!r}: {shown[:300]}"
    assert kind in attack.expect, f"{attack.id}: {kind}: {shown[:300]}"
    # The pool stays healthy: a benign tenant still runs.
    await shared_backend.wait_ready()
    kind, shown = await outcome_of(shared_backend, HEALTHY)
    assert (kind, shown) == ("ok", '{"ok": 1}')
