"""Binary-format results through the wire door: read and screened where the gateway can read them exactly.

asyncpg asks for every column in binary. The screen reads the binary form of the text types, json, jsonb,
int8 and numeric as the text PostgreSQL would have sent (policy/results.py, ``_BINARY_TEXT``), runs the
content detectors over it, writes a redacted text back in the same binary form, and withholds a result
whose int8 or numeric value holds a finding (a redaction has no binary int8 form). Everything else that
needs screening is still refused in binary. The decoders are held to PostgreSQL's own output functions.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct

import psycopg
import pytest

from pgwarden.policy.detectors import Detector
from pgwarden.policy.results import (
    _BINARY_TEXT,
    ColumnInfo,
    ResultScreen,
    ResultShapeMismatch,
    ValueWithheld,
)
from pgwarden.policy.verdict import StatementPlan
from support.wire import Keys, RunningProxy, config_data

CARD = "4111111111111111"

NUMERICS = ["0", "1", "-1", "0.5", "-0.5", "10000", "9999.9999", "0.0001", "0.00001", "123456789.123456789",
            "1e20", "-1e-20", "4111111111111111", "4111111111111111.00", "-4111111111111111", "3.14159265358979",
            "NaN", "Infinity", "-Infinity", "100000000", "0.000000001", "12345678901234567890123456789",
            "1.10", "1000.0001", "99999999999999999999.99999999999999999999"]


def test_the_binary_readers_give_postgresqls_text(pg_admin_dsn: str) -> None:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT numeric_send(v::numeric), v::numeric::text FROM unnest(%s::text[]) v", [NUMERICS]).fetchall()
        rows += conn.execute("SELECT numeric_send(round(v::numeric, s)), round(v::numeric, s)::text "
                             "FROM unnest(ARRAY['1.5', '-2', '0', '12345.678']) v, generate_series(0, 6) s").fetchall()
        for binary, text in rows:
            assert _BINARY_TEXT[1700][0](bytes(binary)) == text
        for v in (0, 1, -1, 2**63 - 1, -(2**63), int(CARD)):
            binary, text = conn.execute("SELECT int8send(%s::int8), %s::int8::text", [v, v]).fetchone()
            assert _BINARY_TEXT[20][0](bytes(binary)) == text
        doc = '{"a": "bob@example.com", "n": [1, 2.5, null], "é": true}'
        binary, text = conn.execute("SELECT jsonb_send(%s::jsonb), %s::jsonb::text", [doc, doc]).fetchone()
        assert _BINARY_TEXT[3802][0](bytes(binary)) == text
        for oid, send, cast in ((25, "textsend", "text"), (1043, "varcharsend", "varchar"),
                                (1042, "bpcharsend", "char(12)"), (19, "namesend", "name"), (114, "json_send", "json")):
            binary, text = conn.execute(f"SELECT {send}(%s::{cast}), concat(%s::{cast})", ['"héllo x"'] * 2).fetchone()
            assert _BINARY_TEXT[oid][0](bytes(binary)) == text


def _screen(type_oid: int) -> ResultScreen:
    plan = StatementPlan(index=0, command_tag="SELECT", width=1)
    return ResultScreen.build(plan, [ColumnInfo("v", type_oid, 0, 0, 1)], detector=Detector())


def test_a_binary_screen_redacts_text_and_withholds_numbers() -> None:
    text = _screen(25)
    assert text.gated  # text in binary is its UTF-8 bytes: the raw gate still sees every value
    assert text.row([f"card {CARD}".encode()]) == [b"card [masked:card]"]
    assert _screen(3802).row([b'\x01{"c": "' + CARD.encode() + b'"}']) == [b'\x01{"c": "[masked:card]"}']
    # 4111111111111111 as numeric_send writes it: 4 base-10000 digits, weight 3, positive, scale 0
    numeric = struct.pack("!hhHH4H", 4, 3, 0, 0, 4111, 1111, 1111, 1111)
    assert _BINARY_TEXT[1700][0](numeric) == CARD
    for oid, value in ((20, int(CARD).to_bytes(8, "big", signed=True)), (1700, numeric)):
        screen = _screen(oid)
        assert not screen.gated  # an int8 in binary does not carry its digits: every row is read
        with pytest.raises(ValueWithheld):
            screen.row([value])
    assert _screen(20).row([(42).to_bytes(8, "big")]) == [(42).to_bytes(8, "big")]
    with pytest.raises(ValueWithheld):  # a value that does not decode is withheld, not passed
        _screen(20).row([b"\x00\x01"])
    with pytest.raises(ResultShapeMismatch, match="binary format"):
        _screen(1009)  # text[]


@pytest.fixture(scope="module")
def bproxy(cases_db_module: str, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("binary")
    p = RunningProxy(config_data(cases_db_module, directory, keys), directory)
    yield p
    p.close()


def test_asyncpg_reads_text_columns_screened_and_is_refused_card_numbers_it_cannot_redact(bproxy, keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def go() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=bproxy.port, user="agent", database="main",
                                     password=keys.token(), ssl=False)
        try:
            row = await conn.fetchrow("SELECT full_name, card_number, email, 'pay ' || $1::text AS note, "
                                      "jsonb_build_object('c', $1::text) AS doc FROM customers WHERE id = 1", CARD)
            assert row["card_number"] == "************1111"
            assert row["note"] == "pay [masked:card]"
            assert json.loads(row["doc"]) == {"c": "[masked:card]"}
            assert CARD not in repr(dict(row))
            # a long result: a card in an int8 in the middle of it is never forwarded
            with pytest.raises(asyncpg.exceptions.DataError, match="binary format"):
                await conn.fetch("SELECT g::int8, CASE WHEN g = 700 THEN $1::int8 ELSE g END::int8 "
                                 "FROM generate_series(1, 900) g", int(CARD))
            with pytest.raises(asyncpg.exceptions.DataError):
                await conn.fetchval("SELECT $1::numeric", int(CARD))
            values = await conn.fetch("SELECT g::int8 AS i, (g / 3.0)::numeric(10, 4) AS n "
                                      "FROM generate_series(1, 50) g")
            assert [r["i"] for r in values] == list(range(1, 51))
            assert await conn.fetchval("SELECT 7") == 7  # the session goes on
        finally:
            await conn.close()

    asyncio.run(go())


def test_psycopg_binary_cursor_gets_the_same_rows_as_a_text_one(bproxy, keys) -> None:
    sql = ("SELECT g, CASE WHEN g % 7 = 0 THEN 'to u' || g || '@example.org' ELSE 'row ' || g END AS note "
           "FROM generate_series(1, 400) g")
    with psycopg.connect(bproxy.dsn(keys.token()), autocommit=True) as conn:
        text = conn.execute(sql).fetchall()
        with conn.cursor(binary=True) as cur:
            binary = cur.execute(sql).fetchall()
    assert binary == text
    assert text[6] == (7, "to [masked:email]")
