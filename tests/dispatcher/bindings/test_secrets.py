"""env.secrets: values only through get, never in errors, repr or logs."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from dispatcher._bindings import TenantBindings

from .conftest import MakeBindings, refusal

SECRETS = {"API_KEY": "sk-live-0123456789", "DB_PASSWORD": "hunter2-correct-horse"}


@pytest.fixture
def env(make_bindings: MakeBindings) -> TenantBindings:
    return make_bindings(secrets=SECRETS, fetch_allowlist=("127.0.0.1:9",))


def test_get_and_list(env: TenantBindings) -> None:
    assert env.call("env.secrets.get", {"name": "API_KEY"}) == SECRETS["API_KEY"]
    assert env.call("env.secrets.get", {"args": ["DB_PASSWORD"]}) == SECRETS["DB_PASSWORD"]
    assert env.call("env.secrets.list", {}) == ["API_KEY", "DB_PASSWORD"]
    assert env.call("env.secrets.list", None) == ["API_KEY", "DB_PASSWORD"]


def test_missing_secret_names_only_itself(env: TenantBindings) -> None:
    error = refusal(env, "env.secrets.get", {"name": "NOPE"})
    assert error.type_name == "KeyError"
    assert "'NOPE'" in error.message
    for name, value in SECRETS.items():
        assert name not in error.message and value not in error.message


def test_secrets_are_per_tenant(make_bindings: MakeBindings) -> None:
    other = make_bindings("other", secrets={"API_KEY": "theirs"})
    mine = make_bindings("mine", secrets=SECRETS)
    assert other.call("env.secrets.get", {"name": "API_KEY"}) == "theirs"
    assert refusal(other, "env.secrets.get", {"name": "DB_PASSWORD"}).type_name == "KeyError"
    assert mine.call("env.secrets.get", {"name": "API_KEY"}) == SECRETS["API_KEY"]


def test_secrets_never_appear_in_errors_or_logs(
    env: TenantBindings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing: list[tuple[str, Any]] = [
        ("env.secrets.get", {"name": "API_KEY", "extra": 1}),
        ("env.secrets.get", {}),
        ("env.secrets.get", {"name": 3}),
        ("env.secrets.list", {"name": "API_KEY"}),
        ("env.secrets.set", {"name": "API_KEY", "value": "x"}),
        ("env.kv.get", {"key": ""}),
        ("env.db.execute", {"sql": "SELEC"}),
        ("env.fetch", {"url": "http://evil.com/"}),
        ("env.nope", {}),
    ]
    monkeypatch.setattr(env._bindings["secrets"], "list", lambda: 1 / 0)
    with caplog.at_level(logging.DEBUG):
        messages = [refusal(env, name, args).message for name, args in failing]
        messages.append(refusal(env, "env.secrets.list", {}).message)  # a host bug, logged
    assert "env.secrets.list" in caplog.text
    for value in SECRETS.values():
        assert all(value not in message for message in messages)
        assert value not in caplog.text
    assert all("API_KEY" not in m for m in messages[1:])


def test_revoked_grant_hides_values(env: TenantBindings) -> None:
    env.update_policy(env.policy.__class__(granted=frozenset({"kv"}), secrets=SECRETS))
    error = refusal(env, "env.secrets.get", {"name": "API_KEY"})
    assert error.type_name == "BindingNotGranted"
    assert SECRETS["API_KEY"] not in error.message
