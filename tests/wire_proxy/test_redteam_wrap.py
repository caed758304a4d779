"""Red-team of the wire proxy's READ ONLY wrapping (connection.py ``_wraps`` / ``_release_batch`` /
``_batch_wraps``) and of its name bookkeeping (``_Registered``).

The claims under attack:

* under a rule that may write, a text the analysis calls read-only runs inside the proxy's own
  ``BEGIN READ ONLY`` … ``COMMIT``, so a write hidden behind a "read" fails with 25006 instead of running
  without the approval a write needs; the client never sees the block (its ReadyForQuery says idle, and
  upstream is idle too);
* the proxy's idea of what a statement or portal name means is what PostgreSQL runs under that name, so
  rows always come under the screen (masks, detectors, max_rows) of the statement that produced them.

Breaches (xfail strict, each asserts the secure behaviour):

* ``SET TRANSACTION READ WRITE; SELECT sneaky()`` (simple or extended) is wrapped, and the SET turns the
  proxy's READ ONLY block read-write before any snapshot: the hidden write commits unapproved;

Fixed since (tests kept below):

* the proxy never forgot portals when PostgreSQL drops them (end of transaction, ROLLBACK TO, its own
  COMMIT, a function that CLOSEs one): a portal an allowed plpgsql function OPENs under a dead portal's
  name ran under the stale passthrough screen, detector findings unredacted — a portal executed after
  anything else ran upstream is now described again and confirmed against its plan;
* an error of the proxy's own COMMIT (a WITH HOLD cursor materialised there) was dropped: the client was
  told its statement succeeded — the client's ReadyForQuery is now the COMMIT's, and its error comes with it;
* shapes the proxy never wraps — transaction control in the text (``BEGIN; … COMMIT``, ``END; …``), the
  client's own transaction, a Flush, a batch over 64 messages, a batch pipelined behind other work — let the
  hidden write run: a read that calls a user function, under a rule that may write, is now refused where
  it cannot be wrapped (``read_only_required``).
"""

from __future__ import annotations

import os

import psycopg
import pytest

from pgwarden.policy.detectors import Detector
from pgwarden.wire_proxy import Bind, Close, Describe, Execute, Flush, Parse, Query, Sync
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data
from support.wire import frame_errors as _errors
from support.wire import frame_ready as _ready
from support.wire import frame_rows as _rows
from support.wire import sync as _sync

CARD = "4111111111111111"
EMAIL = "zed.sentinel@example.org"
DETECTOR = Detector()

SETUP = f"""
CREATE TABLE public.rw_ledger (id int PRIMARY KEY, note text);
INSERT INTO public.rw_ledger VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE public.rw_secrets (id int PRIMARY KEY, card text, mail text, hidden text);
INSERT INTO public.rw_secrets SELECT g, 'card {CARD}', 'mail {EMAIL}', 'masked-' || g FROM generate_series(1, 20) g;
CREATE FUNCTION public.rw_sneaky() RETURNS int LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.rw_ledger WHERE id = 3 RETURNING 1 $$;
CREATE FUNCTION public.rw_open(c refcursor) RETURNS refcursor LANGUAGE plpgsql
  AS $$ BEGIN OPEN c FOR SELECT card, mail FROM public.rw_secrets ORDER BY id; RETURN c; END $$;
CREATE FUNCTION public.rw_swap(c refcursor) RETURNS refcursor LANGUAGE plpgsql
  AS $$ BEGIN CLOSE c; OPEN c FOR SELECT card, mail FROM public.rw_secrets ORDER BY id; RETURN c; END $$;
ANALYZE;
"""


@pytest.fixture(scope="module")
def rw_db(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)


@pytest.fixture(scope="module")
def rw(rw_db: str, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("redteam-wrap")
    data = config_data(rw_db, directory, keys)
    for rule in data["rules"]:
        if rule["name"] == "dba":
            rule["functions"] = {"allow": ["public.rw_sneaky", "public.rw_open"]}
            rule["approval"] = {"required_for": ["write"], "approvers": ["dba"]}
            rule["max_rows"] = 5
        if rule["name"] == "ai-agents":
            rule["functions"] = {"allow": ["public.rw_open", "public.rw_swap"]}
            rule["max_rows"] = 5
    data["masking"]["columns"].append({"column": "public.rw_secrets.hidden", "strategy": "redact"})
    p = RunningProxy(data, directory)
    yield p, rw_db
    p.close()


def _dba(c: RunningProxy, keys: Keys) -> RawClient:
    return RawClient(c.port, keys.token("dana", ("dba",)), user="dana")


def _ledger(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM public.rw_ledger").fetchone()[0]


def _restore(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.rw_ledger VALUES (3, 'c') ON CONFLICT DO NOTHING")


def _upstream_states(dsn: str) -> list[str]:
    """The states of the proxy's upstream sessions in this database (other than ours)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'")]


# ---- breach: SET TRANSACTION READ WRITE inside the text lifts the proxy's READ ONLY -------------------------


# Fixed: the proxy's block starts "BEGIN READ ONLY; SELECT" — the snapshot taken makes PostgreSQL refuse
# SET TRANSACTION READ WRITE inside it ("must be set before any query").
@pytest.mark.parametrize("door", ["simple", "extended"])
def test_set_transaction_read_write_lifts_the_wrap(rw, keys: Keys, door: str) -> None:
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        if door == "simple":
            r = c.query("SET TRANSACTION READ WRITE; SELECT public.rw_sneaky()")
        else:
            r = _sync(c, Parse("", "SET TRANSACTION READ WRITE"), Bind("", "", (), (), ()), Execute("", 0),
                      Parse("", "SELECT public.rw_sneaky()"), Bind("", "", (), (), ()), Execute("", 0))
        assert _ready(r) == [b"I"]
        assert _upstream_states(dsn) == ["idle"]
        written = _ledger(dsn) != 3
    finally:
        c.close()
        _restore(dsn)
    assert not written, "the write hidden in a wrapped 'read' ran"


# ---- breach (design): texts and batches the proxy does not wrap run a hidden write unapproved ----------------


def _dodge(c: RawClient, how: str) -> None:
    sneaky = [Parse("", "SELECT public.rw_sneaky()"), Bind("", "", (), (), ()), Execute("", 0)]
    if how == "transaction-control":
        c.query("BEGIN; SELECT public.rw_sneaky(); COMMIT")
    elif how == "end-first":
        c.query("END; SELECT public.rw_sneaky()")
    elif how == "flush":
        c.send(sneaky[0], Flush())
        c.read_until({ord("1")})
        _sync(c, *sneaky[1:])
    elif how == "over-64-messages":
        _sync(c, *([Parse("", "SELECT 1"), Bind("", "", (), (), ()), Execute("", 0)] * 22), *sneaky)
    elif how == "pipelined-behind-a-read":
        c.send(Query("SELECT 1"), *sneaky, Sync())
        c.read_until({ord("Z")})
        c.read_until({ord("Z")})


@pytest.mark.parametrize("how", ["transaction-control", "end-first", "flush", "over-64-messages",
                                 "pipelined-behind-a-read"])
def test_unwrapped_shapes_dodge_the_write_approval(rw, keys: Keys, how: str) -> None:
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        _dodge(c, how)
        written = _ledger(dsn) != 3
        # the session goes on, and the same read sent on its own runs wrapped (and its hidden write fails)
        assert any("25006" in e for e in _errors(c.query("SELECT public.rw_sneaky()")))
    finally:
        c.close()
        _restore(dsn)
    assert not written, f"{how}: the hidden write ran"


@pytest.mark.parametrize("how", ["transaction-control", "inside-the-clients-transaction", "flush"])
def test_unwrappable_user_code_is_refused_with_a_reason(rw, keys: Keys, how: str) -> None:
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        if how == "transaction-control":
            r = c.query("BEGIN; SELECT public.rw_sneaky(); COMMIT")
        elif how == "inside-the-clients-transaction":
            assert not _errors(c.query("BEGIN"))
            r = c.query("SELECT public.rw_sneaky()")
            assert _ready(r) == [b"E"]
            c.query("ROLLBACK")
            # a read of no user code in the client's transaction is not concerned
            assert not _errors(c.query("BEGIN")) and not _errors(c.query("SELECT note FROM public.rw_ledger"))
            c.query("ROLLBACK")
        else:
            c.send(Parse("", "SELECT public.rw_sneaky()"), Flush())
            c.read_until({ord("1")})
            r = _sync(c, Bind("", "", (), (), ()), Execute("", 0))
        errors = _errors(r)
        assert errors and all("C55000" in e and "READ ONLY" in e for e in errors), errors
    finally:
        c.close()
    assert _ledger(dsn) == 3


# ---- breach: a portal name the proxy keeps after PostgreSQL dropped it ---------------------------------------


@pytest.mark.parametrize("how", ["implicit-transaction", "rollback-to-savepoint", "wrapped-batch"])
def test_stale_portal_name_reused_by_a_cursor_the_proxy_never_saw(rw, keys: Keys, how: str) -> None:
    proxy, _ = rw
    c = _dba(proxy, keys) if how == "wrapped-batch" else RawClient(proxy.port, keys.token())
    try:
        assert not _errors(_sync(c, Parse("h", "SELECT 1::int4 AS x"), Describe("S", "h")))
        if how == "rollback-to-savepoint":
            assert not _errors(c.query("BEGIN"))
            assert not _errors(c.query("SAVEPOINT s"))
            assert not _errors(_sync(c, Bind("p", "h", (), (), ()), Execute("p", 0)))
            assert not _errors(c.query("ROLLBACK TO SAVEPOINT s"))  # upstream portal p is gone
        else:
            # implicit transaction ends at Sync / the proxy's COMMIT ends it: upstream portal p is gone
            assert not _errors(_sync(c, Bind("p", "h", (), (), ()), Execute("p", 0)))
            assert not _errors(c.query("BEGIN"))
        opened = _errors(c.query("SELECT public.rw_open('p')"))  # PostgreSQL's portal p: the secrets
        if how == "wrapped-batch":
            # under a rule that may write, a read calling user code inside the client's transaction is
            # refused outright (read_only_required): that closes this path before the portal check
            assert opened and all("C55000" in e for e in opened), opened
        else:
            assert not opened
        out = _sync(c, Execute("p", 0))
        c.query("ROLLBACK")
    finally:
        c.close()
    text = b"".join(_rows(out)).decode("utf-8", "replace")
    assert CARD not in text and EMAIL not in text, "detector-findable values went out unscreened"
    assert any(code in e for e in _errors(out) for code in ("C22000", "CXX000", "C34000")), _errors(out)


def test_portal_closed_and_reopened_by_a_function_in_the_same_transaction(rw, keys: Keys) -> None:
    """No transaction boundary at all: an allowed function CLOSEs a live portal and OPENs another query
    under its name; the next Execute of the name must not run under the old portal's screen."""
    proxy, _ = rw
    c = RawClient(proxy.port, keys.token())
    try:
        assert not _errors(c.query("BEGIN"))
        assert not _errors(_sync(c, Parse("h", "SELECT 1::int4 AS x"), Bind("p", "h", (), (), ()),
                                 Execute("p", 1)))
        assert not _errors(c.query("SELECT public.rw_swap('p')"))
        out = _sync(c, Execute("p", 0))
        c.query("ROLLBACK")
    finally:
        c.close()
    text = b"".join(_rows(out)).decode("utf-8", "replace")
    assert CARD not in text and EMAIL not in text
    assert any("C22000" in e or "CXX000" in e for e in _errors(out)), _errors(out)


def test_a_dead_portal_executed_gets_postgresqls_error(rw, keys: Keys) -> None:
    """The implicit transaction ended, so PostgreSQL dropped the portal: the re-Describe the proxy sends fails
    and the client hears why, instead of an Execute that silently did nothing."""
    proxy, _ = rw
    c = RawClient(proxy.port, keys.token())
    try:
        assert not _errors(_sync(c, Parse("h", "SELECT 1::int4 AS x"), Bind("p", "h", (), (), ()),
                                 Execute("p", 0)))
        assert not _errors(c.query("SELECT 2"))
        out = _sync(c, Execute("p", 0))
        assert [e.split("\0")[2] for e in _errors(out)] == ["C34000"], _errors(out)
        assert _ready(out) == [b"I"]
        # and a portal executed again with nothing in between needs no second look
        out = _sync(c, Bind("q", "h", (), (), ()), Execute("q", 1), Execute("q", 1))
        assert not _errors(out) and len(_rows(out)) == 1
    finally:
        c.close()


# ---- what held -------------------------------------------------------------------------------------------


def test_wrapped_statements_keep_client_and_upstream_status_in_step(rw, keys: Keys) -> None:
    """After each wrapped text the client is told idle and upstream is idle: no statement of the client's
    runs later in a transaction it does not know about; statements PostgreSQL refuses in a block fail
    cleanly; the hidden write still fails afterwards (nothing left the block read-write)."""
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        for sql in ("DISCARD ALL", "LISTEN rw_chan", "NOTIFY rw_chan", "SELECT pg_notify('rw_chan', 'x')",
                    "SELECT * FROM public.rw_ledger FOR UPDATE", "DECLARE c CURSOR FOR SELECT 1",
                    "DECLARE h CURSOR WITH HOLD FOR SELECT 1", "SET LOCAL work_mem = '8MB'",
                    "SELECT set_config('work_mem', '9MB', true)", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "SELECT pg_advisory_xact_lock(7)", "PREPARE rwq AS SELECT 1", "EXECUTE rwq",
                    "COPY (SELECT note FROM public.rw_ledger) TO STDOUT", "SELECT 1/0", "RESET ALL",
                    "COMMIT AND CHAIN", "SAVEPOINT s"):
            r = c.query(sql)
            assert _ready(r) == [b"I"], sql
            assert _upstream_states(dsn) == ["idle"], sql
            tags = [bytes(b) for k, b in r if k == ord("C")]
            assert not {b"BEGIN\0", b"COMMIT\0", b"ROLLBACK\0"} & set(tags), (sql, tags)
            r = c.query("SELECT public.rw_sneaky()")
            assert any("25006" in e for e in _errors(r)), sql
        assert _rows(c.query("SHOW transaction_read_only")) == [b"\0\x01\0\0\0\x02on"]  # still wrapped
    finally:
        c.close()
    assert _ledger(dsn) == 3


def test_pipelined_wrapped_batches_with_errors_stay_in_order(rw, keys: Keys) -> None:
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        one = [Parse("", "SELECT public.rw_sneaky()"), Bind("", "", (), (), ()), Execute("", 0), Sync()]
        two = [Parse("", "SELECT 1/0"), Bind("", "", (), (), ()), Execute("", 0), Sync()]
        three = [Parse("", "SELECT note FROM public.rw_ledger ORDER BY id"), Bind("", "", (), (), ()),
                 Execute("", 0), Sync()]
        c.send(*one, *two, *three, Query("SELECT 7"))
        out = [c.read_until({ord("Z")}) for _ in range(4)]
        assert [[e.split("\0")[2] for e in _errors(o)] for o in out] == [["C25006"], ["C22012"], [], []]
        assert _rows(out[2]) == [b"\0\x01\0\0\0\x01" + x for x in (b"a", b"b", b"c")]
        assert _rows(out[3]) == [b"\0\x01\0\0\0\x017"]
        assert [_ready(o) for o in out] == [[b"I"]] * 4
        assert _upstream_states(dsn) == ["idle"]
    finally:
        c.close()
    assert _ledger(dsn) == 3


def test_terminate_mid_batch_runs_nothing(rw, keys: Keys) -> None:
    from pgwarden.wire_proxy import Terminate

    proxy, dsn = rw
    c = _dba(proxy, keys)
    c.send(Parse("", "SELECT public.rw_sneaky()"), Bind("", "", (), (), ()), Execute("", 0), Terminate())
    c.read_until(set())
    c.close()
    c = _dba(proxy, keys)
    try:
        assert _rows(c.query("SELECT count(*) FROM public.rw_ledger")) == [b"\0\x01\0\0\0\x013"]
        assert _ready(c.query("SELECT 1")) == [b"I"]
    finally:
        c.close()
    assert _ledger(dsn) == 3


def test_named_statement_and_portal_names_after_failures(rw, keys: Keys) -> None:
    """A failed re-Parse of a named statement, a Bind that fails after PostgreSQL made the portal (bad
    parameter input), a Close skipped after an error, and a savepoint rolled back: masked columns stay masked,
    detector findings stay redacted, max_rows holds."""
    proxy, _ = rw
    c = RawClient(proxy.port, keys.token())
    seen: list[bytes] = []
    try:
        assert not _errors(_sync(c, Parse("s", "SELECT hidden, card FROM public.rw_secrets ORDER BY id"),
                                 Describe("S", "s")))
        r = _sync(c, Parse("s", "SELECT 1::int4 AS x"), Bind("", "s", (), (), ()), Execute("", 0))
        assert any("already exists" in e for e in _errors(r))
        seen += _rows(r)
        seen += _rows(_sync(c, Bind("", "s", (), (), ()), Execute("", 0)))
        # Bind of the unnamed portal to a bad parameter: PostgreSQL drops the old portal, then fails
        assert not _errors(_sync(c, Parse("i", "SELECT 1::int4 AS x WHERE $1::int > 0"), Describe("S", "i")))
        assert not _errors(c.query("BEGIN"))
        seen += _rows(_sync(c, Bind("", "s", (), (), ()), Describe("P", ""), Execute("", 1)))
        assert not _errors(c.query("SAVEPOINT a"))
        r = _sync(c, Bind("", "i", (0,), (b"zz",), ()))
        assert _errors(r)
        c.query("ROLLBACK TO SAVEPOINT a")
        seen += _rows(_sync(c, Execute("", 0)))
        c.query("ROLLBACK")
        # an error skips the Close: PostgreSQL keeps the statement, the proxy forgets it (fail closed)
        r = _sync(c, Parse("", "SELECT 1/0"), Bind("", "", (), (), ()), Execute("", 0), Close("S", "s"))
        seen += _rows(_sync(c, Bind("", "s", (), (), ()), Execute("", 0)))
    finally:
        c.close()
    text = b"".join(seen).decode("utf-8", "replace")
    assert CARD not in text and "masked-" not in text
    assert len(seen) <= 5 + 5 + 1


def test_an_error_of_the_proxys_commit_reaches_the_client(rw, keys: Keys) -> None:
    proxy, dsn = rw
    c = _dba(proxy, keys)
    try:
        r = c.query("DECLARE rw_h2 CURSOR WITH HOLD FOR SELECT public.rw_sneaky()")
        assert _ready(r) == [b"I"]
        assert _ledger(dsn) == 3
        assert any("25006" in e for e in _errors(r)), "told DECLARE CURSOR succeeded; it was rolled back"
    finally:
        c.close()
