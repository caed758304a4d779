"""The default store: one SQLite file, nothing to set up.

All SQL runs on one dedicated thread that owns the connection (an executor of one
worker), so the store is safe to use from several tasks, threads and event loops at
once and SQLite is never touched from two threads. The file is in WAL mode with
``synchronous=FULL`` (a decision survives a power cut, and approvals are few), and
writes take ``BEGIN IMMEDIATE`` so another *process* on the same file (the CLI) is
serialised by SQLite's own lock; its decisions are seen by waiters here through
polling every ``poll_interval`` seconds, while decisions made through this store wake
waiters in this process at once.

Schema (``schema_version`` + ordered :data:`MIGRATIONS`): ``requests`` (one row per
approval request, columns as :data:`~.store.REQUEST_COLUMNS`), ``grants`` (active and
past windows), ``outbox`` (webhook deliveries).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .errors import ApprovalStoreUnavailable
from .models import ApprovalRequest, ApprovalStatus, Grant
from .store import (
    GRANT_COLUMNS,
    MUTABLE_COLUMNS,
    OUTBOX_COLUMNS,
    REQUEST_COLUMNS,
    OutboxMessage,
    OutboxStatus,
    Waiters,
    _WatchHandle,
    grant_from_row,
    grant_row,
    mutable_values,
    outbox_from_row,
    outbox_row,
    request_from_row,
    request_row,
)

__all__ = ["MIGRATIONS", "SqliteStore"]

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    # 1: requests, grants, outbox
    """
    CREATE TABLE requests (
        id TEXT PRIMARY KEY, requester TEXT NOT NULL, requester_groups TEXT NOT NULL, target TEXT NOT NULL,
        role TEXT, statement TEXT NOT NULL, parameters TEXT NOT NULL, policy_version TEXT NOT NULL,
        reasons TEXT NOT NULL, lint_findings TEXT NOT NULL, channel TEXT NOT NULL, approvers TEXT NOT NULL,
        timeout_ms INTEGER NOT NULL, max_window_ms INTEGER NOT NULL, triggers TEXT NOT NULL,
        scope TEXT NOT NULL, created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, binding TEXT NOT NULL,
        status TEXT NOT NULL, decided_by TEXT, decided_groups TEXT, decided_at_ms INTEGER, comment TEXT,
        window_until_ms INTEGER, window_scope TEXT, valid_until_ms INTEGER, used_at_ms INTEGER,
        via_grant TEXT
    );
    CREATE INDEX requests_binding ON requests (binding, status);
    CREATE INDEX requests_status ON requests (status, expires_ms);
    CREATE TABLE grants (
        request_id TEXT PRIMARY KEY REFERENCES requests (id), principal TEXT NOT NULL, target TEXT NOT NULL,
        role TEXT, scope TEXT NOT NULL, until_ms INTEGER NOT NULL, approved_by TEXT NOT NULL,
        approver_groups TEXT NOT NULL, created_ms INTEGER NOT NULL
    );
    CREATE INDEX grants_principal ON grants (principal, target, until_ms);
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, event TEXT NOT NULL, request_id TEXT NOT NULL,
        body TEXT NOT NULL, created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL, status TEXT NOT NULL, last_error TEXT, delivered_ms INTEGER
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_ms);
    """,
)

_REQ = ", ".join(REQUEST_COLUMNS)
_GRANT = ", ".join(GRANT_COLUMNS)
_OUTBOX = ", ".join(OUTBOX_COLUMNS)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class SqliteStore:
    """Approvals in the SQLite file at ``path`` (created, with its schema, on first use)."""

    def __init__(self, path: str | Path, *, poll_interval: float = 0.25, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._open_lock = threading.Lock()
        self._waiters = Waiters()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # --- plumbing ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(lambda conn: None)

    async def close(self) -> None:
        with self._open_lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.wrap_future(executor.submit(shut))
        executor.shutdown(wait=False)

    def _connect(self) -> sqlite3.Connection:
        # Runs on the store's thread.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_ms INTEGER NOT NULL)")
            current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            if current > len(MIGRATIONS):
                raise sqlite3.DatabaseError(f"approval store schema version {current} is newer than this "
                                            f"pgwarden ({len(MIGRATIONS)}); upgrade pgwarden")
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, int(time.time() * 1000)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Runs on the store's thread.
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._open_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgwarden-approvals")
            executor = self._executor
        try:
            return await asyncio.wrap_future(executor.submit(self._call, fn))
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            raise ApprovalStoreUnavailable(f"SQLite file {self.path}: {exc}") from exc

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def watch(self, request_id: str) -> _WatchHandle:
        return self._waiters.watch(request_id)

    # --- requests ---------------------------------------------------------------------------------------

    async def insert(self, request: ApprovalRequest, outbox: Sequence[OutboxMessage] = ()) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO requests ({_REQ}) VALUES ({_marks(len(REQUEST_COLUMNS))})",
                         request_row(request))
            self._insert_outbox(conn, outbox)

        await self._run(lambda conn: self._write(conn, body))
        self._waiters.wake(request.id)

    @staticmethod
    def _insert_outbox(conn: sqlite3.Connection, outbox: Sequence[OutboxMessage]) -> None:
        conn.executemany(f"INSERT INTO outbox ({_OUTBOX}) VALUES ({_marks(len(OUTBOX_COLUMNS))})",
                         [outbox_row(m) for m in outbox])

    async def get(self, request_id: str) -> ApprovalRequest | None:
        row = await self._run(lambda conn: conn.execute(
            f"SELECT {_REQ} FROM requests WHERE id = ?", (request_id,)).fetchone())
        return None if row is None else request_from_row(row)

    async def list(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]:
        if status is None:
            rows = await self._run(lambda conn: conn.execute(
                f"SELECT {_REQ} FROM requests ORDER BY created_ms, id").fetchall())
        else:
            rows = await self._run(lambda conn: conn.execute(
                f"SELECT {_REQ} FROM requests WHERE status = ? ORDER BY created_ms, id", (status.value,)).fetchall())
        return [request_from_row(r) for r in rows]

    async def by_binding(self, binding: str) -> list[ApprovalRequest]:
        rows = await self._run(lambda conn: conn.execute(
            f"SELECT {_REQ} FROM requests WHERE binding = ? AND status IN ('pending', 'approved') "
            "ORDER BY created_ms DESC, id", (binding,)).fetchall())
        return [request_from_row(r) for r in rows]

    async def transition(self, new: ApprovalRequest, expected: ApprovalStatus,
                         outbox: Sequence[OutboxMessage] = (), grant: Grant | None = None) -> bool:
        assignments = ", ".join(f"{c} = ?" for c in MUTABLE_COLUMNS)

        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(f"UPDATE requests SET {assignments} WHERE id = ? AND status = ?",
                               (*mutable_values(new), new.id, expected.value))
            if cur.rowcount != 1:
                return False
            if grant is not None:
                conn.execute(f"INSERT INTO grants ({_GRANT}) VALUES ({_marks(len(GRANT_COLUMNS))})",
                             grant_row(grant))
            self._insert_outbox(conn, outbox)
            return True

        won = await self._run(lambda conn: self._write(conn, body))
        if won:
            self._waiters.wake(new.id)
        return won

    async def consume(self, request_id: str, binding: str, now_ms: int) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE requests SET status = 'used', used_at_ms = ? WHERE id = ? AND "
                               "status = 'approved' AND binding = ? AND valid_until_ms > ?",
                               (now_ms, request_id, binding, now_ms))
            return cur.rowcount == 1

        used = await self._run(lambda conn: self._write(conn, body))
        if used:
            self._waiters.wake(request_id)
        return used

    async def due(self, now_ms: int) -> list[ApprovalRequest]:
        rows = await self._run(lambda conn: conn.execute(
            f"SELECT {_REQ} FROM requests WHERE status = 'pending' AND expires_ms <= ? ORDER BY expires_ms",
            (now_ms,)).fetchall())
        return [request_from_row(r) for r in rows]

    async def grants(self, principal: str, target: str, role: str | None, now_ms: int) -> list[Grant]:
        rows = await self._run(lambda conn: conn.execute(
            f"SELECT {_GRANT} FROM grants WHERE principal = ? AND target = ? AND role IS ? AND until_ms > ? "
            "ORDER BY until_ms DESC", (principal, target, role, now_ms)).fetchall())
        return [grant_from_row(r) for r in rows]

    # --- outbox -----------------------------------------------------------------------------------------

    async def claim_outbox(self, now_ms: int, lease_ms: int, limit: int) -> list[OutboxMessage]:
        def body(conn: sqlite3.Connection) -> list[Any]:
            rows = conn.execute(f"SELECT {_OUTBOX} FROM outbox WHERE status = 'pending' AND next_attempt_ms <= ? "
                                "ORDER BY next_attempt_ms, created_ms, rowid LIMIT ?", (now_ms, limit)).fetchall()
            # The lease keeps another deliverer (another process) off these rows while this one works.
            conn.executemany("UPDATE outbox SET next_attempt_ms = ? WHERE id = ?",
                             [(now_ms + lease_ms, r[0]) for r in rows])
            return rows

        return [outbox_from_row(r) for r in await self._run(lambda conn: self._write(conn, body))]

    async def outbox_delivered(self, message_id: str, attempts: int, now_ms: int) -> None:
        await self._run(lambda conn: self._write(conn, lambda c: c.execute(
            "UPDATE outbox SET status = ?, attempts = ?, delivered_ms = ?, last_error = NULL WHERE id = ?",
            (OutboxStatus.DELIVERED, attempts, now_ms, message_id))))

    async def outbox_retry(self, message_id: str, attempts: int, next_attempt_ms: int, error: str,
                           *, failed: bool = False) -> None:
        status = OutboxStatus.FAILED if failed else OutboxStatus.PENDING
        await self._run(lambda conn: self._write(conn, lambda c: c.execute(
            "UPDATE outbox SET status = ?, attempts = ?, next_attempt_ms = ?, last_error = ? WHERE id = ?",
            (status, attempts, next_attempt_ms, error, message_id))))

    async def outbox(self, status: str | None = None) -> list[OutboxMessage]:
        if status is None:
            rows = await self._run(lambda conn: conn.execute(
                f"SELECT {_OUTBOX} FROM outbox ORDER BY created_ms, rowid").fetchall())
        else:
            rows = await self._run(lambda conn: conn.execute(
                f"SELECT {_OUTBOX} FROM outbox WHERE status = ? ORDER BY created_ms, rowid", (status,)).fetchall())
        return [outbox_from_row(r) for r in rows]
