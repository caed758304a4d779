"""``keep_last`` inside the statement gives exactly what the Python masker gives, value for value.

The rewrite (policy/sql/_rewrite.py) masks in SQL: a fast path for the common case (no separator
among the last keep + 1 characters) and two regular expressions otherwise. masking.py's
``_keep_last_text`` is the reference. Both paths run here on real PostgreSQL over values chosen to sit
on every boundary (shorter than keep, exactly keep, keep + 1, separators in the tail, before it, only
separators, non-ASCII) and on a few hundred drawn at random, for keep 0, 1, 4 and 6, in text, varchar
and char(n) columns.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
import yaml

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session
from pgwarden.policy.masking import make_masker

REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})
KEEPS = (0, 1, 4, 6)

EDGES = ["", "1", "12", "123", "1234", "12345", "123456", "1234567", "4111111111111111", "4111-1111-1111-1111",
         "4111 1111 1111 1111", "4111-1111-1111-111-1", "1-2-3-4-5", "-1234", "12345-", "1234 ", " 1234",
         "--", "    ", "- -", "a-b c-d", "é1234", "12é34", "ü-ö-ä-ß-€", "****1234", "1234-", "1-234", "12-34",
         "123-4", "1234-5", "x" * 300 + "-9", "0000-0000-0000-0000", "🙂🙂🙂🙂🙂"]


def _values() -> list[str]:
    rng = random.Random(20261203)
    alphabet = "0123456789" * 3 + "-  ab*é"
    drawn = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(400)]
    return EDGES + drawn


@pytest.fixture(scope="module")
def gateway(make_db_module):
    columns = ", ".join(f"k{k} text, v{k} varchar(400), c{k} char(20)" for k in KEEPS)
    dsn = make_db_module(f"CREATE TABLE cards (id int PRIMARY KEY, {columns});")
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO cards VALUES (%s, {', '.join(['%s'] * 3 * len(KEEPS))})",
            [(i, *[x for _ in KEEPS for x in (v, v, v[:20])]) for i, v in enumerate(_values())])
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    data["masking"] = {"columns": [{"column": f"public.cards.{p}{k}", "strategy": "keep_last", "keep": k}
                                   for k in KEEPS for p in "kvc"],
                       "detectors": {"enabled": False}}
    gw = Gateway(parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples"))
    anyio.run(gw.refresh_catalog, "main")
    return gw, dsn


def test_keep_last_in_sql_is_the_python_masker(gateway) -> None:
    gw, _dsn = gateway
    names = [f"{p}{k}" for k in KEEPS for p in "kvc"]

    async def go():
        try:
            async with Session(gw, AGENT, "main") as session:
                return await session.run(f"SELECT id, {', '.join(names)} FROM cards ORDER BY id")
        finally:
            await gw.close()

    rows = anyio.run(go).results[-1].rows
    values = _values()
    assert len(rows) == len(values)
    maskers = {k: make_masker("keep_last", keep=k) for k in KEEPS}
    mismatches = []
    for row in rows:
        raw = values[int(row[0])]
        for name, got in zip(names, row[1:], strict=True):
            k = int(name[1:])
            source = raw[:20].ljust(20) if name[0] == "c" else raw  # char(20) pads with spaces
            want = maskers[k](source)
            if got != want:
                mismatches.append((name, source, got, want))
    assert not mismatches, mismatches[:10]
