"""The values a client binds to ``$1 … $n`` are in the statement's audit record.

Through the extended protocol the text says ``WHERE id = $1`` and the value travels in Bind: without the
values the audit trail cannot say which rows a statement read or wrote. The record keeps them
(``pgwarden.query.parameters``, a JSON array of their text forms or null: a binary-format value of a
common type as PostgreSQL prints it, any other as ``\\x`` hex marked opaque), capped and redacted by the
content detectors like the result sample; ``pgwarden audit show`` prints them and
``replay --against`` re-runs the read with them. A statement held for approval records its values too.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from support.wire import Keys, RunningProxy, config_data, journal_records

CARD = "4111111111111111"


@pytest.fixture(scope="module")
def audited(cases_db_module: str, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("wire-params")
    data = config_data(cases_db_module, directory, keys)
    data["masking"]["detectors"] = {"enabled": True}
    data["rules"].insert(0, {
        "name": "runner", "match": {"groups": ["runners"]}, "target": "main",
        "statements": {"allow": ["read", "write"]},
        "approval": {"required_for": ["destructive"], "approvers": ["dba"]},
        "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.orders"]},
    })
    proxy = RunningProxy(data, directory)
    (directory / "pgwarden.yaml").write_text(yaml.safe_dump(data))
    yield proxy, directory
    proxy.close()


def _records(directory: Path, marker: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 5
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = [r["body"]["attributes"] for r in journal_records(directory / "journal") if r["kind"] == "span"
                 and marker in str(r["body"]["attributes"].get("db.query.text", ""))]
        if len(found) >= count:
            break
        time.sleep(0.05)
    assert len(found) >= count, f"no statement record for {marker!r}"
    return found


def test_bound_values_are_recorded(audited, keys: Keys) -> None:
    proxy, directory = audited
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        row = conn.execute("SELECT id, full_name /* params-text */ FROM customers WHERE id = %s OR full_name = %s",
                           [2, None]).fetchone()
        assert row == (2, "Bo Example")
        conn.execute("SELECT length(%b::bytea) /* params-binary */", [b"\x01\x02\xff"]).fetchone()
    attrs = _records(directory, "params-text")[-1]
    assert json.loads(attrs["pgwarden.query.parameters"]) == ["2", None]
    assert "pgwarden.query.parameters_truncated" not in attrs
    assert "$1" in attrs["db.query.text"]
    attrs = _records(directory, "params-binary")[-1]
    assert json.loads(attrs["pgwarden.query.parameters"]) == ["\\x0102ff"]


BINARY = [
    ("int8", 9007199254740993), ("int4", -42), ("int2", 7), ("float8", 0.1), ("float4", 1.5), ("bool", True),
    ("numeric", decimal.Decimal("-12345.678900")), ("numeric", decimal.Decimal("0.0001")),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("date", datetime.date(1999, 12, 31)),
    ("timestamp", datetime.datetime(2026, 12, 4, 21, 5, 6, 789)),
    ("jsonb", '{"a": 1}'), ("text", "plain"), ("bytea", b"\x00\xff"),
]


def test_binary_values_are_recorded_as_postgresql_prints_them(audited, keys: Keys, cases_db_module: str) -> None:
    """asyncpg binds every value in binary: the record holds the text PostgreSQL gives for each."""
    proxy, directory = audited
    casts = ", ".join(f"${i}::{t}" for i, (t, _) in enumerate(BINARY, 1))
    values = [v for _, v in BINARY]

    async def run() -> list[str]:
        conn = await asyncpg.connect(proxy.url(keys.token()))
        try:
            # one screenable int4 back (the gateway withholds binary results of types it cannot screen)
            await conn.fetchrow(f"SELECT num_nulls({casts}) /* params-asyncpg */", *values)
        finally:
            await conn.close()
        info = conninfo_to_dict(cases_db_module)
        direct = await asyncpg.connect(host=info.get("host"), port=int(info.get("port", 5432)),
                                       user=info.get("user"), database=info.get("dbname"))
        try:  # what the server prints for the same values
            row = await direct.fetchrow("SELECT " + ", ".join(f"${i}::{t}::text" for i, (t, _) in
                                                             enumerate(BINARY, 1)), *values)
        finally:
            await direct.close()
        # bool's output function prints t/f (its cast to text says true/false)
        return [{"true": "t", "false": "f"}[v] if t == "bool" else v for (t, _), v in zip(BINARY, row, strict=True)]

    printed = asyncio.run(run())
    attrs = _records(directory, "params-asyncpg")[-1]
    recorded = json.loads(attrs["pgwarden.query.parameters"])
    assert recorded == printed
    assert "pgwarden.query.parameters_opaque" not in attrs


def test_a_binary_value_of_another_type_is_hex_and_opaque(audited, keys: Keys) -> None:
    proxy, directory = audited

    async def run() -> None:
        conn = await asyncpg.connect(proxy.url(keys.token()))
        try:
            await conn.fetchrow("SELECT extract(epoch FROM $1::interval)::int8 /* params-opaque */",
                                datetime.timedelta(hours=1))
        finally:
            await conn.close()

    asyncio.run(run())
    attrs = _records(directory, "params-opaque")[-1]
    (value,) = json.loads(attrs["pgwarden.query.parameters"])
    assert value.startswith("\\x")
    assert attrs["pgwarden.query.parameters_opaque"] is True


def test_each_execute_of_a_prepared_statement_has_its_own_values(audited, keys: Keys) -> None:
    proxy, directory = audited
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True, prepare_threshold=0) as conn:
        for i in (1, 2, 1):
            conn.execute("SELECT id /* params-prepared */ FROM orders WHERE id = %s", [i]).fetchall()
    found = _records(directory, "params-prepared", 3)[-3:]
    assert [json.loads(a["pgwarden.query.parameters"]) for a in found] == [["1"], ["2"], ["1"]]


def test_values_are_redacted_and_capped(audited, keys: Keys) -> None:
    proxy, directory = audited
    long = "x" * 5000
    many = list(range(150))
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        conn.execute("SELECT %s::text = 'a' /* params-card */", [f"card {CARD} here"]).fetchone()
        conn.execute("SELECT length(%s::text) /* params-long */", [long]).fetchone()
        conn.execute("SELECT " + " + ".join(["%s::int"] * len(many)) + " /* params-many */", many).fetchone()
    card = _records(directory, "params-card")[-1]
    assert CARD not in card["pgwarden.query.parameters"]
    assert json.loads(card["pgwarden.query.parameters"]) == ["card [masked:card] here"]
    raw = (directory / "journal").glob("journal-*.jsonl")
    assert not any(CARD.encode() in f.read_bytes() for f in raw)
    capped = _records(directory, "params-long")[-1]
    assert json.loads(capped["pgwarden.query.parameters"]) == ["x" * 1024]
    assert capped["pgwarden.query.parameters_truncated"] is True
    counted = _records(directory, "params-many")[-1]
    assert json.loads(counted["pgwarden.query.parameters"]) == [str(i) for i in range(100)]
    assert counted["pgwarden.query.parameters_truncated"] is True


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgwarden.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PGWARDEN_MASK_KEY": "test-mask-key-0123456789"})


def test_show_prints_them_and_replay_reruns_with_them(audited, keys: Keys, cases_db_module: str) -> None:
    proxy, directory = audited
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        conn.execute("SELECT id, amount /* params-replay */ FROM orders WHERE id = %s", [2]).fetchall()
    session = _records(directory, "params-replay")[-1]["pgwarden.session.id"]
    config = str(directory / "pgwarden.yaml")
    shown = _cli("audit", "show", session, "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert "params:    $1='2'" in shown.stdout
    replay = _cli("audit", "replay", session, "--config", config, "--against", cases_db_module, "--json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    steps = [s for s in json.loads(replay.stdout)["steps"] if "params-replay" in s["text"]]
    assert [s["status"] for s in steps] == ["match"], steps


def test_a_held_statement_records_its_values(audited, keys: Keys) -> None:
    proxy, directory = audited
    broker = proxy.runtime.broker

    def approve() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            pending = proxy.call(broker.list("pending"))
            if pending:
                proxy.call(broker.approve(pending[0].id, "dana", ["dba"]))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=approve)
    thread.start()
    with psycopg.connect(proxy.dsn(keys.token("runner", ("runners",)), user="runner"), autocommit=True) as conn:
        cur = conn.execute("DELETE FROM orders WHERE id = %s /* params-held */", [424242])
        assert cur.statusmessage == "DELETE 0"
    thread.join()
    attrs = _records(directory, "params-held")[-1]
    assert json.loads(attrs["pgwarden.query.parameters"]) == ["424242"]
    assert attrs["pgwarden.approval.decision"] == "approved"
