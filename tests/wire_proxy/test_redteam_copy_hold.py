"""Red-team of COPY on the wire door and of approval holds (wire_proxy/connection.py, _hold.py, server.py
``_approve``, engine/runtime.py ``HeldStatements``, engine/approvals/broker.py).

Claims attacked:

* ``COPY t TO STDOUT`` / ``COPY (query) TO STDOUT`` of masked data is rewritten and masked in every format
  (text, csv with HEADER / FORCE_QUOTE, whole rows, CTEs, casts); binary COPY, non-default DELIMITER and
  COPY TO PROGRAM / FILE are refused; COPY is not carried in the extended protocol;
* ``COPY … FROM STDIN`` is a write checked like INSERT (read-only rule, denied table / schema, user
  functions and dangerous built-ins in its WHERE, masked columns in its WHERE);
* "no raw value reaches the client anywhere: rows, errors, notices, COPY data, row counts" — including the
  errors of writes to tables with masked columns;
* a held statement runs exactly as approved (text and bound values), a statement pipelined behind it cannot
  ride on it, a cancel withdraws it, an approval is single use and not reusable by another session, and the
  released result is masked; a window covers only what the approver meant.

Breaches found (each test asserts the secure behaviour; 2 and 3 are fixed since — a write to a table with
masked columns has its errors scrubbed (``MaskPlanning._writes_masked_table``), and a window's scope holds
the statement's command tags and approval triggers (runtime ``_scope``); 1 since too — a write that assigns a masked column of a unique index, or a column
whose foreign key references one, is refused (``masked_existence_probe``)):

1. Existence oracle through a unique constraint on a masked column: ``COPY rt_users FROM STDIN`` with
   ``9\\tzed.sentinel@example.org\\tx`` fails 23505, with a guess that is not there it succeeds (``COPY 1``)
   — one guess per statement tells whether a masked e-mail exists (the DETAIL itself is redacted by the
   e-mail detector). INSERT has the same oracle. (policy/_mask_plan.py does not treat a write into a masked
   column as an oracle; fix: refuse writes of masked columns that carry a UNIQUE / EXCLUDE constraint, or
   make 23505 on such a constraint indistinguishable from success-with-no-row.)
2. ``Failing row contains (…)`` prints the stored values of masked columns: ``UPDATE rt_users SET id = -1
   WHERE id = 1`` (a CHECK (id > 0) on the table) answers ``DETAIL: Failing row contains (-1,
   [masked:email], n1)`` — ``note`` is masked (redact) but not of a format a detector knows, so it reaches
   the client. The statement does not *read* a masked column, so its errors are not scrubbed
   (StatementPlan.scrub_errors); fix: scrub the DETAIL of errors from any write to a table with masked
   columns (23502/23514/23P01 in particular).
3. A window is scoped to (relation, access) only, and every DDL is access ``ddl``: an approver who grants
   a window on ``ALTER TABLE rt_win ADD COLUMN extra int`` has also pre-approved ``DROP TABLE rt_win`` (a
   ``destructive`` statement), which then runs with no human seeing it (broker.request ``_covering_grant``,
   runtime ``_scope``); fix: put the statement class / destructive trigger into the scope, or never let a
   window cover a destructive statement the original was not.

Held: masked COPY TO STDOUT in text/csv/HEADER/FORCE_QUOTE, row_to_json, CTE whole-row casts; binary COPY,
custom DELIMITER, TO PROGRAM, TO file refused; COPY TO STDOUT in the extended protocol withheld; COPY FROM
refused under a read-only rule, into a denied table or schema, with a user function, pg_read_file or
set_config in its WHERE, with a masked column in its WHERE; ``COPY (DELETE … RETURNING masked)`` refused,
``COPY (DELETE …)`` held like the DELETE; a stray CopyData / CopyDone outside COPY is ignored; CopyFail
aborts; an extended hold runs exactly the approved text and value, and a held Query pipelined behind it is
refused, not queued; a released DELETE … USING customers RETURNING masked columns returns them masked; a
cancel withdraws the request and it cannot be approved afterwards; a consumed approval does not release the
same text sent again by another session.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

from pgwarden.wire_proxy import Bind, CopyData, CopyDone, CopyFail, Execute, Parse, Query, Sync
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data
from support.wire import frame_codes as _codes
from support.wire import frame_errors as _errors

MASK_KEY = "test-mask-key-0123456789"
CARD = "4111111111111111"

SETUP = """
CREATE TABLE public.rt_users (id int PRIMARY KEY CHECK (id > 0), email text UNIQUE, note text);
INSERT INTO public.rt_users VALUES (1, 'zed.sentinel@example.org', 'n1secretnote'), (2, 'bo@example.org', 'n2');
CREATE TABLE public.jobs (id int PRIMARY KEY, state text, note text);
INSERT INTO public.jobs SELECT g, 'queued', 'job ' || g FROM generate_series(1, 40) g;
CREATE TABLE public.rt_win (id int);
CREATE FUNCTION public.rt_evil(t text) RETURNS boolean LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.jobs WHERE id = 40; SELECT true $$;
ANALYZE;
"""


@pytest.fixture(scope="module")
def rt(make_db_module, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("redteam-copy-hold")
    data = config_data(dsn, directory, keys, proxy={"approval_notice_interval": 200})
    data["masking"]["columns"] += [
        {"column": "public.rt_users.email", "strategy": "hash", "key": {"env": "PGWARDEN_MASK_KEY"}},
        {"column": "public.rt_users.note", "strategy": "redact"},
    ]
    data["rules"].insert(0, {
        "name": "writer", "match": {"groups": ["writers"]}, "target": "main",
        "statements": {"allow": ["read", "write", "transaction"]},
        "approval": {"required_for": ["destructive", "ddl"], "approvers": ["dba"], "window": "10m"},
        "schemas": {"allow": ["public"]}, "tables": {"allow": ["*"], "deny": ["public.secrets"]},
    })
    proxy = RunningProxy(data, directory)
    try:
        yield proxy, dsn
    finally:
        proxy.close()


# ---- helpers ----------------------------------------------------------------------------------------------


def _agent(proxy: RunningProxy, keys: Keys) -> RawClient:
    return RawClient(proxy.port, keys.token("agent", ("ai-agents",)))


def _writer(proxy: RunningProxy, keys: Keys, sub: str = "wally") -> RawClient:
    return RawClient(proxy.port, keys.token(sub, ("writers",)), user=sub)


def _copy_data(frames) -> bytes:
    return b"".join(bytes(b) for k, b in frames if k == ord("d"))


def _copy_in(c: RawClient, sql: str, lines: list[str], fail: bool = False):
    c.send(Query(sql))
    frames = c.read_until({ord("Z"), ord("G")})
    if frames[-1][0] == ord("G"):
        c.send(*[CopyData(line.encode()) for line in lines], CopyFail("nope") if fail else CopyDone())
        frames += c.read_until({ord("Z")})
    return frames


def _pending(proxy: RunningProxy, sub: str | None = None, timeout: float = 10):
    broker = proxy.runtime.broker  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in proxy.call(broker.list("pending")) if sub is None or r.requester == sub]
        if found:
            return found
        time.sleep(0.05)
    return []


def _approve(proxy: RunningProxy, request_id: str, window_ms: int | None = None):
    return proxy.call(proxy.runtime.broker.approve(request_id, "dana", ["dba"], window_ms))  # type: ignore[union-attr]


def _deny(proxy: RunningProxy, request_id: str):
    return proxy.call(proxy.runtime.broker.deny(request_id, "dana", ["dba"], "no"))  # type: ignore[union-attr]


def _scalar(dsn: str, sql: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


# ---- COPY TO STDOUT: masked in every text form --------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "COPY customers TO STDOUT",
    "COPY customers TO STDOUT (FORMAT csv, HEADER, FORCE_QUOTE *)",
    "COPY customers (card_number, email, ssn) TO STDOUT WITH CSV HEADER",
    "COPY (SELECT row_to_json(c) FROM customers c) TO STDOUT",
    "COPY (WITH x AS (SELECT * FROM customers) SELECT x::text FROM x) TO STDOUT",
    "COPY (SELECT card_number || '' AS c, upper(ssn) FROM (SELECT * FROM customers) s) TO STDOUT",
    "COPY (SELECT (SELECT string_agg(card_number, ',') FROM customers)) TO STDOUT (FORMAT csv)",
    "COPY (TABLE customers) TO STDOUT",
])
def test_copy_to_stdout_is_masked(rt, keys: Keys, sql: str) -> None:
    proxy, _ = rt
    c = _agent(proxy, keys)
    try:
        frames = c.query(sql)
    finally:
        c.close()
    data = _copy_data(frames)
    assert data, (sql, _errors(frames))
    for raw in (CARD.encode(), b"5500005555555559", b"zed.sentinel", b"078-05-1120", b"219-09-9999"):
        assert raw not in data, (sql, data)


@pytest.mark.parametrize(("sql", "code"), [
    ("COPY customers TO STDOUT WITH (FORMAT binary)", "0A000"),
    ("COPY (SELECT card_number FROM customers) TO STDOUT WITH (FORMAT binary)", "0A000"),
    ("COPY customers TO STDOUT WITH (DELIMITER '1')", "0A000"),
    ("COPY customers TO STDOUT WITH (FORMAT csv, QUOTE '1', FORCE_QUOTE *)", "0A000"),
    ("COPY customers TO PROGRAM 'cat'", "42501"),
    ("COPY customers TO '/tmp/rt_customers'", "42501"),
    ("COPY secrets TO STDOUT", "42501"),
])
def test_copy_to_stdout_refusals(rt, keys: Keys, sql: str, code: str) -> None:
    proxy, _ = rt
    c = _agent(proxy, keys)
    try:
        frames = c.query(sql)
    finally:
        c.close()
    assert _codes(frames) == [code], (sql, _errors(frames))
    assert not _copy_data(frames)


def test_copy_out_through_the_extended_protocol_is_withheld(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = _agent(proxy, keys)
    try:
        c.send(Parse("", "COPY customers TO STDOUT"), Bind("", "", (), (), ()), Execute("", 0), Sync())
        frames = c.read_until({ord("Z")})
    finally:
        c.close()
    assert _codes(frames), frames
    assert CARD.encode() not in b"".join(bytes(b) for _, b in frames)


# ---- COPY FROM STDIN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "sql"), [
    ("agent", "COPY jobs FROM STDIN"),
    ("writer", "COPY secrets FROM STDIN"),
    ("writer", "COPY billing.invoices FROM STDIN"),
    ("writer", "COPY jobs FROM STDIN WHERE public.rt_evil(note)"),
    ("writer", "COPY jobs FROM STDIN WHERE pg_read_file('/etc/passwd') IS NOT NULL"),
    ("writer", "COPY jobs FROM STDIN WHERE set_config('search_path', 'evil', false) IS NOT NULL"),
    ("writer", "COPY rt_users (id, email) FROM STDIN WHERE email LIKE 'zed%'"),
    ("writer", "COPY jobs FROM PROGRAM 'id'"),
])
def test_copy_from_is_checked_like_a_write(rt, keys: Keys, who: str, sql: str) -> None:
    proxy, dsn = rt
    c = _agent(proxy, keys) if who == "agent" else _writer(proxy, keys)
    try:
        frames = _copy_in(c, sql, ["90\tq\tx\n"])
    finally:
        c.close()
    assert ord("G") not in [k for k, _ in frames], sql  # never reached PostgreSQL
    assert _codes(frames) == ["42501"], (sql, _errors(frames))
    assert _scalar(dsn, "SELECT count(*) FROM jobs WHERE id IN (40, 90)") == 1


def test_copy_into_a_masked_unique_column_is_no_existence_oracle(rt, keys: Keys) -> None:
    """Secure: writing a guess into a masked UNIQUE column answers the same whether the guess exists."""
    proxy, dsn = rt
    c = _writer(proxy, keys)
    try:
        hit = _copy_in(c, "COPY rt_users FROM STDIN", ["9\tzed.sentinel@example.org\tx\n"])
        miss = _copy_in(c, "COPY rt_users FROM STDIN", ["10\tnobody.at.all@example.org\tx\n"])
    finally:
        c.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM rt_users WHERE id > 2")
    assert b"zed.sentinel" not in b"".join(bytes(b) for _, b in hit)  # the DETAIL is redacted…
    assert _codes(hit) == _codes(miss), (_errors(hit), _errors(miss))  # …but error-or-not is the oracle


def test_constraint_error_of_a_write_does_not_print_masked_values(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = _writer(proxy, keys)
    try:
        frames = c.query("UPDATE rt_users SET id = -1 WHERE id = 1")
    finally:
        c.close()
    assert _codes(frames) == ["23514"]
    assert "n1secretnote" not in " ".join(_errors(frames)), _errors(frames)


def test_copy_from_error_detail_is_screened(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = _writer(proxy, keys)
    try:
        frames = _copy_in(c, "COPY customers (id, full_name, card_number) FROM STDIN",
                          [f"1\tx\t{CARD}\n"])
    finally:
        c.close()
    assert _codes(frames) == ["23505"]
    assert CARD not in " ".join(_errors(frames))


def test_copy_of_dml_is_held_or_refused(rt, keys: Keys) -> None:
    proxy, dsn = rt
    c = _writer(proxy, keys)
    try:
        frames = c.query("COPY (DELETE FROM customers WHERE id = 2 RETURNING *) TO STDOUT")
        assert _codes(frames) == ["42501"] and not _copy_data(frames)  # masked_returning
        c.send(Query("COPY (DELETE FROM jobs WHERE id = 1 RETURNING *) TO STDOUT"))
        (request,) = _pending(proxy, "wally")
        assert request.statement.startswith("COPY (DELETE")
        _deny(proxy, request.id)
        frames = c.read_until({ord("Z")})
        assert _codes(frames) == ["55000"]
    finally:
        c.close()
    assert _scalar(dsn, "SELECT count(*) FROM jobs WHERE id = 1") == 1


def test_stray_copy_messages_and_copy_fail(rt, keys: Keys) -> None:
    proxy, dsn = rt
    c = _writer(proxy, keys)
    try:
        frames = _copy_in(c, "COPY jobs FROM STDIN", ["91\tq\tx\n"], fail=True)
        assert _codes(frames) == ["57014"]
        c.send(CopyData(b"92\tq\tx\n"), CopyDone())  # no COPY in progress: PostgreSQL ignores them
        assert c.query("SELECT 1")[-1] == (ord("Z"), b"I")
    finally:
        c.close()
    assert _scalar(dsn, "SELECT count(*) FROM jobs WHERE id IN (91, 92)") == 0


# ---- holds --------------------------------------------------------------------------------------------------


def test_extended_hold_runs_exactly_what_was_approved_and_pipelined_hold_is_refused(rt, keys: Keys) -> None:
    proxy, dsn = rt
    c = _writer(proxy, keys, "pia")
    try:
        c.send(Parse("", "DELETE FROM jobs WHERE id = $1"), Bind("", "", (), (b"5",), ()), Execute("", 0), Sync(),
               # pipelined behind the held statement while it waits
               Parse("", "SELECT 1"), Bind("", "", (), (), ()), Execute("", 0), Sync(),
               Query("DELETE FROM jobs WHERE id = 6"))
        (request,) = _pending(proxy, "pia")
        assert request.statement == "DELETE FROM jobs WHERE id = $1" and list(request.parameters) == ["5"]
        _approve(proxy, request.id)
        first = c.read_until({ord("Z")})
        second = c.read_until({ord("Z")})
        third = c.read_until({ord("Z")})
        assert any(bytes(b).startswith(b"DELETE 1") for k, b in first if k == ord("C"))
        assert _codes(second) == []
        assert _codes(third) == ["55000"]  # not queued as a second request
    finally:
        c.close()
    assert _pending(proxy, "pia", timeout=0.3) == []
    assert _scalar(dsn, "SELECT array_agg(id ORDER BY id)::text FROM jobs WHERE id IN (5, 6)") == "{6}"


def test_released_result_is_masked(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = _writer(proxy, keys, "remy")
    try:
        c.send(Query("DELETE FROM orders USING customers c WHERE orders.customer_id = c.id AND orders.id = 1 "
                     "RETURNING c.card_number, c.email, row_to_json(c), c.ssn"))
        (request,) = _pending(proxy, "remy")
        _approve(proxy, request.id)
        frames = c.read_until({ord("Z")})
    finally:
        c.close()
    rows = b"".join(bytes(b) for k, b in frames if k == ord("D"))
    assert b"************1111" in rows
    for raw in (CARD.encode(), b"zed.sentinel", b"078-05-1120"):
        assert raw not in rows


def test_cancel_withdraws_and_a_withdrawn_request_cannot_be_approved(rt, keys: Keys) -> None:
    proxy, dsn = rt
    conn = psycopg.connect(proxy.dsn(keys.token("cara", ("writers",)), user="cara"), autocommit=True)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            conn.execute("DELETE FROM jobs WHERE id = 7")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    (request,) = _pending(proxy, "cara")
    conn.cancel_safe()
    thread.join(15)
    conn.close()
    assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled)
    broker = proxy.runtime.broker  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while proxy.call(broker.get(request.id)).pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.call(broker.get(request.id)).status.value == "withdrawn"
    with pytest.raises(Exception):  # noqa: B017
        _approve(proxy, request.id)
    assert _scalar(dsn, "SELECT count(*) FROM jobs WHERE id = 7") == 1


def test_a_used_approval_does_not_release_the_same_text_in_another_session(rt, keys: Keys) -> None:
    proxy, dsn = rt
    first = _writer(proxy, keys, "sam")
    second = _writer(proxy, keys, "sam")
    try:
        first.send(Query("DELETE FROM jobs WHERE id = 8"))
        (request,) = _pending(proxy, "sam")
        _approve(proxy, request.id)
        assert any(bytes(b).startswith(b"DELETE 1") for k, b in first.read_until({ord("Z")}) if k == ord("C"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO jobs VALUES (8, 'again', 'x')")
        second.send(Query("DELETE FROM jobs WHERE id = 8"))
        (again,) = _pending(proxy, "sam")  # a new request: the first approval was consumed
        assert again.id != request.id
        _deny(proxy, again.id)
        assert _codes(second.read_until({ord("Z")})) == ["55000"]
    finally:
        first.close()
        second.close()
    assert _scalar(dsn, "SELECT count(*) FROM jobs WHERE id = 8") == 1


def test_window_on_additive_ddl_does_not_cover_drop(rt, keys: Keys) -> None:
    proxy, dsn = rt
    c = _writer(proxy, keys, "winnie")
    try:
        c.send(Query("ALTER TABLE rt_win ADD COLUMN extra int"))
        (request,) = _pending(proxy, "winnie")
        _approve(proxy, request.id, window_ms=60_000)
        assert _codes(c.read_until({ord("Z")})) == []
        c.send(Query("DROP TABLE rt_win"))
        held = _pending(proxy, "winnie", timeout=2)  # secure: a human sees the DROP
        for r in held:
            _deny(proxy, r.id)
        c.read_until({ord("Z")})
    finally:
        c.close()
    assert _scalar(dsn, "SELECT count(*) FROM pg_class WHERE relname = 'rt_win'") == 1, "DROP TABLE ran unseen"
    assert held
