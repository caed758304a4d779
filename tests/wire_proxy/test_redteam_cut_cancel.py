"""Red-team of the max_rows cut-cancel (connection.py ``_QueryCtx.cut_cancel`` / ``_cut`` / ``_cut_release`` /
``cancel_sent``, the 57014 → CommandComplete rewrite in ``_backend``; _relay.py ``_cancel_cut`` / ``_settle`` /
``_resume_backlog``).

The claim under attack: a single read-only simple Query, sent with the client idle, that goes past the rule's
max_rows is cancelled upstream, and "whatever the client sent behind the statement waits until the
statement's ReadyForQuery is in and the cancel has been delivered, so the cancel cannot land on it".

Some tests put a small TCP forwarder between the proxy and PostgreSQL: it counts the CancelRequests the proxy
sends and can hold them back (a slow postmaster, a congested network), which opens the window in which the
client's messages wait behind the cut statement.

Faults found (each test asserts the correct behaviour; all fixed since — the client's next statement
waits for a cancel the server confirms, and the session ends if it cannot be confirmed in 30 s; the
backlog of a half-closed client is still fed; only the 57014 of a CancelRequest (its message) ends a
cut result; only plain reads, ``StatementPlan.cancel_safe``, are cancelled):

* a cancel the proxy gave up on (send_cancel's 5 s timeout) is still read by PostgreSQL later, and cancels
  the client's next statement, which ``_cancel_cut`` released in its ``finally``;
* a client that half-closes while its next Query waits in the relay's backlog behind the cut never gets its
  reply (``_client_eof`` makes ``client_data`` drop the backlog);
* PostgreSQL's own 57014 (the rule's statement_timeout) that ends a cut statement before the proxy's cancel
  lands is turned into ``SELECT 1000``;
* a read calling an allowed user function (read-only rule, so not wrapped) is cancelled: its implicit
  transaction aborts and what the function did is undone, while the client is told ``SELECT 1000``.

Held: the cancel is sent once, not for a result of exactly max_rows; the statement's own error past the cut
reaches the client; masks hold on a cut result; a client gone mid-cut leaves nothing running; a ~3 MiB flood
behind a slow cut is kept, bounded, and answered in order; work pipelined behind a quick cut statement
(Query, extended batch, a write, a transaction) is not cancelled (fixed by 6561962 while this was written).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgwarden.wire_proxy import Bind, Execute, Parse, Query, Sync, encode
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data

LIMIT = 1000
ENDLESS = "SELECT generate_series(1, 1000000000) AS g"
CANCEL_CODE = 80877102

SETUP = """
CREATE TABLE public.cc_ledger (id int PRIMARY KEY, note text);
CREATE SEQUENCE public.cc_seq;
CREATE FUNCTION public.cc_tag() RETURNS int LANGUAGE plpgsql VOLATILE
  AS $$ BEGIN PERFORM set_config('app.cc_tag', 'on', false); RETURN 1; END $$;
ANALYZE;
"""


class Forwarder:
    """TCP forwarder to PostgreSQL: counts CancelRequests and delivers each after ``delay`` seconds."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.delay = 0.0
        self.cancels = 0
        self.delivered = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read(s: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def _serve(self, c: socket.socket) -> None:
        try:
            head = self._read(c, 8)
            if len(head) == 8 and struct.unpack("!ii", head) == (16, CANCEL_CODE):
                rest = self._read(c, 8)
                with self._lock:
                    self.cancels += 1
                    delay = self.delay
                time.sleep(delay)  # a slow postmaster: the request is read late, after the proxy may have given up
                with self._upstream() as u:
                    u.sendall(head + rest)
                    with contextlib.suppress(OSError):
                        u.recv(1)
                with self._lock:
                    self.delivered += 1
                c.close()
                return
            u = self._upstream()
            u.sendall(head)
        except OSError:
            c.close()
            return

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while True:
                    data = a.recv(1 << 16)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)

        threading.Thread(target=pipe, args=(u, c), daemon=True).start()
        pipe(c, u)

    def _upstream(self) -> socket.socket:
        host, port = self.target
        if host.startswith("/"):  # the embedded server the suite starts listens on a Unix socket
            u = socket.socket(socket.AF_UNIX)
            u.connect(f"{host.rstrip('/')}/.s.PGSQL.{port}")
            return u
        return socket.create_connection(self.target)

    def close(self) -> None:
        self._closed = True
        self.sock.close()


@pytest.fixture(scope="module")
def cc_db(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)


@pytest.fixture(scope="module")
def cc(cc_db: str, tmp_path_factory, keys: Keys):
    """(proxy, forwarder, dsn): the proxy's target is the forwarder; ai-agents max_rows 1000 (the default),
    dba may write (approval for ddl only)."""
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    params = conninfo_to_dict(cc_db)
    fwd = Forwarder(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
    via = make_conninfo(cc_db, host="127.0.0.1", port=str(fwd.port))
    directory = tmp_path_factory.mktemp("redteam-cut")
    data = config_data(via, directory, keys, proxy={"max_message_size": 1 << 20})
    for rule in data["rules"]:
        rule["max_rows"] = LIMIT
        if rule["name"] == "ai-agents":
            rule["functions"] = {"allow": ["public.cc_tag"]}
    timed = dict(next(r for r in data["rules"] if r["name"] == "ai-agents"))
    timed.update(name="timed", match={"groups": ["timed"]}, statement_timeout=300)
    data["rules"].append(timed)
    p = RunningProxy(data, directory)
    yield p, fwd, cc_db
    p.close()
    fwd.close()


@pytest.fixture
def fwd(cc):
    f = cc[1]
    f.delay = 0.0
    yield f
    f.delay = 0.0


def _agent(p: RunningProxy, keys: Keys) -> RawClient:
    return RawClient(p.port, keys.token())


def _dba(p: RunningProxy, keys: Keys) -> RawClient:
    return RawClient(p.port, keys.token("dana", ("dba",)), user="dana")


def _errors(frames) -> list[str]:
    return [bytes(b).decode("utf-8", "replace") for k, b in frames if k == ord("E")]


def _tags(frames) -> list[bytes]:
    return [bytes(b) for k, b in frames if k == ord("C")]


def _rows(frames) -> int:
    return sum(1 for k, _ in frames if k == ord("D"))


def _active(dsn: str, text: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'active'"
                                 " AND pid <> pg_backend_pid()", [text]).fetchall())


def _settles(dsn: str, text: str, deadline: float = 8.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not _active(dsn, text):
            return True
        time.sleep(0.05)
    return False


def _cut_ok(frames) -> None:
    assert _rows(frames) == LIMIT
    assert not _errors(frames), _errors(frames)
    assert _tags(frames) == [b"SELECT 1000\0"]


# ---- what held ----------------------------------------------------------------------------------------------


def test_an_endless_read_is_cut_cancelled_once(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, dsn = cc
    before = fwd.cancels
    c = _agent(p, keys)
    try:
        _cut_ok(c.query(ENDLESS))
        assert _settles(dsn, ENDLESS)
        assert fwd.cancels == before + 1
        r = c.query("SELECT pg_sleep(0.2), 7")
        assert not _errors(r) and _rows(r) == 1
    finally:
        c.close()


def test_a_result_of_exactly_max_rows_is_not_cancelled(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    before = fwd.cancels
    c = _agent(p, keys)
    try:
        r = c.query(f"SELECT generate_series(1, {LIMIT}) AS g")
        assert _rows(r) == LIMIT and not _errors(r) and _tags(r) == [b"SELECT 1000\0"]
        assert not [b for k, b in r if k == ord("N")]  # not cut: no notice
        time.sleep(0.2)
        assert fwd.cancels == before
    finally:
        c.close()


def test_the_statements_own_error_past_the_cut_reaches_the_client(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        r = c.query("SELECT 1 / (1500 - generate_series(1, 1000000000)) AS g")
        assert _rows(r) == LIMIT
        assert any("22012" in e for e in _errors(r)), _errors(r)
        assert not _errors(c.query("SELECT 1"))
    finally:
        c.close()


def test_a_masked_column_is_cut_and_stays_masked(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        r = c.query("SELECT ssn, generate_series(1, 1000000000) AS g FROM public.customers")
        _cut_ok(r)
        with psycopg.connect(cc[2]) as conn:
            ssns = [s for (s,) in conn.execute("SELECT ssn FROM public.customers") if s]
        raw = b"".join(bytes(b) for k, b in r if k == ord("D"))
        assert ssns and not any(s.encode() in raw for s in ssns)
    finally:
        c.close()


def test_a_client_gone_while_the_cut_is_pending_leaves_nothing_running(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, dsn = cc
    text = "SELECT generate_series(1, 1000000000) AS gone_while_cut"
    fwd.delay = 1.0
    c = _agent(p, keys)
    try:
        c.send(Query(text))
        frames: list = []
        while _rows(frames) < LIMIT:
            frames += c.read_until({ord("D")})
        time.sleep(0.2)
    finally:
        c.close()
    assert _settles(dsn, text), "the cut statement still runs upstream"


def test_a_flood_behind_a_cut_statement_is_kept_and_answered_in_order(cc, fwd: Forwarder, keys: Keys) -> None:
    """~3 MiB of Queries sent while the cut waits for its (slow) cancel: the relay keeps 1 MiB, pauses the
    client's reading, and every query is answered, in order, none cancelled."""
    p, _, _ = cc
    fwd.delay = 1.0
    pad = "x" * 10000
    n = 300
    c = _agent(p, keys)
    try:
        c.send(Query(ENDLESS))
        frames: list = []
        while _rows(frames) < LIMIT:
            frames += c.read_until({ord("D")})
        time.sleep(0.2)
        payload = b"".join(encode(Query(f"SELECT {i} /* {pad} */")) for i in range(n))
        sender = threading.Thread(target=c.sock.sendall, args=(payload,), daemon=True)
        sender.start()
        frames += c.read_until({ord("Z")})
        _cut_ok(frames)
        got = []
        for _ in range(n):
            r = c.read_until({ord("Z")})
            assert not _errors(r), _errors(r)
            got.append(next(bytes(b) for k, b in r if k == ord("D"))[6:])
        assert got == [str(i).encode() for i in range(n)]
        sender.join(10)
    finally:
        c.close()


# ---- held (found while this file was written, fixed by 6561962): work pipelined behind the cut statement -----
#
# A cut statement that ends by itself (1001 rows) before its cancel arrives would leave the cancel to what was
# pipelined behind it; ``_cut`` now cancels only when the cut Query is the only request outstanding.

QUICK = f"SELECT generate_series(1, {LIMIT + 1}) AS g"


def _pipelined(c: RawClient, *behind) -> list[list]:
    c.send(Query(QUICK), *behind)
    return [c.read_until({ord("Z")}) for _ in range(1 + sum(1 for m in behind if type(m) in (Query, Sync)))]


def test_pipelined_query_behind_a_quick_cut_is_not_cancelled(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        hit = 0
        for _ in range(5):
            out = _pipelined(c, Query("SELECT pg_sleep(0.3), 1"))
            _cut_ok(out[0])
            hit += bool(_errors(out[1]))
        assert hit == 0, f"{hit}/5 of the pipelined statements were cancelled"
    finally:
        c.close()


def test_pipelined_extended_batch_behind_a_quick_cut_is_not_cancelled(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        out = _pipelined(c, Parse("", "SELECT pg_sleep(0.3), 1"), Bind("", "", (), (), ()), Execute("", 0), Sync())
        _cut_ok(out[0])
        assert not _errors(out[1]), _errors(out[1])
    finally:
        c.close()


def test_pipelined_write_behind_a_quick_cut_is_not_cancelled(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, dsn = cc
    c = _dba(p, keys)
    try:
        out = _pipelined(c, Query("INSERT INTO public.cc_ledger SELECT 1, 'x' FROM pg_sleep(0.3)"))
        _cut_ok(out[0])
        assert not _errors(out[1]), _errors(out[1])
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM public.cc_ledger WHERE id = 1").fetchone()[0] == 1
    finally:
        c.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM public.cc_ledger")


def test_pipelined_transaction_behind_a_quick_cut_is_not_aborted(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        out = _pipelined(c, Query("BEGIN"), Query("SELECT pg_sleep(0.3), 1"), Query("SELECT 2"), Query("COMMIT"))
        _cut_ok(out[0])
        assert [_errors(o) for o in out[1:]] == [[], [], [], []], [_errors(o) for o in out[1:]]
        assert _tags(out[4]) == [b"COMMIT\0"]
    finally:
        c.close()


# ---- fault: a cancel the proxy gave up on still lands, on the client's next statement -----------------------


def test_a_cancel_read_late_does_not_hit_the_next_statement(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    fwd.delay = 6.0  # the postmaster reads the CancelRequest after the proxy's 5 s timeout
    c = _agent(p, keys)
    try:
        _cut_ok(c.query(QUICK))  # ends by itself: its ReadyForQuery is in at once
        r = c.query("SELECT pg_sleep(1.5), 1")  # waits for the cancel, then runs
        assert not _errors(r), _errors(r)
        assert _rows(r) == 1
    finally:
        c.close()


# ---- fault: a half-closed client's messages kept behind the cut statement are dropped ------------------------


def test_a_half_closed_client_gets_the_replies_of_what_it_sent_behind_a_cut(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    fwd.delay = 1.0  # the cut waits a second for its cancel: the client's next Query waits in the backlog
    c = _agent(p, keys)
    try:
        c.send(Query(ENDLESS))
        frames: list = []
        while _rows(frames) < LIMIT:
            frames += c.read_until({ord("D")})
        time.sleep(0.2)
        c.send(Query("SELECT 42"))
        c.sock.shutdown(socket.SHUT_WR)  # as psql -f / a script piping its last statements: replies still due
        frames += c.read_until({ord("Z")})
        _cut_ok(frames)
        r = c.read_until({ord("Z")})
        assert _tags(r) == [b"SELECT 1\0"], r
    finally:
        c.close()


# ---- fault: a 57014 the proxy did not cause is turned into a success -----------------------------------------


def test_a_statement_timeout_after_the_cut_is_not_reported_as_success(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    fwd.delay = 1.0  # the proxy's cancel arrives after the rule's statement_timeout (300 ms) fired
    c = RawClient(p.port, keys.token("tim", ("timed",)), user="tim")
    try:
        r = c.query(ENDLESS)
        assert _rows(r) == LIMIT
        assert any("57014" in e and "statement timeout" in e for e in _errors(r)), (_errors(r), _tags(r))
    finally:
        c.close()


# ---- fault: the cancel rolls back a read's transactional side effects, reported as a success -------------------


def test_a_cut_read_told_a_success_keeps_its_effects(cc, fwd: Forwarder, keys: Keys) -> None:
    p, _, _ = cc
    c = _agent(p, keys)
    try:
        r = c.query("SELECT public.cc_tag() AS t, generate_series(1, 1000000) AS g")
        _cut_ok(r)  # told: success
        setting = c.query("SELECT current_setting('app.cc_tag', true)")
        values = [bytes(b) for k, b in setting if k == ord("D")]
        assert values == [b"\x00\x01\x00\x00\x00\x02on"], "told a success, but PostgreSQL rolled it back"
    finally:
        c.close()
