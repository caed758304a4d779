"""Approvals in a PostgreSQL control database, for several gateways.

The control database is *not* a governed target: point ``dsn`` at a database of
its own. pgwarden creates and migrates its schema itself (``pgwarden_approvals``:
``schema_version``, ``requests``, ``grants``, ``outbox``), under a transaction-level
advisory lock so two gateways starting at once do not both migrate.

Every decision is a conditional ``UPDATE … WHERE id = %s AND status = %s`` inside a
transaction that also writes the grant and the outbox messages, so of two gateways
deciding at once exactly one wins; the winner's transaction also runs
``pg_notify('pgwarden_approvals', id)``, delivered at commit. Each store keeps one
extra connection that LISTENs on that channel and wakes the waiters of this process
within milliseconds; if that connection drops, waiters fall back to re-reading every
``poll_interval`` seconds until it is back. Commands go through a small
psycopg_pool pool; a pool or connection failure raises
:class:`~.errors.ApprovalStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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

__all__ = ["CHANNEL", "MIGRATIONS", "SCHEMA", "PostgresStore"]

log = logging.getLogger("pgwarden.approvals")

SCHEMA = "pgwarden_approvals"
CHANNEL = "pgwarden_approvals"
_MIGRATE_LOCK = 0x70677761  # 'pgwa': the advisory lock key held while migrating

MIGRATIONS: tuple[str, ...] = (
    # 1: requests, grants, outbox
    """
    CREATE TABLE pgwarden_approvals.requests (
        id text PRIMARY KEY, requester text NOT NULL, requester_groups text NOT NULL, target text NOT NULL,
        role text, statement text NOT NULL, parameters text NOT NULL, policy_version text NOT NULL,
        reasons text NOT NULL, lint_findings text NOT NULL, channel text NOT NULL, approvers text NOT NULL,
        timeout_ms bigint NOT NULL, max_window_ms bigint NOT NULL, triggers text NOT NULL,
        scope text NOT NULL, created_ms bigint NOT NULL, expires_ms bigint NOT NULL, binding text NOT NULL,
        status text NOT NULL, decided_by text, decided_groups text, decided_at_ms bigint, comment text,
        window_until_ms bigint, window_scope text, valid_until_ms bigint, used_at_ms bigint, via_grant text
    );
    CREATE INDEX requests_binding ON pgwarden_approvals.requests (binding, status);
    CREATE INDEX requests_status ON pgwarden_approvals.requests (status, expires_ms);
    CREATE TABLE pgwarden_approvals.grants (
        request_id text PRIMARY KEY REFERENCES pgwarden_approvals.requests (id), principal text NOT NULL,
        target text NOT NULL, role text, scope text NOT NULL, until_ms bigint NOT NULL,
        approved_by text NOT NULL, approver_groups text NOT NULL, created_ms bigint NOT NULL
    );
    CREATE INDEX grants_principal ON pgwarden_approvals.grants (principal, target, until_ms);
    CREATE TABLE pgwarden_approvals.outbox (
        id text PRIMARY KEY, endpoint text NOT NULL, event text NOT NULL, request_id text NOT NULL,
        body text NOT NULL, created_ms bigint NOT NULL, attempts integer NOT NULL,
        next_attempt_ms bigint NOT NULL, status text NOT NULL, last_error text, delivered_ms bigint,
        seq bigserial NOT NULL  -- insertion order, so messages of one instant go out in order
    );
    CREATE INDEX outbox_due ON pgwarden_approvals.outbox (status, next_attempt_ms);
    """,
)

_REQ = ", ".join(REQUEST_COLUMNS)
_GRANT = ", ".join(GRANT_COLUMNS)
_OUTBOX = ", ".join(OUTBOX_COLUMNS)
_T = SCHEMA + "."


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


def _q(text: str) -> sql.SQL:
    return sql.SQL(text)  # type: ignore[arg-type]  # built from our own constants only


class PostgresStore:
    """Approvals in the PostgreSQL database at ``dsn`` (``password`` given apart, never in the DSN file)."""

    def __init__(self, dsn: str, *, password: str | None = None, poll_interval: float = 1.0,
                 connect_timeout: float = 5.0, max_connections: int = 4) -> None:
        extra: dict[str, Any] = {"connect_timeout": max(1, int(connect_timeout)),
                                 "application_name": "pgwarden-approvals"}
        if password is not None:
            extra["password"] = password
        self._conninfo = make_conninfo(dsn, **extra)
        self.poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._pool: AsyncConnectionPool | None = None
        self._open_lock: asyncio.Lock | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiters = Waiters()
        self.listening: asyncio.Event | None = None  # set once LISTEN runs; cleared while it is down

    def __repr__(self) -> str:
        return "PostgresStore(…)"  # the conninfo may carry a password

    # --- plumbing ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return
            pool = AsyncConnectionPool(self._conninfo, min_size=1, max_size=self._max_connections, open=False,
                                       kwargs={"autocommit": True}, timeout=self._connect_timeout,
                                       reconnect_timeout=self._connect_timeout, name="pgwarden-approvals")
            try:
                await pool.open(wait=True, timeout=self._connect_timeout)
                async with pool.connection() as conn:
                    await self._migrate(conn)
            except (psycopg.Error, PoolTimeout, OSError) as exc:
                await pool.close()
                raise ApprovalStoreUnavailable(f"PostgreSQL control database: {_brief(exc)}") from exc
            self._pool = pool
            self.listening = asyncio.Event()
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="pgwarden-approvals-listen")
            # Wait briefly for LISTEN, so a decision made right after open() is not missed by the fast path.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listening.wait(), self._connect_timeout)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @staticmethod
    async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            await conn.execute(_q(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            await conn.execute(_q(f"CREATE TABLE IF NOT EXISTS {_T}schema_version (version integer PRIMARY KEY, "
                                  "applied_at timestamptz NOT NULL DEFAULT now())"))
            cur = await conn.execute(_q(f"SELECT coalesce(max(version), 0) FROM {_T}schema_version"))
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise psycopg.DataError(f"approval store schema version {current} is newer than this pgwarden "
                                        f"({len(MIGRATIONS)}); upgrade pgwarden")
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                await conn.execute(_q(script))
                await conn.execute(_q(f"INSERT INTO {_T}schema_version (version) VALUES (%s)"), (version,))

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                log.warning("approvals: LISTEN connection failed (%s); polling until it is back", _brief(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                await conn.execute(_q(f"LISTEN {CHANNEL}"))
                delay = 0.05
                assert self.listening is not None
                self.listening.set()
                self._waiters.wake_all()  # anything decided while we were not listening is re-read now
                async for note in conn.notifies():
                    self._waiters.wake(note.payload)
            except psycopg.Error as exc:
                log.warning("approvals: LISTEN connection lost (%s); reconnecting", _brief(exc))
            finally:
                if self.listening is not None:
                    self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close()
            await asyncio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        await self.open()
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError) as exc:
            raise ApprovalStoreUnavailable(f"PostgreSQL control database: {_brief(exc)}") from exc

    async def _fetch(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            cur = await conn.execute(_q(query), params)
            return await cur.fetchall()

    def watch(self, request_id: str) -> _WatchHandle:
        return self._waiters.watch(request_id)

    # --- requests ---------------------------------------------------------------------------------------

    async def insert(self, request: ApprovalRequest, outbox: Sequence[OutboxMessage] = ()) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(_q(f"INSERT INTO {_T}requests ({_REQ}) VALUES ({_marks(len(REQUEST_COLUMNS))})"),
                               request_row(request))
            await self._insert_outbox(conn, outbox)
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request.id))
        self._waiters.wake(request.id)

    @staticmethod
    async def _insert_outbox(conn: psycopg.AsyncConnection[Any], outbox: Sequence[OutboxMessage]) -> None:
        if outbox:
            async with conn.cursor() as cur:
                await cur.executemany(
                    _q(f"INSERT INTO {_T}outbox ({_OUTBOX}) VALUES ({_marks(len(OUTBOX_COLUMNS))})"),
                    [outbox_row(m) for m in outbox])

    async def get(self, request_id: str) -> ApprovalRequest | None:
        rows = await self._fetch(f"SELECT {_REQ} FROM {_T}requests WHERE id = %s", (request_id,))
        return request_from_row(rows[0]) if rows else None

    async def list(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]:
        if status is None:
            rows = await self._fetch(f"SELECT {_REQ} FROM {_T}requests ORDER BY created_ms, id")
        else:
            rows = await self._fetch(f"SELECT {_REQ} FROM {_T}requests WHERE status = %s ORDER BY created_ms, id",
                                     (status.value,))
        return [request_from_row(r) for r in rows]

    async def by_binding(self, binding: str) -> list[ApprovalRequest]:
        rows = await self._fetch(f"SELECT {_REQ} FROM {_T}requests WHERE binding = %s AND status IN "
                                 "('pending', 'approved') ORDER BY created_ms DESC, id", (binding,))
        return [request_from_row(r) for r in rows]

    async def transition(self, new: ApprovalRequest, expected: ApprovalStatus,
                         outbox: Sequence[OutboxMessage] = (), grant: Grant | None = None) -> bool:
        assignments = ", ".join(f"{c} = %s" for c in MUTABLE_COLUMNS)
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(_q(f"UPDATE {_T}requests SET {assignments} WHERE id = %s AND status = %s"),
                                     (*mutable_values(new), new.id, expected.value))
            if cur.rowcount != 1:
                return False
            if grant is not None:
                await conn.execute(_q(f"INSERT INTO {_T}grants ({_GRANT}) VALUES ({_marks(len(GRANT_COLUMNS))})"),
                                   grant_row(grant))
            await self._insert_outbox(conn, outbox)
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, new.id))
        self._waiters.wake(new.id)
        return True

    async def consume(self, request_id: str, binding: str, now_ms: int) -> bool:
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                _q(f"UPDATE {_T}requests SET status = 'used', used_at_ms = %s WHERE id = %s AND status = 'approved' "
                   "AND binding = %s AND valid_until_ms > %s"), (now_ms, request_id, binding, now_ms))
            if cur.rowcount != 1:
                return False
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request_id))
        self._waiters.wake(request_id)
        return True

    async def due(self, now_ms: int) -> list[ApprovalRequest]:
        rows = await self._fetch(f"SELECT {_REQ} FROM {_T}requests WHERE status = 'pending' AND expires_ms <= %s "
                                 "ORDER BY expires_ms", (now_ms,))
        return [request_from_row(r) for r in rows]

    async def grants(self, principal: str, target: str, role: str | None, now_ms: int) -> list[Grant]:
        rows = await self._fetch(f"SELECT {_GRANT} FROM {_T}grants WHERE principal = %s AND target = %s AND "
                                 "role IS NOT DISTINCT FROM %s AND until_ms > %s ORDER BY until_ms DESC",
                                 (principal, target, role, now_ms))
        return [grant_from_row(r) for r in rows]

    # --- outbox -----------------------------------------------------------------------------------------

    async def claim_outbox(self, now_ms: int, lease_ms: int, limit: int) -> list[OutboxMessage]:
        # SKIP LOCKED + a lease: two gateways' deliverers never take the same message at once.
        cols = ", ".join(f"o.{c}" for c in OUTBOX_COLUMNS)
        rows = await self._fetch(
            f"WITH picked AS (SELECT id FROM {_T}outbox WHERE status = 'pending' AND next_attempt_ms <= %s "
            "ORDER BY next_attempt_ms, created_ms, seq LIMIT %s FOR UPDATE SKIP LOCKED), "
            f"leased AS (UPDATE {_T}outbox o SET next_attempt_ms = %s FROM picked WHERE o.id = picked.id "
            f"RETURNING {cols}, o.seq) SELECT {_OUTBOX} FROM leased ORDER BY created_ms, seq",
            (now_ms, limit, now_ms + lease_ms))
        return [outbox_from_row(r) for r in rows]

    async def outbox_delivered(self, message_id: str, attempts: int, now_ms: int) -> None:
        await self._fetch(f"UPDATE {_T}outbox SET status = %s, attempts = %s, delivered_ms = %s, last_error = NULL "
                          "WHERE id = %s RETURNING id", (OutboxStatus.DELIVERED, attempts, now_ms, message_id))

    async def outbox_retry(self, message_id: str, attempts: int, next_attempt_ms: int, error: str,
                           *, failed: bool = False) -> None:
        status = OutboxStatus.FAILED if failed else OutboxStatus.PENDING
        await self._fetch(f"UPDATE {_T}outbox SET status = %s, attempts = %s, next_attempt_ms = %s, last_error = %s "
                          "WHERE id = %s RETURNING id", (status, attempts, next_attempt_ms, error, message_id))

    async def outbox(self, status: str | None = None) -> list[OutboxMessage]:
        if status is None:
            rows = await self._fetch(f"SELECT {_OUTBOX} FROM {_T}outbox ORDER BY created_ms, seq")
        else:
            rows = await self._fetch(f"SELECT {_OUTBOX} FROM {_T}outbox WHERE status = %s ORDER BY created_ms, seq",
                                     (status,))
        return [outbox_from_row(r) for r in rows]


def _brief(exc: BaseException) -> str:
    # psycopg messages can span lines (server hints); the first line says what failed. Never the conninfo.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
