"""``env.kv``: a JSON key-value store of the tenant's, kept where the platform keeps tenant state.

Keys are non-empty strings of at most 512 characters; values are any JSON, stored as JSON text.
``list`` pages through keys in code point order; the cursor is the last key of the page, so a page
never repeats or skips a key that existed throughout, whatever is written meanwhile.

``KVBinding`` checks the arguments and the limits; a ``KVStore`` does the I/O. Two stores:
``SqliteKV`` (here: the table ``_tf_kv`` of the tenant's SQLite file, the embedded default, whose
quota is the file size it shares with ``env.db``) and ``PostgresKV`` (``_kv_pg.py``: one table
shared by every machine of a scale-out platform). Both order keys by code point (SQLite's BINARY
collation on UTF-8, PostgreSQL's ``bytea`` of the UTF-8 key) and answer the same calls alike.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

from sandbox import JSON

from ._args import Param, Signature, want_int, want_str
from ._errors import refuse
from ._storage import KV_TABLE, TenantStorage

MAX_KEY_CHARS = 512
MAX_LIST_LIMIT = 1000
MAX_VALUE_BYTES = 1024 * 1024
"""Largest encoded value one ``put`` stores (the storage quota caps the total)."""

SIGNATURES = {
    "get": Signature("env.kv.get", (Param("key"),)),
    "put": Signature("env.kv.put", (Param("key"), Param("value"))),
    "delete": Signature("env.kv.delete", (Param("key"),)),
    "list": Signature("env.kv.list", (Param("prefix", ""), Param("limit", 100), Param("cursor", None))),
}


class KVStore(Protocol):
    """Where one tenant's entries live. Arguments are already checked; failures are ``HostCallError``."""

    def get(self, key: str) -> str | None:
        """The JSON text stored under ``key``, or None."""

    def put(self, key: str, text: str) -> None:
        """Store ``text`` under ``key`` (atomically: all of it or, on any error, nothing)."""

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""

    def keys(self, low: str, high: str | None, after: str | None, limit: int) -> list[str]:
        """At most ``limit`` keys ``k`` with ``low <= k`` (``< high``) (``> after``), in code point order."""


class SqliteKV:
    """``KVStore`` on the table ``_tf_kv`` of the tenant's SQLite file (one transaction a call)."""

    def __init__(self, storage: TenantStorage) -> None:
        self._storage = storage

    def get(self, key: str) -> str | None:
        with self._storage.transaction() as tx:
            row = tx.host(f"SELECT value FROM {KV_TABLE} WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, text: str) -> None:
        with self._storage.transaction() as tx:
            tx.host(
                f"INSERT INTO {KV_TABLE} (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

    def delete(self, key: str) -> bool:
        with self._storage.transaction() as tx:
            return tx.host(f"DELETE FROM {KV_TABLE} WHERE key = ?", (key,)).rowcount > 0

    def keys(self, low: str, high: str | None, after: str | None, limit: int) -> list[str]:
        sql = f"SELECT key FROM {KV_TABLE} WHERE key >= ?"
        params: list[Any] = [low]
        if high is not None:
            sql += " AND key < ?"
            params.append(high)
        if after is not None:
            sql += " AND key > ?"
            params.append(after)
        sql += " ORDER BY key LIMIT ?"
        params.append(limit)
        with self._storage.transaction() as tx:
            return [row[0] for row in tx.host(sql, tuple(params))]


class KVBinding:
    """The host side of ``env.kv``: argument checks and limits, then the tenant's ``KVStore``."""

    signatures = SIGNATURES

    def __init__(self, store: KVStore) -> None:
        self._store = store

    def invoke(self, method: str, args: dict[str, Any]) -> JSON:
        if method == "get":
            return self.get(**args)
        if method == "put":
            return self.put(**args)
        if method == "delete":
            return self.delete(**args)
        return self.list(**args)

    def get(self, key: object) -> JSON:
        text = self._store.get(_key(key))
        return None if text is None else json.loads(text)

    def put(self, key: object, value: object) -> None:
        key = _key(key)
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            size = len(text.encode("utf-8"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise refuse("TypeError", f"env.kv.put: value must be JSON ({exc})") from None
        if size > MAX_VALUE_BYTES:
            raise refuse(
                "ValueError",
                f"env.kv.put: value is {size} bytes encoded; one value may hold {MAX_VALUE_BYTES}",
            )
        self._store.put(key, text)

    def delete(self, key: object) -> bool:
        return self._store.delete(_key(key))

    def list(self, prefix: object, limit: object, cursor: object) -> JSON:
        prefix = want_str(prefix, "env.kv.list: prefix", max_chars=MAX_KEY_CHARS, allow_empty=True)
        limit = want_int(limit, "env.kv.list: limit", low=1, high=MAX_LIST_LIMIT)
        after = None if cursor is None else _decode_cursor(cursor)
        # Every key starting with ``prefix`` lies in [prefix, successor): a range, never a pattern.
        high = _successor(prefix) if prefix else None
        keys = self._store.keys(prefix, high, after, limit + 1)
        more = len(keys) > limit
        keys = keys[:limit]
        return {"keys": keys, "cursor": _encode_cursor(keys[-1]) if more else None}


def _key(key: object) -> str:
    return want_str(key, "key", max_chars=MAX_KEY_CHARS)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000  # surrogates cannot be stored; skip them
        if point <= 0x10FFFF:
            return "".join(chars) + chr(point)
    return None


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _decode_cursor(cursor: object) -> str:
    if not isinstance(cursor, str):
        raise refuse("TypeError", f"env.kv.list: cursor must be a str or None, not {type(cursor).__name__}")
    try:
        return base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError):
        raise refuse(
            "ValueError",
            "env.kv.list: cursor is not one this method returned; pass the previous page's cursor",
        ) from None
