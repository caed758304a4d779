"""Red-team of the wire proxy's row gate (connection.py ``_forward_rows``, detectors.py "the raw gate").

The claim under attack: any value in which ``Detector.find`` finds something is screened before it
reaches the client, the rest arrives byte for byte, and the audit record counts and digests exactly what
the client got. Tests that demonstrate a breach assert the secure behaviour and are ``xfail(strict)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.audit import result_digest
from pgwarden.policy.detectors import Detector
from pgwarden.wire_proxy import Bind, Describe, Execute, Parse, Sync
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data, journal_records

CARD = "4111111111111111"
CARD_GROUPED = "4111 1111 1111 1111"
CARD_DASHED = "4111-1111-1111-1111"
SSN = "123-45-6789"
EMAIL = "bob@example.com"
IBAN = "DE89370400440532013000"
AWS = "AKIAIOSFODNN7EXAMPLE"
STRIPE = "sk_live_abcdefghijklmnop"

SETUP = f"""
CREATE TABLE public.rt_values (id int PRIMARY KEY, v text);
INSERT INTO public.rt_values VALUES
  (1, 'mail {EMAIL}'), (2, 'ssn {SSN}'), (3, 'card {CARD_GROUPED}'), (4, 'card {CARD_DASHED}'),
  (5, 'key {STRIPE}'), (6, 'plain value'), (7, 'iban {IBAN}'), (8, 'aws {AWS}'), (9, 'card {CARD}');
CREATE TABLE public.rt_enc (id int PRIMARY KEY, v text);
INSERT INTO public.rt_enc VALUES (1, 'ア{IBAN}'), (2, 'ア{AWS}'), (3, 'ア{STRIPE}'), (4, 'À{CARD}');
ANALYZE;
"""

TINY = 7  # max_rows of the "tiny" rule (tokens of group "tiny")
DETECTOR = Detector()

SECRETS = (CARD, CARD_GROUPED, CARD_DASHED, SSN, EMAIL, IBAN, AWS, STRIPE)


@pytest.fixture(scope="module")
def rt_db(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)


@pytest.fixture(scope="module")
def rt(rt_db: str, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("redteam-rows")
    data = config_data(rt_db, directory, keys)
    tiny = dict(data["rules"][0], name="tiny", match={"groups": ["tiny"]}, max_rows=TINY)
    data["rules"].insert(0, tiny)
    p = RunningProxy(data, directory)
    yield p, directory
    p.close()


def _records(directory: Path, marker: str) -> list[dict]:
    """Statement records whose query text holds ``marker``."""
    records = journal_records(directory / "journal")
    return [r["body"]["attributes"] for r in records if r["kind"] == "span"
            and r["body"]["attributes"].get("pgwarden.record") == "statement"
            and marker in r["body"]["attributes"].get("db.query.text", "")]


def _check_record(directory: Path, marker: str, columns: list[str], rows: list[list[str | None]]) -> None:
    (a,) = _records(directory, marker)
    assert a["db.response.returned_rows"] == len(rows)
    assert a["pgwarden.result.sha256"] == result_digest(columns, rows)
    assert not _leaks(json.dumps(a))


def _redacted(value: str | None) -> str | None:
    return DETECTOR.redact_value(value)


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _copy_lines(proxy: RunningProxy, keys: Keys, sql: str) -> bytes:
    with (psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn,
          conn.cursor().copy(sql) as copy):
        return b"".join(bytes(b) for b in copy)


def _unescape_text_copy(data: str, delimiter: str) -> list[list[str | None]]:
    """COPY text format as a client reads it: backslash escapes, the delimiter splitting fields."""
    rows = []
    for line in data.split("\n"):
        if not line:
            continue
        fields: list[str | None] = []
        cur = []
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\" and i + 1 < len(line):
                nxt = line[i + 1]
                cur.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}.get(nxt, nxt))
                i += 2
                continue
            if c == delimiter:
                fields.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        fields.append("".join(cur))
        rows.append(fields)
    return rows


# --- COPY OUT: the detectors read the escaped line, the client reads the values ------------------------


# Found by the red-team pass: PostgreSQL escapes a DELIMITER, doubles a QUOTE / ESCAPE and re-encodes with
# ENCODING inside the values of a COPY line, so a finding the client reads back whole ('bob\\@example.com' →
# 'bob@example.com', 'bob@@example.com' → 'bob@example.com', SJIS trail bytes that read as ASCII) is not in
# the line the detectors see. The policy now refuses those options while the detectors are on
# (copy_format_option, 0A000): these tests hold it to that, and the default COPY still goes through screened.


def _copy_refused(proxy: RunningProxy, keys: Keys, sql: str) -> None:
    with pytest.raises(psycopg.Error) as info:
        _copy_lines(proxy, keys, sql)
    assert info.value.sqlstate == "0A000", info.value
    assert "DELIMITER, QUOTE, ESCAPE and ENCODING" in str(info.value)


@pytest.mark.parametrize("delimiter", ["@", "-", " ", "_"])
def test_copy_text_delimiter_inside_findings(rt, keys: Keys, delimiter: str) -> None:
    proxy, _ = rt
    _copy_refused(proxy, keys, f"COPY (SELECT id, v FROM public.rt_values ORDER BY id) TO STDOUT "
                  f"WITH (DELIMITER '{delimiter}')")
    _copy_refused(proxy, keys, f"COPY public.rt_values TO STDOUT DELIMITER '{delimiter}'")  # the old syntax
    raw = _copy_lines(proxy, keys, "COPY (SELECT id, v FROM public.rt_values ORDER BY id) TO STDOUT")
    values = [f[1] for f in _unescape_text_copy(raw.decode(), "\t")]
    assert len(values) == 9
    assert _leaks("\n".join(values)) == []


@pytest.mark.parametrize("option", ["QUOTE '@'", "QUOTE '-'", "ESCAPE '@'", "ESCAPE '_'"])
def test_copy_csv_quote_inside_findings(rt, keys: Keys, option: str) -> None:
    proxy, _ = rt
    _copy_refused(proxy, keys, f"COPY (SELECT id, v FROM public.rt_values ORDER BY id) TO STDOUT "
                  f"WITH (FORMAT csv, {option}, FORCE_QUOTE *)")
    raw = _copy_lines(proxy, keys, "COPY (SELECT id, v FROM public.rt_values ORDER BY id) TO STDOUT "
                      "WITH (FORMAT csv, QUOTE '\"', ESCAPE '\"', DELIMITER ',', FORCE_QUOTE *)")  # the defaults, named
    values = [r[1] for r in csv.reader(io.StringIO(raw.decode()))]
    assert len(values) == 9
    assert _leaks("\n".join(values)) == []


@pytest.mark.parametrize("encoding", ["SJIS", "GB18030", "LATIN1", "sql_ascii"])
def test_copy_encoding_option_shifts_what_the_detectors_read(rt, keys: Keys, encoding: str) -> None:
    proxy, _ = rt
    _copy_refused(proxy, keys, f"COPY (SELECT v FROM public.rt_enc ORDER BY id) TO STDOUT WITH (ENCODING '{encoding}')")
    raw = _copy_lines(proxy, keys, "COPY (SELECT v FROM public.rt_enc ORDER BY id) TO STDOUT WITH (ENCODING 'utf-8')")
    assert _leaks(raw.decode()) == [] and len(raw.decode().splitlines()) == 4


# --- the row path: runs of DataRows -------------------------------------------------------------------


def _long_sql(marker: str) -> str:
    # 900 rows of ~3 kB (a run of ~2.7 MB, read in many pieces): findings at the first byte of a value, at
    # its last byte, alone as the whole value, next to non-ASCII neighbours, and card-shaped misses
    return ("SELECT g, CASE WHEN g % 37 = 0 THEN '4111111111111111' || repeat('x', 3000) "
            "WHEN g % 41 = 0 THEN repeat('y', 3000) || 'bob@example.com' "
            "WHEN g % 43 = 0 THEN 'DE89370400440532013000' "
            "WHEN g % 47 = 0 THEN 'é' || repeat('z', 2999) || 'ー123-45-6789ー' "
            "WHEN g % 53 = 0 THEN '4111111111111112' || repeat('q', 2990) "
            "WHEN g = 1 OR g = 900 THEN 'AKIAIOSFODNN7EXAMPLE' "
            "ELSE repeat(chr(1024 + g % 200), 1500) END AS v, "
            f"CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' END AS n FROM generate_series(1, 900) g /* {marker} */")


@pytest.mark.parametrize("mode", ["simple", "extended"])
def test_findings_at_value_edges_in_a_run_over_many_reads(rt, rt_db: str, keys: Keys, mode: str) -> None:
    proxy, directory = rt
    marker = f"long-{mode}"
    sql = _long_sql(marker)
    with psycopg.connect(rt_db, autocommit=True) as direct:
        truth = direct.execute(sql).fetchall()
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn) if mode == "simple" else conn.cursor()
        got = cur.execute(sql).fetchall()
    assert len(got) == 900
    expected = [(g, _redacted(v), n) for g, v, n in truth]
    assert got == expected
    assert not _leaks("".join(v for _, v, _ in got))
    _check_record(directory, marker, ["g", "v", "n"], [[str(g), v, n] for g, v, n in got])


def test_one_huge_value_with_findings_at_both_ends(rt, keys: Keys) -> None:
    proxy, directory = rt
    sql = ("SELECT '4111111111111111' || repeat('ab', 1500000) || ' sk_live_abcdefghijklmnop' AS v, "
           "repeat('c', 70000) || ' bob@example.com' AS w /* huge */")
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        ((v, w),) = psycopg.ClientCursor(conn).execute(sql).fetchall()
    assert v == "[masked:card]" + "ab" * 1500000 + " [masked:secret_key]"
    assert w == "c" * 70000 + " [masked:email]"
    _check_record(directory, "/* huge */", ["v", "w"], [[v, w]])


def test_tricky_neighbours_are_redacted_as_find_sees_them(rt, rt_db: str, keys: Keys) -> None:
    """Values the detectors find something in, next to characters that are not ASCII: combining marks,
    full-width and Arabic-Indic digits, zero-width joiners, U+FFFD, BOMs; every one comes out as
    ``Detector.redact`` of its own text, the others byte for byte."""
    pieces = ["\u0301", "\uff14", "\u0664", "\u200d", "\ufffd", "\ufeff", "é", "ア", "À", "\x01", " ", "-", "A",
              "0", "_", "@", "\u00a0", "\U0001f600"]
    finds = [CARD, CARD_GROUPED, CARD_DASHED, SSN, EMAIL, IBAN, AWS, STRIPE, "ghp_" + "a" * 20,
             "xoxb-1234567890-abc", "eyJhbGciOi.eyJzdWIiOi.sig", "-----BEGIN PRIVATE KEY-----\nMII\n"]
    values = []
    for i, f in enumerate(finds):
        for j, a in enumerate(pieces):
            b = pieces[(i + j) % len(pieces)]
            values.append(a + f + b)
            values.append(a * 3 + f[: len(f) // 2] + b + f[len(f) // 2:])
    with psycopg.connect(rt_db, autocommit=True) as direct:
        direct.execute("CREATE TABLE IF NOT EXISTS public.rt_tricky (id int PRIMARY KEY, v text)")
        direct.execute("TRUNCATE public.rt_tricky")
        with direct.cursor().copy("COPY public.rt_tricky FROM STDIN") as copy:
            for i, v in enumerate(values):
                copy.write_row((i, v))
    with psycopg.connect(rt[0].dsn(keys.token()), autocommit=True) as conn:
        got = [v for (v,) in conn.execute("SELECT v FROM public.rt_tricky ORDER BY id /* tricky */")]
    assert got == [_redacted(v) for v in values]
    assert sum(g != v for g, v in zip(got, values, strict=True)) > 150
    _check_record(rt[1], "/* tricky */", ["v"], [[v] for v in got])


def test_max_rows_cut_in_the_middle_of_a_run_with_findings_around_the_cut(rt, keys: Keys) -> None:
    proxy, directory = rt
    sql = ("SELECT g, CASE WHEN g >= 6 THEN 'card 4111111111111111' ELSE 'r' || g END AS v "
           "FROM generate_series(1, 5000) g /* tiny-cut */")
    with psycopg.connect(proxy.dsn(keys.token(groups=("tiny",))), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        got = cur.execute(sql).fetchall()
        assert cur.statusmessage == f"SELECT {TINY}"
    assert got == [(g, "card [masked:card]" if g >= 6 else f"r{g}") for g in range(1, TINY + 1)]
    _check_record(directory, "/* tiny-cut */", ["g", "v"], [[str(g), v] for g, v in got])


def _raw_rows(frames: list[tuple[int, bytes]]) -> list[list[str | None]]:
    from pgwarden.wire_proxy.messages import DataRow

    return [[None if v is None else v.decode() for v in DataRow(body).values()]
            for kind, body in frames if kind == ord("D")]


def test_execute_row_limits_and_portal_suspended_count_against_max_rows(rt, keys: Keys) -> None:
    """Execute(portal, 3) again and again: the portal's rows over all Executes stop at max_rows, every one
    screened, and each Execute's record counts and digests what it sent."""
    proxy, directory = rt
    sql = ("SELECT g, CASE WHEN g % 2 = 0 THEN 'bob' || g || '@example.com' ELSE 'r' || g END AS v "
           "FROM generate_series(1, 40) g /* suspended */")
    client = RawClient(proxy.port, keys.token(groups=("tiny",)))
    try:
        client.query("BEGIN")
        client.send(Parse("", sql), Bind("p1", "", (), (), ()), Describe("P", "p1"), Execute("p1", 3), Sync())
        frames = client.read_until({ord("Z")})
        every = list(frames)
        per_exec = [_raw_rows(frames)]
        kinds = [k for k, _ in frames]
        for _ in range(6):
            if ord("s") not in kinds:
                break
            client.send(Execute("p1", 3), Sync())
            frames = client.read_until({ord("Z")})
            every += frames
            kinds = [k for k, _ in frames]
            per_exec.append(_raw_rows(frames))
        client.query("COMMIT")
    finally:
        client.close()
    rows = [r for chunk in per_exec for r in chunk]
    assert rows == [[str(g), "[masked:email]" if g % 2 == 0 else f"r{g}"] for g in range(1, TINY + 1)]
    # the client is told once that the portal's result was cut (on a PortalSuspended: no CommandComplete
    # comes to carry it while the client keeps asking for 3 rows at a time)
    notices = [body for kind, body in every if kind == ord("N") and b"was cut at" in body]
    assert len(notices) == 1
    records = _records(directory, "/* suspended */")
    assert [a["db.response.returned_rows"] for a in records] == [len(c) for c in per_exec]
    for a, chunk in zip(records, per_exec, strict=True):
        assert a["pgwarden.result.sha256"] == result_digest(["g", "v"], chunk)


def test_zero_column_and_all_null_rows_are_counted(rt, keys: Keys) -> None:
    proxy, directory = rt
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        assert len(cur.execute("SELECT FROM generate_series(1, 50) /* zero-col */").fetchall()) == 50
        nulls = cur.execute("SELECT NULL::text AS a, NULL::text AS b FROM generate_series(1, 20) /* nulls */")
        assert nulls.fetchall() == [(None, None)] * 20
    _check_record(directory, "/* zero-col */", [], [[]] * 50)
    _check_record(directory, "/* nulls */", ["a", "b"], [[None, None]] * 20)


def test_server_side_cursor_fetches_are_screened(rt, keys: Keys) -> None:
    proxy, _ = rt
    with psycopg.connect(proxy.dsn(keys.token())) as conn:
        with conn.cursor(name="rtc") as cur:
            cur.itersize = 2
            cur.execute("SELECT id, v FROM public.rt_values ORDER BY id")
            got = [v for _, v in cur]
        conn.rollback()
    assert len(got) == 9
    assert not _leaks("\n".join(got))


def test_binary_cursor_and_binary_results_are_screened(rt, keys: Keys) -> None:
    proxy, _ = rt
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        try:
            got = [v for (v,) in conn.cursor(binary=True).execute(
                "SELECT v FROM public.rt_values ORDER BY id").fetchall()]
        except psycopg.Error:
            got = []
        for v in got:
            assert not _leaks(v)
    with psycopg.connect(proxy.dsn(keys.token())) as conn:
        frames = []
        try:
            conn.execute("DECLARE bc BINARY CURSOR FOR SELECT v, v::varchar, v::name, to_jsonb(v) "
                         "FROM public.rt_values ORDER BY id")
            res = conn.pgconn.exec_(b"FETCH ALL FROM bc")
            frames = [res.get_value(r, c) for r in range(res.ntuples) for c in range(res.nfields)]
        except psycopg.Error:
            pass
        conn.rollback()
    assert not _leaks(b"\n".join(f or b"" for f in frames).decode("utf-8", "replace"))


def test_pipeline_and_multi_statement_results_are_all_screened(rt, keys: Keys) -> None:
    proxy, _ = rt
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT v FROM public.rt_values WHERE id %% 3 = %s ORDER BY id", (k,))
                    for k in range(3)]
        piped = [v for c in curs for (v,) in c.fetchall()]
    assert len(piped) == 9 and not _leaks("\n".join(piped))
    client = RawClient(proxy.port, keys.token())
    try:
        frames = client.query("SELECT v FROM public.rt_values WHERE id < 5; SELECT v FROM public.rt_values "
                              "WHERE id >= 5; SELECT FROM generate_series(1, 3)")
    finally:
        client.close()
    rows = _raw_rows(frames)
    assert len(rows) == 12
    assert not _leaks("\n".join(v for r in rows for v in r if v))


def test_set_config_client_encoding_inside_a_select_is_refused(rt, keys: Keys) -> None:
    """The rows of a statement that switches client_encoding as it runs would leave in SJIS before the
    ParameterStatus that tells the proxy so: the statement must not run at all."""
    proxy, _ = rt
    client = RawClient(proxy.port, keys.token())
    try:
        frames = client.query("SELECT set_config('client_encoding', 'SJIS', false) AS e, v FROM public.rt_enc "
                              "WHERE id < 4")
    finally:
        client.close()
    assert not [body for kind, body in frames if kind == ord("D")]
    assert any(kind == ord("E") for kind, _ in frames)


# --- the raw gate itself, against Detector.find on generated values -----------------------------------

_PIECES = st.sampled_from([CARD, CARD_GROUPED, CARD_DASHED, SSN, EMAIL, IBAN, AWS, STRIPE, "ghp_" + "b" * 16,
                           "github_pat_" + "c" * 16, "xoxp-0123456789", "eyJab.eyJcd.ef", "4111 111111 11111",
                           "-----BEGIN RSA PRIVATE KEY-----", "a@b.co", "GB82WEST12345698765432",
                           "5500 0000 0000 0004", "378282246310005"])
_NOISE = st.sampled_from(["", " ", "-", "@", ".", "_", "A", "a", "0", "9", "\u0301", "\uff10", "\u0660", "é",
                          "ア", "\ufffd", "\u200b", "\x00", "\t", "\n", "\\", "\U0001f600", "D", "xox", "gh"])
_RAW_NOISE = st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80",
                              b"\xef\xbf\xbd", b"\x00", b"\xfe\xff"])


@st.composite
def _hostile_values(draw) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            piece = draw(_PIECES)
            cut = draw(st.integers(0, len(piece)))
            parts.append((piece[:cut] + draw(_NOISE) + piece[cut:]).encode() if draw(st.booleans())
                         else piece.encode())
        elif kind == 1:
            parts.append(draw(_NOISE).encode())
        elif kind == 2:
            parts.append(draw(_RAW_NOISE))
        else:
            parts.append(draw(st.text(max_size=12)).encode("utf-8", "surrogatepass"))
    return b"".join(parts)


def _data_row(values: list[bytes | None]) -> bytes:
    import struct

    body = struct.pack(">h", len(values)) + b"".join(
        struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in values)
    return b"D" + struct.pack(">i", len(body) + 4) + body


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), _hostile_values()), min_size=1, max_size=5),
       st.lists(st.lists(st.one_of(st.none(), _hostile_values()), max_size=3), max_size=3))
def test_raw_gate_names_every_row_find_has_something_in(row: list[bytes | None],
                                                        others: list[list[bytes | None]]) -> None:
    """The rows the proxy would read (connection.py: every row a spot lies in or runs into) hold every row
    in which Detector.find finds something, wherever the row sits in a run."""
    from bisect import bisect_right

    rows = [*others[:1], row, *others[1:]]
    messages = [_data_row(r) for r in rows]
    run = b"".join(messages)
    starts, pos = [], 0
    for msg in messages:
        starts.append(pos)
        pos += len(msg)
    flagged: set[int] = set()
    for a, b in DETECTOR.raw_hits(run, 0, len(run)):
        flagged.update(range(bisect_right(starts, a) - 1, bisect_right(starts, b - 1)))
    for k, r in enumerate(rows):
        if any(v is not None and DETECTOR.find(v.decode("utf-8", "replace")) for v in r):
            assert k in flagged, r
