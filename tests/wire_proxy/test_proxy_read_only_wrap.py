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


# ---- the extended protocol: a batch up to Sync is held back, then sent inside READ ONLY -------------------


def test_extended_reads_are_wrapped_and_writes_are_not(wrap, keys: Keys) -> None:
    proxy, dsn = wrap
    with _dba(proxy, keys) as conn:
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT public.sneaky() WHERE %s", [True])  # Parse · Bind · Describe · Execute · Sync
        assert info.value.sqlstate == "25006"
        for _ in range(7):  # psycopg prepares it by name after 5 runs: Bind · Execute of a named statement
            with pytest.raises(psycopg.Error) as info:
                conn.execute("SELECT public.sneaky() WHERE %s", [True], prepare=True)
            assert info.value.sqlstate == "25006"
        assert conn.execute("SELECT count(*) FROM public.ledger WHERE id > %s", [0]).fetchone() == (3,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # a pipeline that writes after reading is not wrapped: both run (rolled back by hand)
        conn.execute("BEGIN")
        with conn.pipeline():
            a = conn.execute("SELECT note FROM public.ledger WHERE id = %s", [1])
            b = conn.execute("UPDATE public.ledger SET note = %s WHERE id = %s", ["z", 1])
        assert a.fetchone() == ("a",) and b.rowcount == 1
        conn.execute("ROLLBACK")
    assert _count(dsn) == 3


def test_extended_batches_over_the_raw_protocol(wrap, keys: Keys) -> None:
    """No BEGIN/COMMIT reply reaches the client and its ReadyForQuery says idle; a Flush inside a batch sends
    it as it came (the client waits for replies before its Sync: nothing may be held back then); the
    unnamed statement is gone after a wrapped batch, and a Bind of it is refused cleanly."""
    from pgwarden.wire_proxy import Bind, Describe, Execute, Flush, Parse, Sync

    proxy, _ = wrap
    client = RawClient(proxy.port, keys.token("dana", ("dba",)), user="dana")
    try:
        client.send(Parse("", "SHOW transaction_read_only"), Bind("", "", (), (), ()), Describe("P", ""),
                    Execute("", 0), Sync())
        replies = client.read_until({ord("Z")})
        assert [b for k, b in replies if k == ord("D")] == [b"\0\x01\0\0\0\x02on"]
        assert [b for k, b in replies if k == ord("C")] == [b"SHOW\0"]
        assert [b for k, b in replies if k == ord("Z")] == [b"I"]
        client.send(Bind("", "", (), (), ()), Execute("", 0), Sync())  # the unnamed statement is gone
        replies = client.read_until({ord("Z")})
        assert any(k == ord("E") and b"26000" in b for k, b in replies)
        assert [b for k, b in replies if k == ord("Z")] == [b"I"]
        client.send(Parse("", "SHOW transaction_read_only"), Flush())
        assert [k for k, _ in client.read_until({ord("1")})][-1] == ord("1")  # ParseComplete, before any Sync
        client.send(Bind("", "", (), (), ()), Execute("", 0), Sync())
        replies = client.read_until({ord("Z")})
        assert [b for k, b in replies if k == ord("D")] == [b"\0\x01\0\0\0\x03off"]  # sent as it came
        client.send(Parse("", "SELECT 1/0"), Bind("", "", (), (), ()), Execute("", 0), Sync())
        replies = client.read_until({ord("Z")})
        assert any(k == ord("E") for k, _ in replies) and [b for k, b in replies if k == ord("Z")] == [b"I"]
        assert [b for k, b in client.query("SELECT 5") if k == ord("D")] == [b"\0\x01\0\0\0\x015"]
    finally:
        client.close()


def test_asyncpg_as_a_writer(wrap, keys: Keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    proxy, dsn = wrap

    async def go() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user="dana", database="main",
                                     password=keys.token("dana", ("dba",)), ssl=False)
        try:
            # (asyncpg prepares with Parse · Describe · Flush and binds later: the batch is sent as it came,
            # so its reads are not wrapped — see docs/policy.md; what matters here is that it works as before)
            assert await conn.fetchval("SELECT count(*)::int FROM public.ledger") == 3
            stmt = await conn.prepare("SELECT note FROM public.ledger WHERE id = $1")
            assert [await stmt.fetchval(i) for i in (1, 2, 3)] == ["a", "b", "c"]
            async with conn.transaction():
                await conn.execute("UPDATE public.ledger SET note = 'w' WHERE id = 2")
                assert await conn.fetchval("SELECT note FROM public.ledger WHERE id = 2") == "w"
                raise asyncpg.exceptions.DataError("roll back")
        except asyncpg.exceptions.DataError:
            pass
        finally:
            await conn.close()

    asyncio.run(go())
    assert _count(dsn) == 3
