"""One tenant's SQLite database, shared by ``env.kv`` and ``env.db``.

Design note. Each tenant gets its own file, ``<data_dir>/tenants/<tenant>.sqlite3``, created on
first use (the idea of Cloudflare's Durable Object Facets): isolation between tenants is the file
system's, not a ``WHERE tenant = ?`` clause that one bug could forget, and a tenant's data can be
moved or deleted as one file. Host calls arrive on sandbox worker threads, so the file has one
connection (``check_same_thread=False``) guarded by a lock, opened lazily; every call is one
``BEGIN IMMEDIATE`` transaction, rolled back on any error, so a failed call leaves nothing behind.

Limits: ``PRAGMA max_page_count`` caps the file at the storage quota (SQLite then fails the write
with SQLITE_FULL, reported as ``QuotaExceeded``, and the rollback keeps the file intact); a
progress handler interrupts a statement that runs past ``db_timeout_seconds``; ``setlimit`` bounds
attached databases (none), value length and SQL length. The authorizer is in ``_authorizer.py``.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sandbox import HostCallError

from ._authorizer import Authorizer, leading_keyword
from ._errors import QUOTA_EXCEEDED, refuse

KV_TABLE = "_tf_kv"
MAX_VALUE_BYTES = 8 * 1024 * 1024
"""Largest string or blob SQLite will build (``SQLITE_LIMIT_LENGTH``)."""
MAX_SQL_CHARS = 100_000
"""Longest SQL text of one statement."""
_BUSY_TIMEOUT_SECONDS = 5.0
_PROGRESS_OPS = 1000

_SCHEMA = f"CREATE TABLE IF NOT EXISTS {KV_TABLE} (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"


class TenantStorage:
    """The tenant's database file: lazily opened, locked, quota-capped. ``close()`` is idempotent."""

    def __init__(self, path: Path, *, quota_bytes: int, timeout_seconds: float) -> None:
        self.path = path
        self._quota_bytes = quota_bytes
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._auth = Authorizer()
        self._deadline = math.inf
        self._closed = False

    def configure(self, *, quota_bytes: int, timeout_seconds: float) -> None:
        """Apply a new quota and timeout (a lower quota never shrinks an already larger file)."""
        with self._lock:
            self._quota_bytes = quota_bytes
            self._timeout = timeout_seconds
            if self._conn is not None:
                self._apply_quota(self._conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; any error rolls back."""
        with self._lock:
            if self._closed:
                raise refuse("RuntimeError", "this tenant's storage is closed; the invocation is ending")
            conn = self._open()
            self._deadline = time.monotonic() + self._timeout
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield Transaction(conn, self._auth, self)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self.translate(exc, None) from exc
                raise
            finally:
                self._deadline = math.inf
                self._auth.tenant_mode = False

    def translate(self, exc: sqlite3.Error, denial: str | None, what: str = "") -> HostCallError:
        """The guest-facing error for a SQLite error (``what`` prefixes the message)."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        prefix = f"{what}: " if what else ""
        if code == sqlite3.SQLITE_FULL:
            return refuse(
                QUOTA_EXCEEDED,
                f"{prefix}the tenant's storage quota of {self._quota_bytes} bytes (shared by env.kv and "
                "env.db) is full; nothing was written. Delete keys or rows, or ask an operator to raise "
                "storage_quota_bytes in the tenant policy",
            )
        if code == sqlite3.SQLITE_INTERRUPT:
            return refuse(
                "TimeoutError",
                f"{prefix}the statement ran longer than {self._timeout:g} s and was stopped; "
                "nothing was written. Add an index or a LIMIT, or split the work",
            )
        if denial is not None or code == sqlite3.SQLITE_AUTH:
            return refuse("PermissionError", f"{prefix}statement refused: {denial or 'not authorized'}")
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return refuse("TimeoutError", f"{prefix}the database stayed busy; retry the call")
        if code == sqlite3.SQLITE_CONSTRAINT:
            return refuse("IntegrityError", f"{prefix}{exc}")
        if code == sqlite3.SQLITE_TOOBIG:
            return refuse("ValueError", f"{prefix}a string or blob is larger than {MAX_VALUE_BYTES} bytes")
        if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in str(exc):
            return refuse(
                "ValueError",
                f"{prefix}env.db runs exactly one SQL statement per call; split the script or use "
                "env.db.batch(statements=[...]) to run several atomically",
            )
        if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
            return refuse("ValueError", f"{prefix}{exc}")
        return refuse("DatabaseError", f"{prefix}{exc}")

    # ----------------------------------------------------------------------- internals

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path),
            timeout=_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=0,  # see _authorizer.py: every statement is authorized afresh
        )
        try:
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS * 4)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA trusted_schema=OFF")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
            self._apply_quota(conn)
            conn.execute(_SCHEMA)
            conn.set_authorizer(self._auth)
            conn.set_progress_handler(self._progress, _PROGRESS_OPS)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _apply_quota(self, conn: sqlite3.Connection) -> None:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        conn.execute(f"PRAGMA max_page_count={max(1, self._quota_bytes // int(page_size))}")

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0


class Transaction:
    """Statements inside one ``TenantStorage.transaction``."""

    def __init__(self, conn: sqlite3.Connection, auth: Authorizer, storage: TenantStorage) -> None:
        self._conn = conn
        self._auth = auth
        self._storage = storage

    def host(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run one of the host's own statements (``env.kv``): not subject to the tenant rules."""
        return self._conn.execute(sql, params)

    def tenant(
        self, sql: str, params: list[Any] | dict[str, Any], *, what: str, max_rows: int
    ) -> tuple[sqlite3.Cursor, list[tuple[Any, ...]]]:
        """Run a tenant statement under the authorizer; fetch at most ``max_rows + 1`` rows."""
        self._auth.tenant_mode = True
        self._auth.ddl = leading_keyword(sql) in {"CREATE", "DROP", "ALTER", "ANALYZE", "REINDEX"}
        self._auth.take_denial()
        try:
            cursor = self._conn.execute(sql, params)
            rows = cursor.fetchmany(max_rows + 1) if cursor.description is not None else []
            return cursor, rows
        except sqlite3.Error as exc:
            raise self._storage.translate(exc, self._auth.take_denial(), what) from exc
        except OverflowError:
            raise refuse("ValueError", f"{what}: an integer parameter does not fit in 64 bits") from None
        except UnicodeEncodeError:
            raise refuse("ValueError", f"{what}: the SQL or a parameter is not valid Unicode") from None
        finally:
            self._auth.tenant_mode = False
