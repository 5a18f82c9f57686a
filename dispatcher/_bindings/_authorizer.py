"""The SQLite authorizer that fences ``env.db`` statements.

SQLite calls the authorizer while it *compiles* a statement (and when it recompiles one after a
schema change), once per action: read a column, insert into a table, call a function, run a
pragma... It is deny by default: an action code without a rule below is refused, so an action added
by a future SQLite is never trusted by accident.

Refused: ATTACH/DETACH (and so VACUUM, which attaches), transactions and savepoints (each call is
one transaction of ours; use ``env.db.batch`` for several statements), temporary and virtual
tables, ``load_extension``, PRAGMAs except a read-only allowlist, anything naming a table with the
reserved prefix ``_tf_`` (``_tf_kv`` belongs to ``env.kv``; this covers views and triggers too,
because their bodies are authorized where they are used), and INSERT/DELETE on the schema tables
outside DDL statements. (SQLite itself refuses direct writes to ``sqlite_schema`` unless
``writable_schema`` is on, which is a PRAGMA write and refused here.)

The host's own ``env.kv`` statements run with ``tenant_mode`` off. That is only sound because the
connection's statement cache is disabled (``cached_statements=0``): otherwise a tenant could send
the exact text of a host statement and reuse its already-authorized compilation.
"""

from __future__ import annotations

import re
import sqlite3

RESERVED_PREFIX = "_tf_"

_ALLOWED = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
        sqlite3.SQLITE_FUNCTION,
        sqlite3.SQLITE_RECURSIVE,
        sqlite3.SQLITE_PRAGMA,
    }
)
_REASONS = {
    sqlite3.SQLITE_ATTACH: "ATTACH (and VACUUM, which attaches) is not allowed: a tenant has exactly one database",
    sqlite3.SQLITE_DETACH: "DETACH is not allowed: a tenant has exactly one database",
    sqlite3.SQLITE_TRANSACTION: (
        "BEGIN/COMMIT/ROLLBACK are not allowed: each env.db call is one transaction; "
        "use env.db.batch(statements=[...]) to run several statements atomically"
    ),
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT/RELEASE are not allowed: use env.db.batch for atomic groups",
    sqlite3.SQLITE_CREATE_VTABLE: "virtual tables are not allowed",
    sqlite3.SQLITE_DROP_VTABLE: "virtual tables are not allowed",
}
_TEMP = "temporary tables, views, indexes and triggers are not allowed (they escape the storage quota)"
for _code in (
    sqlite3.SQLITE_CREATE_TEMP_INDEX,
    sqlite3.SQLITE_CREATE_TEMP_TABLE,
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_CREATE_TEMP_VIEW,
    sqlite3.SQLITE_DROP_TEMP_INDEX,
    sqlite3.SQLITE_DROP_TEMP_TABLE,
    sqlite3.SQLITE_DROP_TEMP_TRIGGER,
    sqlite3.SQLITE_DROP_TEMP_VIEW,
):
    _REASONS[_code] = _TEMP

_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
READ_ONLY_PRAGMAS = frozenset(
    {
        "application_id",
        "collation_list",
        "data_version",
        "encoding",
        "foreign_keys",
        "freelist_count",
        "journal_mode",
        "max_page_count",
        "page_count",
        "page_size",
        "schema_version",
        "table_list",
        "user_version",
    }
)
"""PRAGMAs allowed without an argument (with one, most of them write)."""
INTROSPECTION_PRAGMAS = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "table_info",
        "table_xinfo",
    }
)
"""PRAGMAs allowed with a table or index name argument; they only read."""
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
_DDL_KEYWORDS = frozenset({"CREATE", "DROP", "ALTER", "ANALYZE", "REINDEX"})
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]+")


def leading_keyword(sql: str) -> str:
    """The first keyword of ``sql`` after whitespace and comments, upper-cased ('' if none)."""
    start = _LEADING_NOISE.match(sql)
    word = _WORD.match(sql, start.end() if start else 0)
    return word.group().upper() if word else ""


class Authorizer:
    """The callback passed to ``Connection.set_authorizer``; one per connection.

    Set ``tenant_mode`` (and ``ddl`` from ``leading_keyword``) before compiling a tenant statement;
    after a refusal, ``take_denial()`` says why.
    """

    def __init__(self) -> None:
        self.tenant_mode = False
        self.ddl = False
        self._denial: str | None = None

    def take_denial(self) -> str | None:
        denial, self._denial = self._denial, None
        return denial

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if not self.tenant_mode:
            return sqlite3.SQLITE_OK
        reason = self._check(action, arg1, arg2, db)
        if reason is None:
            return sqlite3.SQLITE_OK
        if self._denial is None:
            self._denial = reason
        return sqlite3.SQLITE_DENY

    def _check(self, action: int, arg1: str | None, arg2: str | None, db: str | None) -> str | None:
        if action not in _ALLOWED:
            return _REASONS.get(action, f"this kind of statement (SQLite action {action}) is not allowed")
        for name in (arg1, arg2):
            if (
                name is not None
                and name.lower().startswith(RESERVED_PREFIX)
                and action != sqlite3.SQLITE_FUNCTION
            ):
                return f"names starting with {RESERVED_PREFIX!r} are reserved ({RESERVED_PREFIX}kv holds env.kv); use env.kv"
        if action == sqlite3.SQLITE_FUNCTION:
            if arg2 is not None and arg2.lower() in _DENIED_FUNCTIONS:
                return f"the function {arg2}() is not allowed"
            return None
        if action == sqlite3.SQLITE_PRAGMA:
            return self._check_pragma((arg1 or "").lower(), arg2, db)
        if (
            action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_DELETE)
            and (arg1 or "").lower() in _SCHEMA_TABLES
        ) and not self.ddl:
            return "writing the schema tables is not allowed; use CREATE/DROP/ALTER statements"
        return None

    @staticmethod
    def _check_pragma(name: str, arg: str | None, db: str | None) -> str | None:
        if db not in (None, "main"):
            return "PRAGMAs may only address the main database"
        if name in INTROSPECTION_PRAGMAS or (arg is None and name in READ_ONLY_PRAGMAS):
            return None
        allowed = ", ".join(sorted(READ_ONLY_PRAGMAS | INTROSPECTION_PRAGMAS))
        return f"PRAGMA {name} is not allowed (only read-only pragmas are: {allowed})"
