"""Call routing, grants, argument shapes, policy validation, lifecycle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import dispatcher._bindings as bindings_pkg
from dispatcher._bindings import BindingPolicy, TenantBindings
from sandbox import HostCallError

from .conftest import MakeBindings, refusal

CALLS = {
    "kv": ("env.kv.get", {"key": "a"}),
    "db": ("env.db.execute", {"sql": "SELECT 1"}),
    "fetch": ("env.fetch", {"url": "http://127.0.0.1:9/"}),
    "secrets": ("env.secrets.list", {}),
}


def test_exports_are_pinned() -> None:
    assert sorted(bindings_pkg.__all__) == [
        "BindingPolicy",
        "DB_ON_POSTGRES",
        "KNOWN_BINDINGS",
        "TenantBindings",
    ]
    assert frozenset({"kv", "db", "fetch", "secrets"}) == bindings_pkg.KNOWN_BINDINGS


@pytest.mark.parametrize("binding", sorted(CALLS))
def test_each_binding_refused_when_not_granted(make_bindings: MakeBindings, binding: str) -> None:
    env = make_bindings(granted=frozenset(CALLS) - {binding})
    name, args = CALLS[binding]
    error = refusal(env, name, args)
    assert error.type_name == "BindingNotGranted"
    assert f"binding {binding!r} is not granted to this tenant" in error.message
    assert f'bindings: ["{binding}"]' in error.message


def test_nothing_granted_touches_no_file(make_bindings: MakeBindings) -> None:
    env = make_bindings(granted=frozenset())
    for name, args in CALLS.values():
        assert refusal(env, name, args).type_name == "BindingNotGranted"
    assert not env.database_path.exists()


def test_update_policy_grants_and_revokes(make_bindings: MakeBindings) -> None:
    env = make_bindings(granted=frozenset())
    assert refusal(env, "env.kv.get", {"key": "a"}).type_name == "BindingNotGranted"
    env.update_policy(BindingPolicy(granted=frozenset({"kv"})))
    env.call("env.kv.put", {"key": "a", "value": 1})
    assert env.call("env.kv.get", {"key": "a"}) == 1
    env.update_policy(BindingPolicy(granted=frozenset()))
    assert refusal(env, "env.kv.get", {"key": "a"}).type_name == "BindingNotGranted"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("env.nope.get", "env has no binding 'nope'; bindings are env.db, env.fetch, env.kv, env.secrets"),
        (
            "env.kv.nope",
            "env.kv has no method 'nope'; it has env.kv.delete, env.kv.get, env.kv.list, env.kv.put",
        ),
        ("env.kv", "'env.kv' is not a method; env.kv has env.kv.delete"),
        ("env.kv.get.x", "is not a method"),
        ("env.kv._storage", "env.kv has no method '_storage'"),
        ("env.secrets.set", "it has env.secrets.get, env.secrets.list"),
        ("kv.get", "is not a binding call"),
        ("", "is not a binding call"),
    ],
)
def test_unknown_names_list_what_exists(env: TenantBindings, name: str, fragment: str) -> None:
    error = refusal(env, name, {})
    assert error.type_name == "AttributeError"
    assert fragment in error.message


def test_non_str_name_is_refused(env: TenantBindings) -> None:
    error = refusal(env, 42, {})  # type: ignore[arg-type]
    assert error.type_name == "AttributeError"


@pytest.mark.parametrize(
    "args",
    [
        {"key": "a", "value": [1]},
        {"args": ["a", [1]]},
        {"args": ["a"], "kwargs": {"value": [1]}},
        {"kwargs": {"key": "a", "value": [1]}},
        ["a", [1]],
    ],
)
def test_argument_shapes(env: TenantBindings, args: Any) -> None:
    env.call("env.kv.put", args)
    assert env.call("env.kv.get", {"args": ["a"]}) == [1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "env.kv.put(key, value) is missing the required argument 'key'"),
        ({"key": "a"}, "env.kv.put(key, value) is missing the required argument 'value'"),
        ({"key": "a", "value": 1, "ttl": 3}, "env.kv.put(key, value) got an unexpected argument 'ttl'"),
        ({"args": ["a", 1, 2]}, "env.kv.put(key, value) takes at most 2 arguments (3 given)"),
        ({"args": ["a"], "kwargs": {"key": "b", "value": 1}}, "got multiple values for argument 'key'"),
        ({"args": "a"}, '"args" must be a JSON list'),
        ("a", "arguments must be a JSON object"),
    ],
)
def test_bad_arguments_name_the_signature(env: TenantBindings, args: Any, fragment: str) -> None:
    error = refusal(env, "env.kv.put", args)
    assert error.type_name == "TypeError"
    assert fragment in error.message


def test_defaults_are_fresh_each_call(env: TenantBindings) -> None:
    assert "env.kv.list(prefix='', limit=100, cursor=None)" in refusal(env, "env.kv.list", {"x": 1}).message
    assert "env.fetch(url, method='GET', headers={}, body=None)" in refusal(env, "env.fetch", {}).message


def test_host_bug_becomes_host_error_and_is_logged(
    env: TenantBindings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(env._bindings["kv"], "get", broken)
    with caplog.at_level(logging.ERROR, logger="dispatcher.bindings"):
        error = refusal(env, "env.kv.get", {"key": "a"})
    assert error.type_name == "HostError"
    assert "boom" not in error.message
    assert "env.kv.get" in caplog.text


def test_close_is_idempotent_and_final(env: TenantBindings) -> None:
    env.call("env.kv.put", {"key": "a", "value": 1})
    env.close()
    env.close()
    error = refusal(env, "env.kv.get", {"key": "a"})
    assert error.type_name == "RuntimeError"
    assert "closed" in error.message


def test_context_manager_closes(tmp_path: Path) -> None:
    with TenantBindings("acme", BindingPolicy(granted=frozenset({"kv"})), tmp_path) as env:
        env.call("env.kv.put", {"key": "a", "value": 1})
    assert refusal(env, "env.kv.get", {"key": "a"}).type_name == "RuntimeError"


@pytest.mark.parametrize("tenant", ["", "../evil", "a/b", "-x", "a" * 101, "a.b"])
def test_tenant_ids_that_could_escape_the_directory_are_rejected(tmp_path: Path, tenant: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        TenantBindings(tenant, BindingPolicy(granted=frozenset()), tmp_path)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"granted": frozenset({"kv", "shell"})}, "unknown bindings"),
        ({"fetch_allowlist": ("http://x.com/",)}, "not a URL"),
        ({"fetch_allowlist": ("*.1.2.3.4",)}, "not a valid host|needs a domain"),
        ({"fetch_allowlist": ("x.com:99999",)}, "invalid port"),
        ({"fetch_allowlist": ("bad host",)}, "not a valid host"),
        ({"fetch_allowlist": "x.com"}, "not one string"),
        ({"storage_quota_bytes": 10}, "storage_quota_bytes"),
        ({"fetch_timeout_seconds": 0}, "fetch_timeout_seconds"),
        ({"fetch_max_redirects": -1}, "fetch_max_redirects"),
        ({"secrets": {"a": 1}}, "secrets"),
    ],
)
def test_policy_validation(fields: dict[str, Any], match: str) -> None:
    fields.setdefault("granted", frozenset())
    with pytest.raises(ValueError, match=match):
        BindingPolicy(**fields)


def test_policy_repr_hides_secrets_and_secrets_are_read_only() -> None:
    source = {"API_KEY": "sk-very-secret"}
    policy = BindingPolicy(granted=frozenset({"secrets"}), secrets=source)
    assert "sk-very-secret" not in repr(policy)
    source["API_KEY"] = "changed"
    assert policy.secrets["API_KEY"] == "sk-very-secret"
    with pytest.raises(TypeError):
        policy.secrets["API_KEY"] = "x"  # type: ignore[index]


def test_host_call_error_only(env: TenantBindings) -> None:
    # A scattering of hostile inputs: every failure is a HostCallError, nothing else escapes.
    hostile: list[tuple[Any, Any]] = [
        ("env.kv.put", {"key": "\ud800", "value": 1}),
        ("env.kv.put", {"key": "a", "value": float("nan")}),
        ("env.kv.list", {"limit": True}),
        ("env.kv.list", {"cursor": "%%%"}),
        ("env.db.execute", {"sql": "SELECT ?", "params": [2**80]}),
        ("env.db.execute", {"sql": "SELECT ?", "params": [[1]]}),
        ("env.db.execute", {"sql": "\ud800"}),
        ("env.db.batch", {"statements": [{"sql": 1}]}),
        ("env.fetch", {"url": "::::"}),
        ("env.fetch", {"url": "http://127.0.0.1:9/", "headers": {"bad name": "x"}}),
        ("env.secrets.get", {"name": None}),
    ]
    for name, args in hostile:
        with pytest.raises(HostCallError):
            env.call(name, args)
