"""Detectors on the wire, taken a run of DataRows at a time.

The proxy runs the detectors' raw gate once over every run of DataRow messages it receives and reads
values only in the rows it hits (wire_proxy/connection.py, ``_forward_rows``). These tests put findings
at the start, in the middle and at the end of long results, next to rows that only look like them, in
every protocol mode and across max_rows, and check three things: every finding is redacted, every other
row arrives byte for byte, and the audit record's digest is the digest of exactly what the client got.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from pgwarden.audit import result_digest
from support.wire import Keys, RawClient, RunningProxy, config_data, journal_records

# g % 97: an e-mail address; g % 89: a card number; g % 83: a card-shaped number that fails Luhn (a gate
# hit the detectors reject: the row must come through unchanged); everything else a plain label. Row 1
# and the last row carry findings, so runs start and end on rows that are rewritten.
SQL = ("SELECT g, CASE WHEN g % 97 = 0 OR g = 1 THEN 'mail u' || g || '@example.org' "
       "WHEN g % 89 = 0 OR g = {last} THEN 'card 4111111111111111' "
       "WHEN g % 83 = 0 THEN 'ref 4111111111111112' ELSE 'row ' || g END AS note, "
       "CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' END AS n FROM generate_series(1, {last}) g")


def _expected(g: int, last: int = 900) -> tuple[str, str, str | None]:
    if g % 97 == 0 or g == 1:
        note = "mail [masked:email]"
    elif g % 89 == 0 or g == last:
        note = "card [masked:card]"
    elif g % 83 == 0:
        note = "ref 4111111111111112"
    else:
        note = f"row {g}"
    return str(g), note, None if g % 5 == 0 else "x"


@pytest.fixture(scope="module")
def gated(cases_db_module: str, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("gated")
    p = RunningProxy(config_data(cases_db_module, directory, keys), directory)
    yield p, directory
    p.close()


def _statement_records(directory: Path, marker: str) -> list[dict]:
    """The statement records whose text (as journaled: the card in it redacted) holds ``marker``."""
    records = journal_records(directory / "journal")
    return [r["body"]["attributes"] for r in records if r["kind"] == "span"
            and r["body"]["attributes"].get("pgwarden.record") == "statement"
            and marker in r["body"]["attributes"].get("db.query.text", "")]


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_findings_anywhere_in_a_long_result_are_redacted_and_the_rest_is_untouched(gated, keys: Keys,
                                                                                    mode: str) -> None:
    proxy, directory = gated
    sql = SQL.format(last=900) + f" /* {mode} */"
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        if mode == "simple":
            rows = psycopg.ClientCursor(conn).execute(sql).fetchall()
        else:
            for _ in range(2 if mode == "prepared" else 1):
                rows = conn.execute(sql, prepare=mode == "prepared").fetchall()
    got = [(str(g), note, n) for g, note, n in rows]
    assert got == [_expected(g) for g in range(1, 901)]
    records = _statement_records(directory, f"/* {mode} */")
    assert len(records) == (2 if mode == "prepared" else 1)
    for a in records:
        assert a["pgwarden.result.digest_version"] == 2
        assert a["db.response.returned_rows"] == 900
        assert a["pgwarden.result.sha256"] == result_digest(["g", "note", "n"], [list(r) for r in got])
        assert "4111111111111111" not in json.dumps(a)


def test_a_long_result_is_cut_at_max_rows_and_still_screened(gated, keys: Keys) -> None:
    proxy, directory = gated
    sql = SQL.format(last=4000) + " /* cut */"
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)
        rows = cur.execute(sql).fetchall()
        assert cur.statusmessage == "SELECT 1000"
    got = [(str(g), note, n) for g, note, n in rows]
    assert got == [_expected(g, 4000) for g in range(1, 1001)]
    (a,) = _statement_records(directory, "/* cut */")
    assert a["db.response.returned_rows"] == 1000
    assert a["pgwarden.result.sha256"] == result_digest(["g", "note", "n"], [list(r) for r in got])


def test_raw_rows_reach_the_client_byte_for_byte(gated, keys: Keys) -> None:
    """Over the raw protocol: a row the gate hits but the detectors clear, and every row around a
    rewritten one, arrive exactly as PostgreSQL sent them (the same bytes as a direct connection)."""
    proxy, _ = gated
    sql = SQL.format(last=200)
    client = RawClient(proxy.port, keys.token())
    try:
        rows = [body for kind, body in client.query(sql) if kind == ord("D")]
    finally:
        client.close()
    assert len(rows) == 200

    def data_row(values: tuple[str, str, str | None]) -> bytes:
        out = len(values).to_bytes(2, "big")
        for v in values:
            out += b"\xff\xff\xff\xff" if v is None else len(v.encode()).to_bytes(4, "big") + v.encode()
        return out

    assert rows == [data_row(_expected(g, 200)) for g in range(1, 201)]


def test_copy_out_lines_are_screened_through_the_gate(gated, keys: Keys) -> None:
    proxy, _ = gated
    with (psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn,
          conn.cursor().copy(f"COPY ({SQL.format(last=300)}) TO STDOUT") as copy):
        lines = b"".join(copy).decode().splitlines()
    assert lines == ["\t".join("\\N" if v is None else v for v in _expected(g, 300)) for g in range(1, 301)]
    assert not any("4111111111111111" in line for line in lines)
