"""``env.db``: parameterized SQL on the tenant's database, one statement per call.

Parameters are a JSON list (``?`` placeholders) or object (``:name``); ``{"base64": "..."}`` passes
a BLOB, and BLOB results come back in the same shape. ``bool`` binds as 0/1. Each call is one
transaction; ``env.db.batch`` runs several statements in one. The authorizer (``_authorizer.py``)
decides what a statement may touch.

Embedded (SQLite) platforms only. The database is a SQLite file on the machine that runs the call,
so on a scale-out (PostgreSQL) platform a step on another machine would not see its rows and a dead
machine would lose them: there ``TenantBindings`` refuses ``env.db`` with ``BindingNotGranted``
naming that reason, and the platform refuses to grant ``db``. Running tenant SQL on the shared
PostgreSQL server instead (per-tenant roles and schemas a tenant could not ``RESET ROLE`` out of,
statement and resource limits) is a security surface of its own, deliberately not taken on yet.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from sandbox import JSON

from ._args import Param, Signature, want_str
from ._errors import RESPONSE_TOO_LARGE, echo, refuse
from ._policy import BindingPolicy, PolicyGetter
from ._storage import MAX_SQL_CHARS, TenantStorage, Transaction

MAX_BATCH_STATEMENTS = 100

SIGNATURES = {
    "execute": Signature("env.db.execute", (Param("sql"), Param("params", []))),
    "batch": Signature("env.db.batch", (Param("statements"),)),
}


class DBBinding:
    """The host side of ``env.db``."""

    signatures = SIGNATURES

    def __init__(self, storage: TenantStorage, policy: PolicyGetter) -> None:
        self._storage = storage
        self._policy = policy

    def invoke(self, method: str, args: dict[str, Any]) -> JSON:
        if method == "execute":
            return self.execute(**args)
        return self.batch(**args)

    def execute(self, sql: object, params: object) -> JSON:
        text = want_str(sql, "env.db.execute: sql", max_chars=MAX_SQL_CHARS)
        bound = _params(params, "env.db.execute")
        policy = self._policy()
        with self._storage.transaction() as tx:
            return _run(tx, text, bound, policy, "env.db.execute")

    def batch(self, statements: object) -> JSON:
        if not isinstance(statements, list):
            raise refuse(
                "TypeError", 'env.db.batch: statements must be a list of {"sql": ..., "params": ...}'
            )
        if not 1 <= len(statements) <= MAX_BATCH_STATEMENTS:
            raise refuse("ValueError", f"env.db.batch takes 1 to {MAX_BATCH_STATEMENTS} statements")
        parsed: list[tuple[str, list[Any] | dict[str, Any]]] = []
        for index, item in enumerate(statements):
            what = f"env.db.batch statement {index}"
            if not isinstance(item, dict) or "sql" not in item or not set(item) <= {"sql", "params"}:
                raise refuse("TypeError", f'{what} must be an object {{"sql": str, "params": list|object}}')
            text = want_str(item["sql"], f"{what}: sql", max_chars=MAX_SQL_CHARS)
            parsed.append((text, _params(item.get("params", []), what)))
        policy = self._policy()
        with self._storage.transaction() as tx:
            results = [
                _run(tx, text, bound, policy, f"env.db.batch statement {index} (all rolled back)")
                for index, (text, bound) in enumerate(parsed)
            ]
        return {"results": results}


def _run(
    tx: Transaction, sql: str, params: list[Any] | dict[str, Any], policy: BindingPolicy, what: str
) -> JSON:
    cursor, rows = tx.tenant(sql, params, what=what, max_rows=policy.db_max_rows)
    try:
        if len(rows) > policy.db_max_rows:
            raise refuse(
                RESPONSE_TOO_LARGE,
                f"{what}: the statement returns more than {policy.db_max_rows} rows; "
                "nothing was written. Add a LIMIT and page with OFFSET or a key range",
            )
        columns = [d[0] for d in cursor.description] if cursor.description is not None else []
        budget = policy.db_max_result_bytes
        out: list[list[JSON]] = []
        for row in rows:
            values = [_value(v) for v in row]
            budget -= sum(_size(v) for v in row) + 2
            if budget < 0:
                raise refuse(
                    RESPONSE_TOO_LARGE,
                    f"{what}: the rows are larger than {policy.db_max_result_bytes} bytes; "
                    "nothing was written. Select fewer columns or rows",
                )
            out.append(values)
        lastrowid = cursor.lastrowid
        return {"columns": columns, "rows": out, "rowcount": cursor.rowcount, "lastrowid": lastrowid}
    finally:
        cursor.close()


def _params(params: object, what: str) -> list[Any] | dict[str, Any]:
    if params is None:
        return []
    if isinstance(params, list):
        return [_param(v, f"{what}: parameter {i}") for i, v in enumerate(params)]
    if isinstance(params, dict):
        return {str(k): _param(v, f"{what}: parameter {echo(k)}") for k, v in params.items()}
    raise refuse("TypeError", f"{what}: params must be a list (for ?) or an object (for :name)")


def _param(value: object, what: str) -> Any:
    if value is None or isinstance(value, str | int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse("ValueError", f"{what} is not a finite number")
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except (binascii.Error, ValueError):
            raise refuse("ValueError", f"{what}: base64 is malformed") from None
    raise refuse(
        "TypeError",
        f'{what} must be null, a number, a str or {{"base64": str}}, not {type(value).__name__}; '
        "store structured values as JSON text (json.dumps) or use env.kv",
    )


def _value(value: Any) -> JSON:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no Infinity; SQLite stores NaN as NULL already
    return value


def _size(value: Any) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 4
    return 8
