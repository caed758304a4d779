"""Fail closed: a store that cannot be reached raises approval_store_unavailable, never a guess."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest
from approvals_support import ALICE, ask
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pgwarden.engine.approvals import ApprovalBroker, ApprovalStoreUnavailable, PostgresStore, SqliteStore

pytestmark = pytest.mark.anyio


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once the socket is closed


async def test_postgres_closed_port(tmp_path: Path) -> None:
    broker = ApprovalBroker(PostgresStore(f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres",
                                          connect_timeout=1))
    try:
        with pytest.raises(ApprovalStoreUnavailable) as exc_info:
            await broker.request(**ask())
        assert exc_info.value.code == "approval_store_unavailable" and exc_info.value.sqlstate == "08006"
        with pytest.raises(ApprovalStoreUnavailable):
            await broker.consume("apr_x", "0" * 64)
    finally:
        await broker.close()


async def test_sqlite_path_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    broker = ApprovalBroker(SqliteStore(blocker / "approvals.db"))
    try:
        with pytest.raises(ApprovalStoreUnavailable) as exc_info:
            await broker.start(background=False)
        assert exc_info.value.code == "approval_store_unavailable"
        with pytest.raises(ApprovalStoreUnavailable):
            await broker.request(**ask())
        with pytest.raises(ApprovalStoreUnavailable):
            await broker.approve("apr_x", *ALICE)
    finally:
        await broker.close()


async def test_postgres_lost_after_open(make_db, pg_admin_dsn: str) -> None:
    dsn = make_db("")
    broker = ApprovalBroker(PostgresStore(dsn, connect_timeout=1))
    try:
        req = await broker.request(**ask())
        name = conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(str(name))))
        with pytest.raises(ApprovalStoreUnavailable):
            await broker.approve(req.id, *ALICE)
        with pytest.raises(ApprovalStoreUnavailable):
            await broker.consume(req.id, req.binding)
    finally:
        await broker.close()
