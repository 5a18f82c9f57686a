"""Hypothesis property tests for bad input: durations, ids, step names and payloads through the
platform, and bundle archives (valid ones mutated byte by byte) through deploy."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifacts import ArtifactError
from dispatcher import OPERATOR, Platform, PlatformError
from engine import (
    FINISHED,
    EngineConfig,
    EngineValidationError,
    RetryConfig,
    Status,
    StepConfig,
    parse_duration,
    validate_id,
)
from sandbox import create_backend

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=3),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)  # fmt: skip
UNITS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000, "week": 7 * 86_400_000}


@SETTINGS
@given(ANYTHING | st.from_regex(r"\s*\d{1,6}(\.\d{1,3})?\s*[a-zA-Z]{1,8}\s*", fullmatch=True))
def test_parse_duration_returns_a_bounded_int_or_a_validation_error(value: Any) -> None:
    try:
        ms = parse_duration(value)
    except EngineValidationError as exc:
        assert exc.field == "duration" and str(exc)
        return
    assert isinstance(ms, int) and 0 <= ms <= 100 * 365 * 86_400_000


@SETTINGS
@given(st.integers(0, 5_000), st.sampled_from(sorted(UNITS)), st.booleans())
def test_parse_duration_of_valid_strings(n: int, unit: str, plural: bool) -> None:
    assert parse_duration(f"{n} {unit}{'s' if plural else ''}") == n * UNITS[unit]


@SETTINGS
@given(st.text(max_size=120) | ANYTHING)
def test_ids_are_accepted_exactly_when_they_follow_the_rules(value: Any) -> None:
    ok = (
        isinstance(value, str)
        and 1 <= len(value) <= 100
        and value[0] != "-"
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    )
    try:
        assert validate_id(value) == value and ok
    except EngineValidationError:
        assert not ok


FLOW = """
def run(event, step):
    p = event["payload"]
    return step.do(p["name"], lambda: p["value"])
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Platform]]:
    runner = asyncio.Runner()
    backend = create_backend("inprocess")
    config = EngineConfig(synchronous="OFF", default_step_config=StepConfig(retries=RetryConfig(limit=0)))
    opened = runner.run(Platform.open(tmp_path_factory.mktemp("props") / "data",
                                      backends={"wasm": backend, "restricted": backend}, engine_config=config))  # fmt: skip
    runner.run(opened.create_tenant(OPERATOR, "fuzz"))
    runner.run(opened.deploy(OPERATOR, "fuzz", FLOW.encode(), filename="main.py", workflow="flow"))
    yield runner, opened
    runner.run(opened.aclose())
    runner.close()


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= 256 and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)


@SETTINGS
@given(name=st.text(max_size=300), value=JSON)
def test_step_names_and_payloads_through_the_platform(
    platform: tuple[asyncio.Runner, Platform], name: str, value: Any
) -> None:
    runner, p = platform

    async def one() -> None:
        instance = await p.create_instance(OPERATOR, "fuzz", "flow", {"name": name, "value": value})
        done = await p.engine.wait("fuzz", instance.id, statuses=FINISHED, timeout=30)
        if not _valid_name(name):
            assert done.status == Status.ERRORED and done.error is not None, done
            assert done.error.name == "ValueError" and "step name" in done.error.message
            return
        assert done.status == Status.COMPLETE, done.error
        got = await p.get_instance(OPERATOR, "fuzz", "flow", instance.id)
        assert got.output == json.loads(json.dumps(value))
        record = await p.describe_instance(OPERATOR, "fuzz", "flow", instance.id)
        assert [s["name"] for s in record["steps"]] == [name]

    runner.run(one())


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
    return out.getvalue()


VALID_ZIP = _zip({"tenantflow.toml": b'workflow = "flow"\n', "main.py": FLOW.encode()})


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(VALID_ZIP) - 1), st.integers(1, 255)), min_size=1, max_size=8)
       | st.binary(max_size=2000).map(lambda b: [(-1, b)]))  # fmt: skip
def test_mutated_bundle_archives_deploy_or_fail_cleanly(
    platform: tuple[asyncio.Runner, Platform], mutations: list[tuple[int, Any]]
) -> None:
    runner, p = platform
    if mutations[0][0] == -1:
        archive = bytes(mutations[0][1])
    else:
        raw = bytearray(VALID_ZIP)
        for at, xor in mutations:
            raw[at] ^= xor
        archive = bytes(raw)

    async def one() -> None:
        try:
            result = await p.deploy(OPERATOR, "fuzz", archive, filename="bundle.zip", move_latest=False)
        except (ArtifactError, PlatformError) as exc:
            assert str(exc)
            return
        # Accepted: it is a valid bundle (the mutation hit slack bytes); it must run like one.
        assert result.version.number >= 1

    runner.run(one())


def test_the_fuzzed_platform_still_works(platform: tuple[asyncio.Runner, Platform]) -> None:
    runner, p = platform

    async def one() -> None:
        instance = await p.create_instance(OPERATOR, "fuzz", "flow", {"name": "ok", "value": 1})
        assert (await p.engine.wait("fuzz", instance.id, timeout=30)).status == Status.COMPLETE

    runner.run(one())
