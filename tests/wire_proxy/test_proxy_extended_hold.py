"""Approvals on the extended protocol: a statement with parameters is held with its values, released, run.

psycopg (``conn.execute(sql, params)``), JDBC and node-postgres send a parameterised statement as
Parse · Bind · Describe · Execute · Sync. The approval binds to the text *and* the values, so the proxy
collects the statement up to Sync, holds it, and answers with the replies the client expects once an
approver releases it; any other shape is refused before anything reaches PostgreSQL.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.wire_proxy import Bind, Describe, Execute, Flush, Parse, Sync
from support.wire import Keys, RawClient, RunningProxy, config_data

SETUP = """
CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL, note text);
INSERT INTO jobs SELECT g, 'queued', 'job ' || g FROM generate_series(1, 20) g;
"""


@pytest.fixture(scope="module")
def held_proxy(make_db_module, wire_dir: Path, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    data = config_data(make_db_module(SETUP), wire_dir, keys, proxy={"approval_notice_interval": 200})
    data["rules"].insert(0, {
        "name": "job-runner", "match": {"groups": ["job-runners"]}, "target": "main",
        "statements": {"allow": ["read", "write", "transaction"]},
        "approval": {"required_for": ["destructive", "ddl"], "approvers": ["dba"]},
        "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.jobs"]},
    })
    proxy = RunningProxy(data, wire_dir)
    yield proxy
    proxy.close()


def _runner(proxy: RunningProxy, keys: Keys) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(keys.token("runner", ("job-runners",)), user="runner"), autocommit=True)


def _decide_soon(proxy: RunningProxy, verb: str, *args: str) -> threading.Thread:
    broker = proxy.runtime.broker  # type: ignore[union-attr]

    def run() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pending = proxy.call(broker.list("pending"))
            if pending:
                proxy.call(getattr(broker, verb)(pending[0].id, "dana", ["dba"], *args))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _count(proxy: RunningProxy, keys: Keys, where: str) -> int:
    with _runner(proxy, keys) as conn:
        return conn.execute(f"SELECT count(*) FROM jobs WHERE {where}").fetchone()[0]


def test_parameterised_delete_is_held_with_its_values_then_runs(held_proxy: RunningProxy, keys: Keys) -> None:
    notices: list[str] = []
    with _runner(held_proxy, keys) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        thread = _decide_soon(held_proxy, "approve")
        cur = conn.execute("DELETE FROM jobs WHERE id = %s RETURNING id, state", [3])
        thread.join()
        assert cur.fetchall() == [(3, "queued")]  # the rows of the released statement, described and typed
        assert cur.statusmessage == "DELETE 1"
        assert any("waiting for approval" in n for n in notices)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    assert _count(held_proxy, keys, "id = 3") == 0 and _count(held_proxy, keys, "true") == 19
    request = held_proxy.call(held_proxy.runtime.broker.list())[0]  # type: ignore[union-attr]
    assert request.statement == "DELETE FROM jobs WHERE id = $1 RETURNING id, state"
    assert list(request.parameters) == ["3"]  # the approver saw the value that ran


def test_denied_parameterised_statement_errors_and_nothing_runs(held_proxy: RunningProxy, keys: Keys) -> None:
    with _runner(held_proxy, keys) as conn:
        thread = _decide_soon(held_proxy, "deny", "not this one")
        with pytest.raises(psycopg.Error, match=r"denied|not this one"):
            conn.execute("DELETE FROM jobs WHERE id = %s", [4])
        thread.join()
        assert conn.execute("SELECT count(*) FROM jobs WHERE id = 4").fetchone() == (1,)


def test_jdbc_style_ddl_without_parameters_is_held(held_proxy: RunningProxy, keys: Keys) -> None:
    """JDBC sends even a DDL without parameters as Parse/Bind/Describe/Execute/Sync."""
    raw = RawClient(held_proxy.port, keys.token("runner", ("job-runners",)), user="runner")
    try:
        thread = _decide_soon(held_proxy, "approve")
        replies = raw.extended("CREATE INDEX jobs_state ON jobs (state)")
        thread.join()
        kinds = [chr(k) for k, _ in replies if chr(k) != "N"]
        assert kinds == ["1", "2", "n", "C", "Z"], kinds  # ParseComplete BindComplete NoData CommandComplete RFQ
        assert replies[-2][1].startswith(b"CREATE INDEX")
    finally:
        raw.close()
    with _runner(held_proxy, keys) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'jobs_state'").fetchone() == (1,)


@pytest.mark.parametrize("shape", ["named", "flush", "two_parses", "binary_param", "no_execute"])
def test_other_shapes_are_refused_before_anything_runs(held_proxy: RunningProxy, keys: Keys, shape: str) -> None:
    sql = "DELETE FROM jobs WHERE id = $1"
    messages = {
        "named": [Parse("del", sql), Bind("", "del", (), (b"5",), ()), Execute("", 0), Sync()],
        "flush": [Parse("", sql), Flush(), Bind("", "", (), (b"5",), ()), Execute("", 0), Sync()],
        "two_parses": [Parse("", sql), Parse("", "SELECT 1"), Sync()],
        "binary_param": [Parse("", sql), Bind("", "", (1,), (b"\0\0\0\x05",), ()), Execute("", 0), Sync()],
        "no_execute": [Parse("", sql), Describe("S", ""), Sync()],
    }[shape]
    raw = RawClient(held_proxy.port, keys.token("runner", ("job-runners",)), user="runner")
    try:
        raw.send(*messages)
        replies = raw.read_until({ord("Z")})
        kinds = [chr(k) for k, _ in replies]
        assert kinds == ["E", "Z"], kinds
        assert b"C55000" in replies[0][1] and b"pgwarden:" in replies[0][1]
        assert replies[-1][1] == b"I"
        # the session is still usable
        assert [chr(k) for k, _ in raw.query("SELECT 1")][-1] == "Z"
    finally:
        raw.close()
    assert held_proxy.call(held_proxy.runtime.broker.list("pending")) == []  # type: ignore[union-attr]
    assert _count(held_proxy, keys, "id = 5") == 1


@pytest.mark.parametrize("params", [None, [8]], ids=["simple", "extended"])
def test_no_hold_inside_a_transaction_block(held_proxy: RunningProxy, keys: Keys, params) -> None:
    """Released statements run on a connection of their own: inside the client's transaction one would
    commit by itself and survive the client's ROLLBACK, so it is refused there with what to do instead."""
    with psycopg.connect(held_proxy.dsn(keys.token("runner", ("job-runners",)), user="runner")) as conn:
        conn.execute("SELECT 1")  # psycopg opened a transaction block
        with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="transaction block") as info:
            conn.execute("DELETE FROM jobs WHERE id = 8" if params is None else "DELETE FROM jobs WHERE id = %s",
                         params)
        assert "autocommit" in (info.value.diag.message_hint or "")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM jobs WHERE id = 8").fetchone() == (1,)
    assert held_proxy.call(held_proxy.runtime.broker.list("pending")) == []  # type: ignore[union-attr]


def test_disconnect_while_held_withdraws(held_proxy: RunningProxy, keys: Keys) -> None:
    broker = held_proxy.runtime.broker  # type: ignore[union-attr]
    raw = RawClient(held_proxy.port, keys.token("runner", ("job-runners",)), user="runner")
    raw.send(Parse("", "DELETE FROM jobs WHERE id = $1"), Bind("", "", (), (b"6",), ()), Execute("", 0), Sync())
    deadline = time.monotonic() + 10
    while not held_proxy.call(broker.list("pending")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (request,) = held_proxy.call(broker.list("pending"))
    raw.close()
    while held_proxy.call(broker.get(request.id)).pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held_proxy.call(broker.get(request.id)).status.value == "withdrawn"
    assert _count(held_proxy, keys, "id = 6") == 1


@pytest.mark.parametrize(("value", "pgtype", "oid"), [
    ("-32768", "int2", 21), ("2147483647", "int4", 23), ("-9223372036854775808", "int8", 20),
    ("t", "bool", 16), ("0.5", "float8", 701), ("héllo", "text", 25), ("\\xdeadbeef", "bytea", 17),
    ("1e100", "numeric", 1700), ("-0.000120", "numeric", 1700), ("NaN", "numeric", 1700),
    ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "uuid", 2950), ('{"a": [1, 2]}', "jsonb", 3802),
])
def test_binary_parameters_read_as_postgresql_prints_them(pg_admin_dsn: str, value: str, pgtype: str,
                                                           oid: int) -> None:
    """What an approver is shown (and what later runs) is PostgreSQL's own text of the binary value."""
    from pgwarden.wire_proxy._hold import as_text

    with psycopg.connect(pg_admin_dsn) as conn:
        send = {"numeric": "numeric_send", "uuid": "uuid_send", "jsonb": "jsonb_send"}.get(pgtype, pgtype + "send")
        raw, text = conn.execute(f"SELECT {send}(%s::{pgtype}), %s::{pgtype}::text", [value, value]).fetchone()
    assert as_text(bytes(raw), 1, oid) == ("true" if text == "true" else text)


def test_unknown_binary_parameter_is_refused() -> None:
    from pgwarden.wire_proxy._hold import HoldRefused, as_text

    with pytest.raises(HoldRefused, match="cannot be shown"):
        as_text(b"\0\0\0\1", 1, 1186)  # interval
