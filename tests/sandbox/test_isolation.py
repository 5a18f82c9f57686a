"""The shared isolation table (``attacks.py``) run against every tenant backend.

After each attack: the outcome is one the table allows, no canary or host path appears in
anything the invocation produced, and another tenant's warm sandbox of the same backend works.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import sandbox
from sandbox import LimitExceededError, Limits, LoadError, SandboxCrashError, TenantError

from .attacks import ATTACKS, CANARY, CANARY_ENV, FORBIDDEN, Attack
from .helpers import FakeJournal, invoke, run_body

BACKENDS = ["wasm", "restricted"]
ATTACK_LIMITS = Limits(
    memory_bytes=64 * 1024 * 1024,
    cpu_seconds=0.5,
    wall_seconds=5.0,
    output_bytes=64 * 1024,
    result_bytes=1024 * 1024,
    host_calls=2000,
)


def _restricted_available() -> str | None:
    try:
        importlib.import_module("sandbox._restricted")
    except ImportError as exc:
        return f"the restricted backend is not importable yet ({exc})"
    return None


@pytest.fixture(scope="module")
def canary_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("canary") / "secret.txt"
    path.write_text(CANARY + "\n")
    previous = os.environ.get(CANARY_ENV)
    os.environ[CANARY_ENV] = CANARY  # planted in the host environment for the whole module
    yield path
    if previous is None:
        os.environ.pop(CANARY_ENV, None)
    else:
        os.environ[CANARY_ENV] = previous


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def attack_backend(
    request: pytest.FixtureRequest, canary_path: Path
) -> AsyncIterator[sandbox.SandboxBackend]:
    if request.param == "wasm":
        yield request.getfixturevalue("wasm_backend")
        return
    reason = _restricted_available()
    if reason:
        pytest.skip(reason)
    backend = sandbox.create_backend(request.param)
    yield backend
    await backend.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def warm_neighbour(attack_backend: sandbox.SandboxBackend) -> AsyncIterator[Any]:
    """Another tenant's sandbox, loaded before the attacks and checked after each one."""
    other = await attack_backend.load(
        run_body("return {'neighbour': event['payload'] * 2}", digest="sha256:neighbour"), limits=Limits()
    )
    yield other
    await other.aclose()


def _texts(result: Any, error: BaseException | None) -> str:
    parts = [repr(result)]
    if error is not None:
        parts += [
            str(error),
            repr(error),
            getattr(error, "traceback", "") or "",
            getattr(error, "message", "") or "",
        ]
    return "\n".join(parts)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_is_contained(
    attack: Attack, attack_backend: sandbox.SandboxBackend, warm_neighbour: Any, canary_path: Path
) -> None:
    source = attack.source.format(CANARY_PATH=str(canary_path), CANARY_ENV=CANARY_ENV)
    journal = FakeJournal()
    outcome: str
    result: Any = None
    error: BaseException | None = None
    sb = None
    try:
        sb = await attack_backend.load(run_body(source, digest=f"sha256:{attack.id}"), limits=ATTACK_LIMITS)
        result = await invoke(sb, journal)
        outcome = "ok"
    except LoadError as exc:
        outcome, error = "load", exc
    except TenantError as exc:
        outcome, error = "tenant", exc
    except LimitExceededError as exc:
        outcome, error = "limit", exc
    except SandboxCrashError as exc:
        outcome, error = "crash", exc
    finally:
        if sb is not None:
            await sb.aclose()

    assert outcome in attack.expect, f"{attack.id}: got {outcome}: {error or result}"
    if outcome == "limit" and attack.limits:
        assert isinstance(error, LimitExceededError)
        assert error.limit in attack.limits, f"{attack.id}: {error}"
    everything = _texts(result, error) + repr(journal.calls)
    assert CANARY not in everything, f"{attack.id} leaked the canary"
    for forbidden in FORBIDDEN:
        assert forbidden not in everything, f"{attack.id} leaked {forbidden!r}"
    assert not Path("/tmp/tenantflow-pwned").exists()

    neighbour = await invoke(warm_neighbour, FakeJournal(), 21)
    assert neighbour.output == {"neighbour": 42}


def test_the_table_covers_every_class() -> None:
    assert len(ATTACKS) >= 40
    categories = {a.category for a in ATTACKS}
    assert categories >= {
        "import",
        "builtins",
        "introspection",
        "facades",
        "files",
        "env",
        "network",
        "threads",
        "processes",
        "cpu",
        "memory",
        "recursion",
        "output",
        "results",
        "format",
        "host-calls",
    }
