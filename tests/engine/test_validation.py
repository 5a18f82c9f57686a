import math

import pytest

from engine import EngineValidationError, parse_duration, validate_id
from engine._validation import encode_payload, validate_step_name


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (1500, 1500),
        (2.5, 2),
        ("1 second", 1_000),
        ("10 seconds", 10_000),
        ("2 minutes", 120_000),
        ("1 hour", 3_600_000),
        ("3 days", 3 * 86_400_000),
        ("1 week", 7 * 86_400_000),
        ("1 month", 30 * 86_400_000),
        ("2 years", 2 * 365 * 86_400_000),
        ("1.5 seconds", 1_500),
        (" 5 MINUTES ", 300_000),
    ],
)
def test_durations_parse(value: object, ms: int) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -1, -0.5, "ten seconds", "5 fortnights", "5", "", "-3 seconds", None, True, [1]],
)
def test_bad_durations_are_clear_errors(value: object) -> None:
    with pytest.raises(EngineValidationError) as info:
        parse_duration(value, field="retries.delay")
    assert info.value.field == "retries.delay"
    assert str(info.value).startswith("retries.delay: ")


@pytest.mark.parametrize("good", ["a", "order-1", "_x", "A_b-9", "x" * 100, "0"])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize("bad", ["", "-a", "a b", "a/b", "é", "x" * 101, "a.b", "a\n", 5, None])
def test_invalid_ids(bad: object) -> None:
    with pytest.raises(EngineValidationError, match="instance_id"):
        validate_id(bad)


def test_step_names() -> None:
    assert validate_step_name("charge card #1", 256) == "charge card #1"
    for bad in ("", "x" * 257, "a\x00b", "tab\there", "\x7f", "\x85"):
        with pytest.raises(EngineValidationError, match="step name"):
            validate_step_name(bad, 256)


def test_payload_size_is_measured_in_utf8_bytes() -> None:
    assert encode_payload({"a": 1}, "params", 100) == '{"a":1}'
    with pytest.raises(
        EngineValidationError, match=r"params: is 10 bytes as JSON, over the limit of 9 bytes"
    ):
        encode_payload("éééé", "params", 9)
    with pytest.raises(EngineValidationError, match="must be JSON data"):
        encode_payload({"a": object()}, "params", 100)
    with pytest.raises(EngineValidationError, match="must be JSON data"):
        encode_payload(math.nan, "params", 100)
