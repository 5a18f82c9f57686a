"""env.kv on a real per-tenant SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

from dispatcher._bindings import TenantBindings

from .conftest import MakeBindings, refusal


def put(env: TenantBindings, key: str, value: Any) -> None:
    env.call("env.kv.put", {"key": key, "value": value})


def test_put_get_delete(env: TenantBindings) -> None:
    assert env.call("env.kv.get", {"key": "a"}) is None
    put(env, "a", {"n": 1, "list": [1, 2.5, "x", None, True]})
    assert env.call("env.kv.get", {"key": "a"}) == {"n": 1, "list": [1, 2.5, "x", None, True]}
    put(env, "a", "replaced")
    assert env.call("env.kv.get", {"key": "a"}) == "replaced"
    assert env.call("env.kv.delete", {"key": "a"}) is True
    assert env.call("env.kv.delete", {"key": "a"}) is False
    assert env.call("env.kv.get", {"key": "a"}) is None


def test_null_value_is_stored(env: TenantBindings) -> None:
    put(env, "n", None)
    assert env.call("env.kv.list", {})["keys"] == ["n"]


def test_file_is_where_documented_and_persists(make_bindings: MakeBindings, tmp_path: Any) -> None:
    env = make_bindings("acme")
    put(env, "k", [1])
    path = tmp_path / "tenants" / "acme.sqlite3"
    assert env.database_path == path and path.exists()
    env.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT key, value FROM _tf_kv").fetchall() == [("k", "[1]")]
    conn.close()
    assert make_bindings("acme").call("env.kv.get", {"key": "k"}) == [1]


def test_list_prefix_order_and_pagination(env: TenantBindings) -> None:
    keys = [f"user:{i:03d}" for i in range(25)] + ["user", "user;", "users:1", "other:1", "usEr:x"]
    for key in keys:
        put(env, key, 1)
    seen: list[str] = []
    cursor = None
    while True:
        page = env.call("env.kv.list", {"prefix": "user:", "limit": 10, "cursor": cursor})
        assert len(page["keys"]) <= 10
        seen += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == sorted(k for k in keys if k.startswith("user:"))
    everything = env.call("env.kv.list", {"limit": 1000})
    assert everything == {"keys": sorted(keys), "cursor": None}


def test_list_exact_page_boundary_has_no_extra_cursor(env: TenantBindings) -> None:
    for i in range(4):
        put(env, f"k{i}", i)
    first = env.call("env.kv.list", {"limit": 2})
    assert first["keys"] == ["k0", "k1"] and first["cursor"] is not None
    second = env.call("env.kv.list", {"limit": 2, "cursor": first["cursor"]})
    assert second == {"keys": ["k2", "k3"], "cursor": None}


def test_list_unicode_and_edge_prefixes(env: TenantBindings) -> None:
    keys = ["é", "éa", "é\U0010ffff", "ê", "\U0010ffff", "\U0010ffffz", "\ud7ffa", "\ue000"]
    for key in keys:
        put(env, key, 1)
    assert env.call("env.kv.list", {"prefix": "é"})["keys"] == ["é", "éa", "é\U0010ffff"]
    assert env.call("env.kv.list", {"prefix": "\U0010ffff"})["keys"] == ["\U0010ffff", "\U0010ffffz"]
    assert env.call("env.kv.list", {"prefix": "\ud7ff"})["keys"] == ["\ud7ffa"]


def test_prefix_is_not_a_pattern(env: TenantBindings) -> None:
    for key in ["a%b", "axb", "a_b", "a_c"]:
        put(env, key, 1)
    assert env.call("env.kv.list", {"prefix": "a%"})["keys"] == ["a%b"]
    assert env.call("env.kv.list", {"prefix": "a_"})["keys"] == ["a_b", "a_c"]


@pytest.mark.parametrize(
    ("args", "type_name", "fragment"),
    [
        ({"key": ""}, "ValueError", "key must not be empty"),
        ({"key": "x" * 513}, "ValueError", "the limit is 512"),
        ({"key": 5}, "TypeError", "key must be a str, not int"),
        ({"key": None}, "TypeError", "key must be a str, not NoneType"),
    ],
)
def test_key_rules(env: TenantBindings, args: dict[str, Any], type_name: str, fragment: str) -> None:
    error = refusal(env, "env.kv.get", args)
    assert (error.type_name, fragment in error.message) == (type_name, True)


def test_key_of_512_chars_is_fine(env: TenantBindings) -> None:
    put(env, "k" * 512, 1)
    assert env.call("env.kv.get", {"key": "k" * 512}) == 1


@pytest.mark.parametrize(
    ("args", "type_name"),
    [
        ({"limit": 0}, "ValueError"),
        ({"limit": 1001}, "ValueError"),
        ({"limit": "10"}, "TypeError"),
        ({"prefix": 3}, "TypeError"),
        ({"cursor": 3}, "TypeError"),
        ({"cursor": "!!"}, "ValueError"),
    ],
)
def test_list_argument_rules(env: TenantBindings, args: dict[str, Any], type_name: str) -> None:
    assert refusal(env, "env.kv.list", args).type_name == type_name


def test_values_must_be_json(env: TenantBindings) -> None:
    assert refusal(env, "env.kv.put", {"key": "a", "value": float("inf")}).type_name == "TypeError"
    assert refusal(env, "env.kv.put", {"key": "a", "value": {1: 2, (1,): 3}}).type_name == "TypeError"
    error = refusal(env, "env.kv.put", {"key": "a", "value": "x" * (1024 * 1024 + 1)})
    assert error.type_name == "ValueError" and "one value may hold" in error.message


def test_many_threads_at_once(env: TenantBindings) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                put(env, f"t{n}:{i:02d}", [n, i])
                assert env.call("env.kv.get", {"key": f"t{n}:{i:02d}"}) == [n, i]
                put(env, "shared", n)
                env.call("env.kv.list", {"prefix": f"t{n}:"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for n in range(8):
        assert len(env.call("env.kv.list", {"prefix": f"t{n}:"})["keys"]) == 40
    assert env.call("env.kv.get", {"key": "shared"}) in range(8)


def test_tenants_have_separate_files(make_bindings: MakeBindings) -> None:
    a = make_bindings("tenant-a")
    b = make_bindings("tenant-b")
    put(a, "secret-plan", "A's")
    assert b.call("env.kv.get", {"key": "secret-plan"}) is None
    assert b.call("env.kv.list", {})["keys"] == []
    put(b, "secret-plan", "B's")
    assert a.call("env.kv.get", {"key": "secret-plan"}) == "A's"
    assert a.database_path != b.database_path
