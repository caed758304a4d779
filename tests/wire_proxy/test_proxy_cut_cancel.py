"""A read cut at the rule's max_rows is cancelled upstream instead of read to its end.

Where it is safe — one read-only statement in a simple Query, sent with the client idle and nothing in
flight — the proxy sends PostgreSQL a cancel once the result passes max_rows; the client still gets the
first rows, the WARNING that the result was cut and ``SELECT 1000``, never the cancel's 57014. Whatever
the client sent behind the statement waits until the statement's ReadyForQuery is in and the cancel has
been delivered, so the cancel cannot land on it. Elsewhere (a transaction block, a text of several
statements, a write with RETURNING, a COPY, the extended protocol) the rest is read and dropped, as before:
a cancel there would take other work with it.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from support.wire import Keys, RawClient, RunningProxy, journal_records

LIMIT = 1000
# minutes of rows, were it read to its end (in the target list: a set-returning function in FROM is
# materialised before its first row)
ENDLESS = "SELECT generate_series(1, 1000000000) AS g"


def _running(dsn: str, text: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT state FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()", [text])]


def _settles(dsn: str, text: str, deadline: float = 5.0) -> bool:
    """The statement is no longer active upstream within ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if "active" not in _running(dsn, text):
            return True
        time.sleep(0.05)
    return False


def test_an_endless_read_is_cut_and_cancelled(proxy: RunningProxy, keys: Keys, cases_db_module: str) -> None:
    client = RawClient(proxy.port, keys.token())
    try:
        replies = client.query(ENDLESS)
        kinds = [k for k, _ in replies]
        assert kinds.count(ord("D")) == LIMIT
        assert ord("E") not in kinds, [bytes(b) for k, b in replies if k == ord("E")]
        assert [bytes(b) for k, b in replies if k == ord("C")] == [b"SELECT 1000\0"]
        assert kinds[-2] == ord("C") and kinds[-3] == ord("N")  # the cut notice, then the tag
        assert [bytes(b) for k, b in replies if k == ord("Z")] == [b"I"]
        assert _settles(cases_db_module, ENDLESS), "the cut statement still runs upstream"
        # the session goes on, and nothing stray cancels its next statement
        replies = client.query("SELECT pg_sleep(0.2), 7")
        assert not [b for k, b in replies if k == ord("E")]
        assert [bytes(b)[-1:] for k, b in replies if k == ord("D")] == [b"7"]
    finally:
        client.close()


def test_statements_sent_behind_a_cut_one_wait_for_the_cancel_and_run_uncancelled(proxy: RunningProxy,
                                                                                    keys: Keys) -> None:
    """Once the endless read is cut (its first rows are in), the client sends three more Queries: they wait
    for the cancel to be delivered and the cut statement to end, then run, each to its own result."""
    from pgwarden.wire_proxy import Query

    client = RawClient(proxy.port, keys.token())
    # past row 1000 a row comes every 10 ms: the proxy has seen row 1001 (and cut) well before the client's
    # next Queries, sent 300 ms after its 1000th row (either order must end well; this one tests the wait)
    slow = ("SELECT g, CASE WHEN g > 1000 THEN pg_sleep(0.01) END AS s "
            "FROM (SELECT generate_series(1, 1000000000) AS g) AS t")
    try:
        client.send(Query(slow))
        first = []
        while sum(1 for k, _ in first if k == ord("D")) < LIMIT:
            first += client.read_until({ord("D")})
        time.sleep(0.3)
        client.send(Query("SELECT pg_sleep(0.1), 1"), Query("SELECT 2"), Query("SELECT g FROM generate_series(1, 3) g"))
        out = [first + client.read_until({ord("Z")})] + [client.read_until({ord("Z")}) for _ in range(3)]
        assert [[bytes(b) for k, b in o if k == ord("E")] for o in out] == [[], [], [], []]
        assert [sum(1 for k, _ in o if k == ord("D")) for o in out] == [LIMIT, 1, 1, 3]
        assert [[bytes(b) for k, b in o if k == ord("C")] for o in out] == [
            [b"SELECT 1000\0"], [b"SELECT 1\0"], [b"SELECT 1\0"], [b"SELECT 3\0"]]
    finally:
        client.close()


def test_a_cut_statement_with_work_pipelined_behind_it_is_read_to_its_end(proxy: RunningProxy, keys: Keys) -> None:
    """Sent in one packet with others, the cut statement is not cancelled (the others are upstream already; a
    cancel landing after it ends would hit one of them): the rest of its rows are read and dropped."""
    from pgwarden.wire_proxy import Query

    client = RawClient(proxy.port, keys.token())
    try:
        for _ in range(5):
            client.send(Query("SELECT generate_series(1, 20000) AS g"), Query("SELECT pg_sleep(0.02), 1"),
                        Query("SELECT 2"))
            out = [client.read_until({ord("Z")}) for _ in range(3)]
            assert [[bytes(b) for k, b in o if k == ord("E")] for o in out] == [[], [], []]
            assert [sum(1 for k, _ in o if k == ord("D")) for o in out] == [LIMIT, 1, 1]
    finally:
        client.close()


def test_the_audit_record_says_cut_not_failed(proxy: RunningProxy, keys: Keys, wire_dir) -> None:
    text = "SELECT generate_series(1, 1000000000) AS audited_cut"
    client = RawClient(proxy.port, keys.token())
    try:
        client.query(text)
    finally:
        client.close()
    deadline = time.monotonic() + 5
    spans: list[dict] = []
    while time.monotonic() < deadline and not spans:
        spans = [r["body"] for r in journal_records(wire_dir / "journal") if r["kind"] == "span"
                 and r["body"]["attributes"].get("db.query.text") == text]
        time.sleep(0.05)
    assert spans, "no statement record"
    attrs = spans[-1]["attributes"]
    assert attrs["db.response.returned_rows"] == LIMIT
    assert attrs["pgwarden.decision"] == "allow"
    assert "error.type" not in attrs and spans[-1]["status"]["code"] != "ERROR"


@pytest.mark.parametrize("how", ["transaction-block", "two-statements"])
def test_where_a_cancel_would_take_other_work_the_rest_is_read_and_dropped(proxy: RunningProxy, keys: Keys,
                                                                           how: str) -> None:
    client = RawClient(proxy.port, keys.token())
    big = "SELECT g FROM generate_series(1, 30000) g"
    try:
        if how == "transaction-block":
            assert not [b for k, b in client.query("BEGIN") if k == ord("E")]
            replies = client.query(big)
            assert [bytes(b) for k, b in replies if k == ord("Z")] == [b"T"]  # the transaction goes on
            assert not [b for k, b in client.query("SELECT 1") if k == ord("E")]
            client.query("COMMIT")
        else:
            replies = client.query(f"{big}; SELECT 5")
            assert [bytes(b) for k, b in replies if k == ord("C")] == [b"SELECT 1000\0", b"SELECT 1\0"]
        assert not [b for k, b in replies if k == ord("E")]
        assert sum(1 for k, _ in replies if k == ord("D")) >= LIMIT
    finally:
        client.close()
