"""env.db on a real per-tenant SQLite file: SQL, the authorizer, limits, the quota, isolation."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dispatcher._bindings import TenantBindings

from .conftest import MakeBindings, refusal


def sql(env: TenantBindings, text: str, params: Any = None) -> Any:
    args: dict[str, Any] = {"sql": text}
    if params is not None:
        args["params"] = params
    return env.call("env.db.execute", args)


@pytest.fixture
def db(env: TenantBindings) -> TenantBindings:
    sql(env, "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, qty INT)")
    return env


def test_create_insert_select_with_params(db: TenantBindings) -> None:
    first = sql(db, "INSERT INTO items (name, qty) VALUES (?, ?)", ["apple", 3])
    assert first == {"columns": [], "rows": [], "rowcount": 1, "lastrowid": 1}
    sql(db, "INSERT INTO items (name, qty) VALUES (:name, :qty)", {"name": "pear", "qty": 5})
    result = sql(db, "SELECT id, name, qty FROM items WHERE qty >= ? ORDER BY id", [1])
    assert result["columns"] == ["id", "name", "qty"]
    assert result["rows"] == [[1, "apple", 3], [2, "pear", 5]]
    updated = sql(db, "UPDATE items SET qty = qty + 1 WHERE name = ?", ["pear"])
    assert updated["rowcount"] == 1
    assert sql(db, "SELECT qty FROM items WHERE name = 'pear'")["rows"] == [[6]]


def test_positional_form_and_default_params(db: TenantBindings) -> None:
    db.call("env.db.execute", {"args": ["INSERT INTO items (name) VALUES (?)", ["fig"]]})
    assert db.call("env.db.execute", {"args": ["SELECT count(*) AS n FROM items"]})["rows"] == [[1]]


def test_value_types_round_trip(env: TenantBindings) -> None:
    row = sql(env, "SELECT ?, ?, ?, ?, ?, ?", [None, 2**62, 1.5, "é", True, {"base64": "AAEC"}])["rows"][0]
    assert row == [None, 2**62, 1.5, "é", 1, {"base64": "AAEC"}]
    assert sql(env, "SELECT 1e999")["rows"] == [[None]]


def test_integrity_errors_roll_back(db: TenantBindings) -> None:
    sql(db, "INSERT INTO items (name) VALUES ('a')")
    error = refusal(db, "env.db.execute", {"sql": "INSERT INTO items (name) VALUES ('a')"})
    assert error.type_name == "IntegrityError" and "UNIQUE" in error.message


def test_sql_errors_are_clear(env: TenantBindings) -> None:
    error = refusal(env, "env.db.execute", {"sql": "SELEC 1"})
    assert error.type_name == "DatabaseError" and "syntax error" in error.message
    assert refusal(env, "env.db.execute", {"sql": "SELECT ?", "params": [1, 2]}).type_name == "ValueError"
    assert refusal(env, "env.db.execute", {"sql": "SELECT ?", "params": "x"}).type_name == "TypeError"


def test_one_statement_per_call(db: TenantBindings) -> None:
    error = refusal(db, "env.db.execute", {"sql": "INSERT INTO items (name) VALUES ('a'); DROP TABLE items"})
    assert error.type_name == "ValueError" and "env.db.batch" in error.message
    assert sql(db, "SELECT count(*) FROM items")["rows"] == [[0]]


def test_batch_is_atomic(db: TenantBindings) -> None:
    result = db.call(
        "env.db.batch",
        {
            "statements": [
                {"sql": "INSERT INTO items (name) VALUES (?)", "params": ["a"]},
                {"sql": "INSERT INTO items (name) VALUES (?)", "params": ["b"]},
                {"sql": "SELECT name FROM items ORDER BY name"},
            ]
        },
    )
    assert result["results"][2]["rows"] == [["a"], ["b"]]
    error = refusal(
        db,
        "env.db.batch",
        {
            "statements": [
                {"sql": "INSERT INTO items (name) VALUES ('c')"},
                {"sql": "INSERT INTO items (name) VALUES ('a')"},
            ]
        },
    )
    assert error.type_name == "IntegrityError" and "statement 1 (all rolled back)" in error.message
    assert sql(db, "SELECT name FROM items ORDER BY name")["rows"] == [["a"], ["b"]]


def test_batch_shape_errors(env: TenantBindings) -> None:
    assert refusal(env, "env.db.batch", {"statements": []}).type_name == "ValueError"
    assert (
        refusal(env, "env.db.batch", {"statements": [{"sql": "SELECT 1", "x": 1}]}).type_name == "TypeError"
    )
    assert refusal(env, "env.db.batch", {"statements": "SELECT 1"}).type_name == "TypeError"


DENIED = [
    ("ATTACH DATABASE '{tmp}/other.sqlite3' AS other", "ATTACH"),
    ("ATTACH DATABASE ':memory:' AS m", "ATTACH"),
    ("DETACH DATABASE main", "DETACH"),
    ("PRAGMA user_version = 7", "PRAGMA user_version"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode"),
    ("PRAGMA writable_schema = ON", "PRAGMA writable_schema"),
    ("PRAGMA max_page_count = 1000000", "PRAGMA max_page_count"),
    ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys"),
    ("PRAGMA temp.page_count", "main database"),
    ("PRAGMA integrity_check", "PRAGMA integrity_check"),
    ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
    ("SELECT * FROM _tf_kv", "reserved"),
    ("SELECT value FROM _tf_kv WHERE key = ?", "reserved"),
    ("SELECT key FROM _TF_KV", "reserved"),
    ("INSERT INTO _tf_kv (key, value) VALUES ('x', '1')", "reserved"),
    ("DELETE FROM main._tf_kv", "reserved"),
    ("DROP TABLE _tf_kv", "reserved"),
    ("CREATE TABLE _tf_mine (x)", "reserved"),
    ("CREATE INDEX i ON _tf_kv (value)", "reserved"),
    ("CREATE TRIGGER tr AFTER INSERT ON _tf_kv BEGIN SELECT 1; END", "reserved"),
    ("ALTER TABLE _tf_kv RENAME TO mine", "reserved"),
    ("PRAGMA table_info(_tf_kv)", "reserved"),
    ("SELECT * FROM pragma_table_info('_tf_kv')", "reserved"),
    ("ANALYZE", "reserved"),
    ("CREATE TEMP TABLE t (x)", "temporary"),
    ("CREATE VIRTUAL TABLE f USING fts5(a)", "virtual"),
    ("BEGIN", "BEGIN/COMMIT"),
    ("SAVEPOINT s", "SAVEPOINT"),
    ("INSERT INTO sqlite_master VALUES ('table', 'x', 'x', 0, 'CREATE TABLE x(a)')", "schema tables"),
]


@pytest.mark.parametrize(("statement", "fragment"), DENIED)
def test_authorizer_denials(env: TenantBindings, tmp_path: Path, statement: str, fragment: str) -> None:
    env.call("env.kv.put", {"key": "x", "value": "untouched"})
    params = ["x"] if "?" in statement else []
    error = refusal(env, "env.db.execute", {"sql": statement.format(tmp=tmp_path), "params": params})
    assert error.type_name == "PermissionError", error.message
    assert fragment in error.message
    assert env.call("env.kv.get", {"key": "x"}) == "untouched"
    assert not (tmp_path / "other.sqlite3").exists()


@pytest.mark.parametrize(
    "statement",
    [
        "VACUUM",
        "VACUUM INTO '{tmp}/copy.sqlite3'",
        "UPDATE sqlite_master SET sql = 'x'",
        "DELETE FROM sqlite_schema",
    ],
)
def test_statements_refused_by_sqlite_or_us(env: TenantBindings, tmp_path: Path, statement: str) -> None:
    env.call("env.kv.put", {"key": "x", "value": 1})
    refusal(env, "env.db.execute", {"sql": statement.format(tmp=tmp_path)})
    assert not (tmp_path / "copy.sqlite3").exists()
    assert env.call("env.kv.get", {"key": "x"}) == 1


def test_views_and_triggers_cannot_reach_kv(db: TenantBindings) -> None:
    db.call("env.kv.put", {"key": "x", "value": 1})
    sql(db, "CREATE VIEW sneaky AS SELECT * FROM _tf_kv")  # compiles only when used
    assert refusal(db, "env.db.execute", {"sql": "SELECT * FROM sneaky"}).type_name == "PermissionError"
    sql(db, "CREATE TRIGGER t AFTER INSERT ON items BEGIN DELETE FROM _tf_kv; END")
    assert refusal(db, "env.db.execute", {"sql": "INSERT INTO items (name) VALUES ('a')"}).type_name == (
        "PermissionError"
    )
    # The host's own kv statements still work, and the data is intact.
    assert db.call("env.kv.get", {"key": "x"}) == 1
    assert sql(db, "SELECT count(*) FROM items")["rows"] == [[0]]


def test_read_only_pragmas_and_schema_reads(db: TenantBindings) -> None:
    info = sql(db, "PRAGMA table_info(items)")
    assert [row[1] for row in info["rows"]] == ["id", "name", "qty"]
    assert sql(db, "PRAGMA user_version")["rows"] == [[0]]
    assert sql(db, "PRAGMA foreign_keys")["rows"] == [[1]]
    names = sql(db, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")["rows"]
    assert ["items"] in names


def test_ddl_works(db: TenantBindings) -> None:
    sql(db, "CREATE INDEX items_qty ON items (qty)")
    sql(db, "ALTER TABLE items ADD COLUMN note TEXT")
    sql(db, "ALTER TABLE items RENAME TO goods")
    sql(db, "CREATE VIEW v AS SELECT name FROM goods")
    sql(db, "ANALYZE goods")
    sql(db, "DROP VIEW v")
    sql(db, "DROP TABLE goods")
    assert sql(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3) SELECT x FROM c")[
        "rows"
    ] == [[1], [2], [3]]
    assert sql(db, "SELECT value FROM json_each('[1,2]')")["rows"] == [[1], [2]]


def test_row_cap(make_bindings: MakeBindings) -> None:
    env = make_bindings(db_max_rows=50)
    counted = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT {n}) SELECT x FROM c"
    assert len(sql(env, counted.format(n=50))["rows"]) == 50
    error = refusal(env, "env.db.execute", {"sql": counted.format(n=51)})
    assert error.type_name == "ResponseTooLarge" and "more than 50 rows" in error.message


def test_row_cap_rolls_back_writes(make_bindings: MakeBindings) -> None:
    env = make_bindings(db_max_rows=2)
    sql(env, "CREATE TABLE t (x)")
    error = refusal(env, "env.db.execute", {"sql": "INSERT INTO t VALUES (1), (2), (3) RETURNING x"})
    assert error.type_name == "ResponseTooLarge"
    assert sql(env, "SELECT count(*) FROM t")["rows"] == [[0]]


def test_result_bytes_cap(make_bindings: MakeBindings) -> None:
    env = make_bindings(db_max_result_bytes=10_000)
    error = refusal(env, "env.db.execute", {"sql": "SELECT hex(zeroblob(10000))"})
    assert error.type_name == "ResponseTooLarge"


def test_runaway_statement_is_interrupted(make_bindings: MakeBindings) -> None:
    env = make_bindings(db_timeout_seconds=0.2)
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    error = refusal(env, "env.db.execute", {"sql": forever})
    assert error.type_name == "TimeoutError" and "0.2 s" in error.message
    assert sql(env, "SELECT 1")["rows"] == [[1]]


def test_huge_values_are_refused(env: TenantBindings) -> None:
    error = refusal(env, "env.db.execute", {"sql": "SELECT zeroblob(100000000)"})
    assert error.type_name == "ValueError"


QUOTA = 64 * 1024


def test_quota_exhaustion_via_db_keeps_the_database_usable(make_bindings: MakeBindings) -> None:
    env = make_bindings(storage_quota_bytes=QUOTA)
    sql(env, "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
    env.call("env.kv.put", {"key": "keep", "value": "me"})
    stored = 0
    with pytest.raises(Exception) as info:
        for _ in range(100):
            sql(env, "INSERT INTO blobs (data) VALUES (randomblob(4000))")
            stored += 1
    error = info.value
    assert getattr(error, "type_name", None) == "QuotaExceeded"
    assert str(QUOTA) in error.message and "storage_quota_bytes" in error.message  # type: ignore[attr-defined]
    assert 5 < stored < 16
    assert sql(env, "SELECT count(*) FROM blobs")["rows"] == [[stored]]
    # kv shares the quota and is full too; freeing space makes room again.
    assert refusal(env, "env.kv.put", {"key": "big", "value": "x" * 8000}).type_name == "QuotaExceeded"
    sql(env, "DELETE FROM blobs WHERE id <= 3")
    env.call("env.kv.put", {"key": "big", "value": "x" * 8000})
    path = env.database_path
    env.close()
    # The file is a sound SQLite database, and reopens and reads fine.
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    again = make_bindings(storage_quota_bytes=QUOTA)
    assert again.call("env.kv.get", {"key": "keep"}) == "me"
    assert sql(again, "SELECT count(*) FROM blobs")["rows"] == [[stored - 3]]


def test_quota_exhaustion_via_kv(make_bindings: MakeBindings) -> None:
    env = make_bindings(storage_quota_bytes=QUOTA)
    with pytest.raises(Exception) as info:
        for i in range(100):
            env.call("env.kv.put", {"key": f"k{i}", "value": "v" * 4000})
    assert getattr(info.value, "type_name", None) == "QuotaExceeded"
    assert env.call("env.kv.get", {"key": "k0"}) == "v" * 4000


def test_raising_the_quota_applies_at_once(make_bindings: MakeBindings) -> None:
    env = make_bindings(storage_quota_bytes=QUOTA)
    with pytest.raises(Exception, match="quota"):
        for i in range(100):
            env.call("env.kv.put", {"key": f"k{i}", "value": "v" * 4000})
    env.update_policy(env.policy.__class__(granted=env.policy.granted, storage_quota_bytes=4 * QUOTA))
    env.call("env.kv.put", {"key": "more", "value": "v" * 4000})


def test_tenant_a_cannot_reach_b_by_any_name(make_bindings: MakeBindings, tmp_path: Path) -> None:
    a = make_bindings("tenant-a")
    b = make_bindings("tenant-b")
    sql(b, "CREATE TABLE private (x)")
    sql(b, "INSERT INTO private VALUES ('b-secret')")
    b.call("env.kv.put", {"key": "k", "value": "b-kv"})
    other = tmp_path / "tenants" / "tenant-b.sqlite3"
    attempts = [
        "SELECT * FROM private",
        "SELECT * FROM main.private",
        '"tenant-b".private',
        f"ATTACH DATABASE '{other}' AS b",
        f"ATTACH DATABASE 'file:{other}?mode=ro' AS b",
        "SELECT * FROM tenant_b.private",
    ]
    for attempt in attempts:
        refusal(a, "env.db.execute", {"sql": attempt})
    assert sql(a, "SELECT name FROM sqlite_schema WHERE name = 'private'")["rows"] == []
    assert sql(b, "SELECT x FROM private")["rows"] == [["b-secret"]]
