"""Red-team of "the upstream text cannot be read back" (docs/security.md): the mask rewrite
(``policy/sql/_rewrite.py`` ``derived_table`` / ``mask_expression``) puts the ``hash`` strategy's derived
HMAC pads, in hex, into the text sent upstream, and an agent must never see that text, the pads, or a raw
masked value. Attacked as a holder of a token for the read-only rule ``ai-agents`` of
``examples/public_cases.yaml`` (``customers.email`` hashed, ``card_number`` keep-last-4, ``ssn`` redacted),
through the wire door.

Breaches (each test asserts the secure behaviour; all three fixed since — the ``statement`` columns of
``pg_prepared_statements`` and ``pg_cursors`` and the functions behind them are refused, and a binary value
the recorder cannot render is recorded as withheld when its bytes hold what the detectors mask):

* **A protocol-level named prepared statement keeps the rewritten text, and ``pg_prepared_statements``
  shows it.** The wire door rewrites the text of a ``Parse`` and sends it upstream as it is; PostgreSQL stores
  a named statement's text and prints it in ``pg_prepared_statements.statement`` (and the
  ``pg_prepared_statement()`` function behind it), which the policy lets any reader select
  (``policy/builtins.py``: "show this session's own statements only: not listed"). The outer pad XOR 0x5c is
  the derived key: the test reproduces the served ``h:…`` of a row offline. Reproduction::

      c.send(Parse("s1", "SELECT email FROM customers"), Sync())
      c.query("SELECT statement FROM pg_prepared_statements")   # … decode('<outer pad>', 'hex') …

* **A protocol-level named portal shows the rewritten text in ``pg_cursors``.** Same cause: inside a
  transaction, ``Parse("", "SELECT email FROM customers")`` + ``Bind("pc", "")`` then
  ``SELECT statement FROM pg_cursors`` prints the rewrite with the pads.

  Suggested fix for both: deny ``pg_prepared_statements`` / ``pg_prepared_statement()`` / ``pg_cursors`` /
  ``pg_cursor()`` (as ``sensitive_catalog``) for every principal with a rewritten (masked) read, or at least
  their ``statement`` column; the gateway's own reconciliation (``engine/state.py`` ``RECONCILE_SQL``) reads
  only ``name``, so it is unaffected.

* **A binary-format parameter whose type the server infers is journalled as hex, past the content
  detectors.** ``Parse("", "… WHERE note = $1::text")`` (parameter type 0) + ``Bind`` with format 1 and
  ``b"4111111111111111"`` records ``pgwarden.query.parameters = ["\\x3431…"]`` (opaque) where the same
  value in text format, or with the type declared in Parse, is recorded ``[masked:card]``: the journal keeps a
  card number the redaction is meant to remove (hex is not a protection). At fault: the parameter recorder
  (``wire_proxy/_params.py``) decodes binary values by the type given in Parse only, not by the type the
  server described. Fix: decode by the server's ParameterDescription (it is already asked for user types),
  or run the detectors over the UTF-8 / hex-decoded bytes of an opaque value and redact on a hit.

Held (ordinary tests): SQL-level ``PREPARE`` and ``DECLARE`` keep the client's text (they are not
rewritten); ``EXECUTE`` of a protocol statement and ``EXPLAIN [VERBOSE] EXECUTE`` are refused; ``EXPLAIN
VERBOSE`` / ``(ANALYZE, VERBOSE, FORMAT JSON)`` of masked reads are refused; errors raised inside the derived
table (division by zero, invalid input for a cast of a masked value, a statement timeout in the middle, a
too-deep recursion) carry only the SQLSTATE, severity, file/line/routine and a withheld message — no
D/H/W/q/P/p/s/t/c/d/n field, no pad, no raw value; ``pg_backend_memory_contexts``,
``pg_get_backend_memory_contexts()``, ``pg_stat_get_backend_activity()``, ``pg_stat_get_backend_idset()``,
``pg_ls_logdir()``, ``pg_current_logfile()``, ``pg_read_file`` are refused; the journal (every record of this
module's gateway) holds no derived pad; parameters bound in text form are recorded as they ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import struct
import time

import psycopg
import pytest

from pgwarden.wire_proxy import Bind, Describe, Execute, Parse, Sync
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data, journal_records
from support.wire import frame_codes as _codes
from support.wire import frame_errors as _errors
from support.wire import frame_rows as _rows

MASK_KEY = "test-mask-key-0123456789"
TIMEOUT_MS = 1500
CARD = "4111111111111111"
PAD = re.compile(r"[0-9a-f]{64}(?:5c){16,}|[0-9a-f]{64}(?:36){16,}")


@pytest.fixture(scope="module")
def rt(make_db_module, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")
    directory = tmp_path_factory.mktemp("redteam-upstream-text")
    data = config_data(dsn, directory, keys)
    data["masking"]["detectors"] = {"enabled": True}
    for rule in data["rules"]:
        if rule["name"] == "ai-agents":
            rule["statement_timeout"] = TIMEOUT_MS
    proxy = RunningProxy(data, directory)
    try:
        yield proxy, dsn, directory
    finally:
        proxy.close()


@pytest.fixture
def client(rt, keys: Keys):
    proxy, _, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        yield c
    finally:
        c.close()


def _values(payload: bytes) -> list[str | None]:
    (n,) = struct.unpack_from("!h", payload, 0)
    pos, out = 2, []
    for _ in range(n):
        (size,) = struct.unpack_from("!i", payload, pos)
        pos += 4
        if size < 0:
            out.append(None)
        else:
            out.append(payload[pos:pos + size].decode("utf-8", "replace"))
            pos += size
    return out


def _cells(frames) -> list[str]:
    return [v for row in _rows(frames) for v in _values(row) if v is not None]


def _sync(c: RawClient, *msgs):
    c.send(*msgs, Sync())
    return c.read_until({ord("Z")})


def _raw_email(dsn: str) -> str:
    with psycopg.connect(dsn) as admin:
        return admin.execute("SELECT email FROM public.customers ORDER BY id LIMIT 1").fetchone()[0]


def _served_email(c: RawClient) -> str:
    return _values(_rows(c.query("SELECT email FROM customers ORDER BY id LIMIT 1"))[0])[0]


def _recovered(texts: list[str], raw: str) -> list[str]:
    """Every ``h:…`` of ``raw`` computed offline from a pad found in ``texts`` (outer pad XOR 0x5c = key)."""
    out = []
    for pad in re.findall(r"decode\('([0-9a-f]{128})', 'hex'\)", " ".join(texts).replace('\\"', '"')):
        key = bytes(b ^ 0x5C for b in bytes.fromhex(pad))[:32]
        out.append("h:" + hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()[:16])
    return out


def _assert_no_key(c: RawClient, dsn: str, texts: list[str]) -> None:
    served = _served_email(c)
    assert served.startswith("h:"), served
    recovered = _recovered(texts, _raw_email(dsn))
    assert served not in recovered, f"derived key recovered: the served {served} is reproduced offline"
    assert not any(PAD.search(t) for t in texts), [t[:200] for t in texts]


# ---- breach: protocol-level named prepared statements -------------------------------------------------------

_STATEMENT_READS = {
    "view": "SELECT statement FROM pg_prepared_statements",
    "qualified star": "SELECT * FROM pg_catalog.pg_prepared_statements",
    "TABLE": "TABLE pg_prepared_statements",
    "function": "SELECT statement FROM pg_catalog.pg_prepared_statement()",
    "row_to_json": "SELECT row_to_json(p)::text FROM pg_prepared_statements p",
}


@pytest.mark.parametrize("how", sorted(_STATEMENT_READS))
def test_named_prepared_statement_does_not_show_the_rewrite(rt, client: RawClient, how: str) -> None:
    _, dsn, _ = rt
    r = _sync(client, Parse("s1", "SELECT email FROM customers ORDER BY id"))
    assert not _errors(r), _errors(r)
    _assert_no_key(client, dsn, _cells(client.query(_STATEMENT_READS[how])))


def test_named_portal_does_not_show_the_rewrite_in_pg_cursors(rt, client: RawClient) -> None:
    _, dsn, _ = rt
    client.query("BEGIN")
    try:
        r = _sync(client, Parse("", "SELECT email FROM customers ORDER BY id"), Bind("pc", "", (), (), ()))
        assert not _errors(r), _errors(r)
        texts = _cells(client.query("SELECT statement FROM pg_cursors"))
    finally:
        client.query("ROLLBACK")
    _assert_no_key(client, dsn, texts)


# ---- held: SQL-level kept statements, EXPLAIN, EXECUTE -----------------------------------------------------


def test_sql_prepare_and_declare_texts_are_refused_their_names_readable(rt, client: RawClient) -> None:
    """Since the fix the ``statement`` columns are refused for every statement (a protocol-level one holds
    the rewrite); names stay readable."""
    _ = rt
    assert not _errors(client.query("PREPARE p AS SELECT email FROM customers"))
    assert _codes(client.query("SELECT statement FROM pg_prepared_statements WHERE from_sql")) == ["42501"]
    assert _cells(client.query("SELECT name FROM pg_prepared_statements WHERE from_sql")) == ["p"]
    client.query("BEGIN")
    try:
        assert not _errors(client.query("DECLARE cur CURSOR FOR SELECT email FROM customers"))
        assert _cells(client.query("SELECT name FROM pg_cursors")) == ["cur"]
        # (a refusal inside a transaction block aborts it, as PostgreSQL's own errors do)
        assert _codes(client.query("SELECT statement FROM pg_cursors")) == ["42501"]
    finally:
        client.query("ROLLBACK")


@pytest.mark.parametrize("sql", [
    "EXPLAIN VERBOSE SELECT email FROM customers",
    "EXPLAIN (VERBOSE, FORMAT JSON) SELECT email FROM customers",
    "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT email FROM customers",
    "EXPLAIN (VERBOSE) SELECT lower(email) FROM customers WHERE id = 1",
])
def test_explain_of_masked_reads_shows_no_pads(rt, client: RawClient, sql: str) -> None:
    _, dsn, _ = rt
    r = client.query(sql)
    _assert_no_key(client, dsn, _cells(r) + _errors(r))


def test_execute_and_explain_execute_of_a_protocol_statement_are_refused(rt, client: RawClient) -> None:
    _, dsn, _ = rt
    _sync(client, Parse("s2", "SELECT email FROM customers ORDER BY id"))
    texts = []
    for sql in ("EXPLAIN (VERBOSE) EXECUTE s2", "EXPLAIN EXECUTE s2", "EXECUTE s2"):
        r = client.query(sql)
        assert _codes(r), (sql, r)
        texts += _cells(r) + _errors(r)
    _assert_no_key(client, dsn, texts)


# ---- held: errors raised inside the derived table ----------------------------------------------------------

_ERRORS = {
    "division by zero": ("SELECT 1 / (length(email) - length(email)) FROM customers", "22012"),
    "cast of a masked value": ("SELECT email::int FROM customers", "22P02"),
    "bigint cast of the card": ("SELECT card_number::bigint FROM customers", "22P02"),
    "hex decode of a masked value": ("SELECT decode(email, 'hex') FROM customers", "22023"),
    "statement timeout mid-read": ("SELECT pg_sleep(3), email FROM customers", "57014"),
    "too-deep recursion": ("WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM customers UNION ALL "
                           "SELECT n + 1, e FROM r) SELECT count(*) FROM r", None),
    "ambiguous column": ("SELECT email FROM customers a, customers b", "42702"),
}


@pytest.mark.parametrize("how", sorted(_ERRORS))
@pytest.mark.parametrize("door", ["simple", "extended"])
def test_errors_inside_the_derived_table_carry_no_text(rt, client: RawClient, how: str, door: str) -> None:
    _, dsn, _ = rt
    sql, code = _ERRORS[how]
    if how == "too-deep recursion":
        client.query("SET statement_timeout = 800")
    r = client.query(sql) if door == "simple" else client.extended(sql)
    errors = _errors(r)
    assert errors, (how, r)
    if code is not None:
        assert _codes(r)[0] == code, errors
    raw = _raw_email(dsn)
    for e in errors:
        fields = {f[0]: f[1:] for f in e.split("\0") if f}
        assert set(fields) <= set("SVCMFLRPH"), fields
        if "H" in fields:  # a refusal of the gateway's own, not the server's
            assert fields["M"].startswith("pgwarden:"), fields
        assert raw not in e and CARD not in e and "078-05-1120" not in e, e
        assert "pg_catalog." not in e and not PAD.search(e), e
    _assert_no_key(client, dsn, errors)


# ---- held: the other places the server keeps the statement --------------------------------------------------


@pytest.mark.parametrize("sql", [
    "SELECT ident FROM pg_backend_memory_contexts WHERE ident LIKE '%hex%'",
    "SELECT ident FROM pg_catalog.pg_get_backend_memory_contexts()",
    "SELECT pg_stat_get_backend_activity(pg_backend_pid())",
    "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
    "SELECT * FROM pg_ls_logdir()",
    "SELECT pg_current_logfile()",
    "SELECT pg_read_file('log/postgresql.log')",
    "SELECT query FROM pg_stat_activity",
    "SELECT current_query()",
])
def test_other_statement_stores_are_refused(rt, client: RawClient, sql: str) -> None:
    _, dsn, _ = rt
    _sync(client, Parse("s3", "SELECT email FROM customers ORDER BY id"))
    r = client.query(sql)
    assert _codes(r) and _codes(r)[0] == "42501", (sql, _errors(r), _cells(r)[:1])
    _assert_no_key(client, dsn, _cells(r) + _errors(r))


# ---- the journal --------------------------------------------------------------------------------------------


def _params_of(directory, marker: str) -> list:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for rec in journal_records(directory / "journal"):
            attrs = rec.get("body", {}).get("attributes", {})
            if marker in str(attrs.get("db.query.text", "")) and "pgwarden.query.parameters" in attrs:
                return json.loads(attrs["pgwarden.query.parameters"])
        time.sleep(0.1)
    raise AssertionError(f"no record for {marker}")


@pytest.mark.parametrize("formats,types", [((0,), ()), ((0,), (25,)), ((1,), (25,))])
def test_bound_card_number_is_redacted_in_the_journal(rt, client: RawClient, formats, types) -> None:
    _, _, directory = rt
    marker = f"/*rt-param-{formats[0]}-{len(types)}*/"
    _sync(client, Parse("", f"SELECT id FROM orders WHERE note = $1::text {marker}", types),
          Bind("", "", formats, (CARD.encode(),), ()), Describe("P", ""), Execute("", 0))
    params = _params_of(directory, marker)
    assert CARD not in json.dumps(params), params


def test_bound_card_number_in_binary_of_an_inferred_type_is_redacted_in_the_journal(rt, client) -> None:
    _, _, directory = rt
    marker = "/*rt-param-binary-inferred*/"
    _sync(client, Parse("", f"SELECT id FROM orders WHERE note = $1::text {marker}"),
          Bind("", "", (1,), (CARD.encode(),), ()), Describe("P", ""), Execute("", 0))
    params = json.dumps(_params_of(directory, marker))
    assert CARD not in params and CARD.encode().hex() not in params, params


def test_text_parameters_are_recorded_as_they_ran(rt, client: RawClient) -> None:
    _, _, directory = rt
    marker = "/*rt-param-as-ran*/"
    r = _sync(client, Parse("", f"SELECT email FROM customers WHERE id = $1 {marker}", (23,)),
              Bind("", "", (), (b" 2",), ()), Describe("P", ""), Execute("", 0))
    assert len(_rows(r)) == 1
    assert _params_of(directory, marker) == [" 2"]


def test_journal_holds_no_derived_pad(rt, client: RawClient) -> None:
    _, _, directory = rt
    _sync(client, Parse("s4", "SELECT email FROM customers /*rt-journal*/"))
    client.extended("SELECT lower(email), count(*) FROM customers GROUP BY 1 /*rt-journal*/")
    client.query("SELECT email::int FROM customers /*rt-journal*/")
    time.sleep(0.5)
    text = b"".join(f.read_bytes() for f in sorted((directory / "journal").glob("journal-*.jsonl")))
    assert b"rt-journal" in text
    with contextlib.suppress(UnicodeDecodeError):
        assert not PAD.search(text.decode()), PAD.search(text.decode())
