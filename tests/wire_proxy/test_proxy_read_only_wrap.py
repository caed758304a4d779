"""A read-only text under a rule that may write runs in a READ ONLY transaction on the wire too.

The MCP door wraps such texts in BEGIN READ ONLY … COMMIT (tests/engine/test_session.py); the wire proxy
does the same for a simple Query sent while the client is idle with nothing in flight: it queues its own
BEGIN READ ONLY before the text and COMMIT after it, drops their replies, and tells the client it is idle
again. So a function the analysis lets through as a read, but which writes behind its back, fails with
25006 instead of writing without the approval a write would need.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from support.wire import Keys, RawClient, RunningProxy, config_data

SETUP = """
CREATE TABLE public.ledger (id int PRIMARY KEY, note text);
INSERT INTO public.ledger VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE FUNCTION public.sneaky() RETURNS int LANGUAGE sql VOLATILE AS $$ DELETE FROM public.ledger RETURNING 1 $$;
"""


@pytest.fixture(scope="module")
def wrap(make_db_module, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    dsn = make_db_module(SETUP)
    directory = tmp_path_factory.mktemp("wrap")
    data = config_data(dsn, directory, keys)
    for rule in data["rules"]:
        if rule["name"] == "dba":
            rule["functions"] = {"allow": ["public.sneaky"]}
    p = RunningProxy(data, directory)
    yield p, dsn
    p.close()


def _dba(proxy: RunningProxy, keys: Keys) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(keys.token("dana", ("dba",)), user="dana"), autocommit=True)


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM public.ledger").fetchone()[0]


def test_a_read_that_writes_behind_its_back_fails_and_writes_nothing(wrap, keys: Keys) -> None:
    proxy, dsn = wrap
    with _dba(proxy, keys) as conn:
        cur = psycopg.ClientCursor(conn)  # a simple Query
        with pytest.raises(psycopg.Error) as info:
            cur.execute("SELECT public.sneaky()")
        assert info.value.sqlstate == "25006"  # read_only_sql_transaction
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert cur.execute("SELECT count(*) FROM public.ledger").fetchone() == (3,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # a real write of the same rule is not wrapped: it runs (and is rolled back here by hand)
        conn.execute("BEGIN")
        assert cur.execute("DELETE FROM public.ledger WHERE id = 3").rowcount == 1
        conn.execute("ROLLBACK")
    assert _count(dsn) == 3


def test_the_client_sees_exactly_what_it_would_without_the_block(wrap, keys: Keys) -> None:
    """Over the raw protocol: the replies of BEGIN and COMMIT never reach the client, every ReadyForQuery it
    gets says idle, an error inside the block leaves the session usable, and two statements in one Query
    both run inside it."""
    proxy, _ = wrap
    client = RawClient(proxy.port, keys.token("dana", ("dba",)), user="dana")
    try:
        for sql in ("SELECT note FROM public.ledger ORDER BY id", "SELECT 1/0", "SELECT 1; SELECT 2",
                    "SHOW transaction_read_only"):
            replies = client.query(sql)
            tags = [body for kind, body in replies if kind == ord("C")]
            assert b"BEGIN\0" not in tags and b"COMMIT\0" not in tags and b"ROLLBACK\0" not in tags, (sql, tags)
            assert [body for kind, body in replies if kind == ord("Z")] == [b"I"], sql
            if sql.startswith("SHOW"):
                assert [body for kind, body in replies if kind == ord("D")] == [b"\0\x01\0\0\0\x02on"]
            if sql == "SELECT 1; SELECT 2":
                assert tags == [b"SELECT 1\0", b"SELECT 1\0"]
            if sql == "SELECT 1/0":
                assert any(kind == ord("E") for kind, _ in replies)
    finally:
        client.close()


def test_inside_the_clients_own_transaction_nothing_is_added(wrap, keys: Keys) -> None:
    proxy, _ = wrap
    with _dba(proxy, keys) as conn:
        cur = psycopg.ClientCursor(conn)
        conn.execute("BEGIN")
        assert cur.execute("SHOW transaction_read_only").fetchone() == ("off",)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.execute("ROLLBACK")
        # and a read-only rule is read-only for the whole session anyway (pinned at start-up)
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as agent:
        assert psycopg.ClientCursor(agent).execute("SHOW default_transaction_read_only").fetchone() == ("on",)
