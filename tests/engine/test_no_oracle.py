"""No oracle: a statement through the engine returns what it returns on a pre-masked copy.

The masks are substituted inside the statement (policy/_rewrite.py), so every expression,
predicate, aggregate, set operation, ordering, SRF, JSON and whole-row value sees masked values.
The definition tested here: the same text, run through the engine against the real table, gives
exactly the rows (or the error-or-not outcome) it gives when run directly on a copy of the database
in which the masked columns were masked beforehand — by the Python maskers of masking.py, an
implementation independent of the SQL the rewrite splices in. Sentinels of the fixture (the raw
card number, SSN and e-mail) must never appear in anything the engine returns.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.adapt import AdaptersMap
from psycopg.types.string import TextLoader

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session, StatementRefused, UpstreamError
from pgwarden.policy.masking import make_masker
from support.cases import load_public_cases

REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})
DBA = Principal.local("dana", {"dba"})

SENTINELS = ("4111111111111111", "5500005555555559", "078-05-1120", "219-09-9999", "zed.sentinel",
             "bo@example.org", "111111111111", "5555555559", "05-1120")
EXTRA_SQL = """
INSERT INTO customers VALUES (3, 'Cy Example', NULL, '4000-0000-0000-0002', NULL),
  (4, 'Di Example', 'DI@Example.org', '4', '123-45-6789');
"""

_TEXT = AdaptersMap()
_TEXT.register_loader(0, TextLoader)


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")


@pytest.fixture(scope="module")
def dbs(make_db_module):
    """(engine database, pre-masked copy)."""
    fixture = load_public_cases().fixture_sql + EXTRA_SQL
    live = make_db_module(fixture)
    copy = make_db_module(fixture)
    return live, copy


@pytest.fixture(scope="module")
def world(dbs):
    import os
    os.environ["PGWARDEN_MASK_KEY"] = "test-mask-key-0123456789"
    live, copy = dbs
    gateway = make_gateway(live)
    _premask(gateway, copy)
    yield gateway, copy
    anyio.run(gateway.close)


def make_gateway(dsn: str) -> Gateway:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    gateway = Gateway(parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples"))
    anyio.run(gateway.refresh_catalog, "main")
    return gateway


def _premask(gateway: Gateway, dsn: str) -> None:
    """Mask the copy's columns in place with the Python maskers (same derived keys as the gateway)."""
    masks = {m.column.rsplit(".", 1)[1]: m for m in gateway.policy.masking.columns}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id, email, card_number, ssn FROM customers").fetchall()
        for row_id, *values in rows:
            out = []
            for column, value in zip(("email", "card_number", "ssn"), values, strict=True):
                mask = masks[column]
                key = gateway.mask_key(mask) if mask.key is not None else None
                out.append(make_masker(mask.strategy, keep=mask.keep, key=key)(value))
            conn.execute("UPDATE customers SET email = %s, card_number = %s, ssn = %s WHERE id = %s",
                         (*out, row_id))


def through_engine(gateway: Gateway, sql: str):
    async def go():
        try:
            async with Session(gateway, AGENT, "main") as session:
                return await session.run(sql)
        finally:
            await gateway.close()  # the pool belongs to this event loop
    return anyio.run(go)


def directly(dsn: str, sql: str):
    with psycopg.connect(dsn, autocommit=True, context=_TEXT) as conn:
        if sql.lstrip().upper().startswith("COPY"):
            with conn.cursor() as cur, cur.copy(sql) as copy:
                data = b"".join(bytes(b) for b in copy)
            return [(line,) for line in data.decode().split("\n") if line]
        cur = conn.execute(sql)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


def outcome_engine(gateway: Gateway, sql: str):
    try:
        result = through_engine(gateway, sql)
    except UpstreamError as exc:
        return ("error", exc.sqlstate)
    return ("rows", [tuple(r) for r in result.results[-1].rows])


def outcome_direct(dsn: str, sql: str):
    try:
        return ("rows", directly(dsn, sql))
    except psycopg.Error as exc:
        return ("error", exc.diag.sqlstate)


def assert_no_oracle(world, sql: str) -> None:
    gateway, copy = world
    got = outcome_engine(gateway, sql)
    want = outcome_direct(copy, sql)
    if want[0] == "rows" and gateway.detector is not None:
        # The content detectors stay a second net over every value (a client's own card-number literal
        # is redacted too): the copy's rows go through them as well.
        redact = gateway.detector.redact
        want = ("rows", [tuple(None if v is None else redact(v) for v in row) for row in want[1]])
    if "ORDER BY" not in sql.upper() and got[0] == want[0] == "rows":
        got, want = ("rows", sorted(got[1], key=repr)), ("rows", sorted(want[1], key=repr))
    assert got == want, sql
    text = repr(got)
    for sentinel in SENTINELS:
        assert sentinel not in text, (sql, sentinel)


# (inference class, query)
CASES = [
    ("count of a condition, char by char",
     "SELECT count(CASE WHEN ascii(substr(card_number, 1, 1)) = 52 THEN 1 END) FROM customers"),
    ("count against generate_series",
     "SELECT g, count(*) FROM customers, generate_series(48, 57) g "
     "WHERE ascii(substr(card_number, 1, 1)) = g GROUP BY g ORDER BY g"),
    ("sum of characters", "SELECT sum(ascii(substr(ssn, g, 1))) FROM customers, generate_series(1, 11) g"),
    ("SRF fed a masked value",
     "SELECT c.id, count(*) FROM customers c, generate_series(1, ascii(substr(c.card_number, 1, 1))) "
     "GROUP BY c.id ORDER BY c.id"),
    ("regexp_matches", "SELECT id, regexp_matches(card_number, '^(4)') FROM customers ORDER BY id"),
    ("DISTINCT", "SELECT DISTINCT substr(card_number, 1, 1) FROM customers ORDER BY 1"),
    ("UNION de-duplication", "SELECT card_number FROM customers UNION SELECT '4111111111111111' ORDER BY 1"),
    ("INTERSECT", "SELECT ssn FROM customers INTERSECT SELECT '078-05-1120'"),
    ("EXCEPT", "SELECT email FROM customers EXCEPT SELECT 'bo@example.org' ORDER BY 1"),
    ("NULLIF", "SELECT id, NULLIF(card_number, '4111111111111111') IS NULL FROM customers ORDER BY id"),
    ("IS NULL", "SELECT id FROM customers WHERE ssn IS NULL ORDER BY id"),
    ("ORDER BY position", "SELECT id FROM (SELECT id, card_number FROM customers ORDER BY 2, 1) s"),
    ("ORDER BY alias", "SELECT array_agg(id) FROM (SELECT id, ssn AS s FROM customers ORDER BY s, id) x"),
    ("DISTINCT ON", "SELECT DISTINCT ON (substr(email, 1, 3)) id FROM customers ORDER BY substr(email, 1, 3), id"),
    ("window PARTITION BY",
     "SELECT id, count(*) OVER (PARTITION BY substr(card_number, 1, 1)) FROM customers ORDER BY id"),
    ("LATERAL", "SELECT c.id, x.v FROM customers c, LATERAL (SELECT left(c.card_number, 1) AS v) x ORDER BY 1"),
    ("subquery in the select list",
     "SELECT c.id, (SELECT count(*) FROM customers d WHERE d.card_number < c.card_number) FROM customers c "
     "ORDER BY c.id"),
    ("JSON aggregate", "SELECT jsonb_agg(email ORDER BY id) FROM customers"),
    ("JSON builder", "SELECT json_build_object('e', email, 's', ssn) FROM customers ORDER BY id"),
    ("row_to_json shows the other fields", "SELECT row_to_json(c) FROM customers c ORDER BY id"),
    ("whole-row comparison", "SELECT count(*) FROM customers a, customers b WHERE a = b"),
    ("whole row as text", "SELECT c::text FROM customers c ORDER BY id"),
    ("arrays", "SELECT array_agg(ssn ORDER BY id), array_agg(card_number ORDER BY id) FROM customers"),
    ("join on the hashed e-mail",
     "SELECT a.id, b.id FROM customers a JOIN customers b ON a.email = b.email ORDER BY 1"),
    ("lower(email) is the lowercase of the masked value", "SELECT id, lower(email) FROM customers ORDER BY id"),
    ("predicate LIKE", "SELECT id FROM customers WHERE card_number LIKE '4%' ORDER BY id"),
    ("predicate on the local part", "SELECT id FROM customers WHERE email LIKE 'zed%' ORDER BY id"),
    ("equality guess", "SELECT count(*) FROM customers WHERE ssn = '078-05-1120'"),
    ("GROUP BY", "SELECT ssn, count(*) FROM customers GROUP BY ssn ORDER BY 1"),
    ("HAVING", "SELECT count(*) FROM customers GROUP BY id HAVING max(card_number) > '4' ORDER BY 1"),
    ("CTE", "WITH x AS (SELECT card_number AS k FROM customers) SELECT count(*) FROM x WHERE k LIKE '41%'"),
    ("TABLE", "TABLE customers"),
    ("ONLY", "SELECT * FROM ONLY customers ORDER BY id"),
    ("COPY TO STDOUT", "COPY customers TO STDOUT"),
    ("COPY columns", "COPY customers (id, email) TO STDOUT WITH (FORMAT csv)"),
    ("COPY query", "COPY (SELECT id, card_number FROM customers WHERE ssn LIKE '0%') TO STDOUT"),
    ("error-or-not: division by zero in CASE",
     "SELECT CASE WHEN substr(card_number, 1, 1) = '4' THEN 1 / 0 ELSE 1 END FROM customers"),
    ("error-or-not: a cast that fails on some values", "SELECT count(*) FROM customers WHERE ssn::int > 0"),
    ("string functions", "SELECT id, length(card_number), reverse(ssn), upper(email) FROM customers ORDER BY id"),
    ("position / strpos", "SELECT id, strpos(email, '@') FROM customers ORDER BY id"),
    ("md5 of a masked value", "SELECT id, md5(card_number) FROM customers ORDER BY id"),
    ("to_jsonb path", "SELECT jsonb_path_query(to_jsonb(c), '$.card_number') FROM customers c ORDER BY c.id"),
    ("set operation with ORDER BY name", "SELECT ssn AS s FROM customers UNION SELECT 'x' ORDER BY s"),
    ("EXISTS correlated", "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d "
                          "WHERE d.ssn < c.ssn) ORDER BY id"),
    ("join with orders", "SELECT o.id, c.card_number FROM orders o JOIN customers c ON c.id = o.customer_id "
                         "ORDER BY o.id"),
]


@pytest.mark.parametrize(("klass", "sql"), CASES, ids=[c[0] for c in CASES])
def test_no_oracle(world, klass: str, sql: str) -> None:
    assert_no_oracle(world, sql)


def test_lower_email_row_to_json_and_hash_join_are_useful(world) -> None:
    gateway, _ = world
    rows = through_engine(gateway, "SELECT lower(email), email FROM customers WHERE id = 1").results[0].rows
    assert rows[0][0] == rows[0][1].lower() and rows[0][1].startswith("h:")
    doc = through_engine(gateway, "SELECT row_to_json(c)::text FROM customers c WHERE id = 1").results[0].rows
    assert '"full_name":"Ada Example"' in doc[0][0] and '"card_number":"************1111"' in doc[0][0]
    joined = through_engine(gateway, "SELECT count(*) FROM customers a JOIN customers b ON a.email = b.email "
                                     "AND a.id <> b.id").results[0].rows
    assert joined == [("0",)]


def test_timing_channel_is_closed(world) -> None:
    gateway, _ = world
    started = time.perf_counter()
    rows = through_engine(gateway, "SELECT count(*) FROM customers WHERE CASE WHEN substr(card_number, 1, 1) = '4' "
                                   "THEN pg_sleep(0.5) IS NOT NULL ELSE true END").results[0].rows
    assert rows == [("4",)]
    assert time.perf_counter() - started < 0.5  # the masked value starts with '*': it never sleeps


def test_explain_of_a_masked_filter_is_still_refused(world) -> None:
    gateway, _ = world
    for sql in ("EXPLAIN ANALYZE SELECT id FROM customers WHERE card_number LIKE '4%'",
                "EXPLAIN SELECT id FROM customers WHERE ssn = '078-05-1120'"):
        with pytest.raises(StatementRefused):
            through_engine(gateway, sql)


@pytest.mark.parametrize("sql", [
    "SELECT current_query(), email FROM customers",
    "SELECT query FROM pg_stat_activity, customers",
    "SELECT * FROM pg_stat_get_activity(NULL)",
    "SELECT query FROM pg_stat_statements",
])
def test_the_upstream_text_cannot_be_read_back(world, sql: str) -> None:
    gateway, _ = world
    with pytest.raises(StatementRefused):
        through_engine(gateway, sql)


def test_upstream_text_holds_only_a_derived_key(world) -> None:
    gateway, _ = world
    verdict = Session(gateway, AGENT, "main").authorise("SELECT email FROM customers")
    master = b"test-mask-key-0123456789"
    assert verdict.upstream_text and master.hex() not in verdict.upstream_text
    assert "test-mask-key" not in verdict.upstream_text
    assert "upstream_text" not in str(verdict.as_dict()) and verdict.upstream_text not in repr(verdict)


def test_error_positions_never_point_into_spliced_text(world) -> None:
    gateway, _ = world
    verdict = Session(gateway, AGENT, "main").authorise("SELECT email FROM customers WHERE id = 1")
    assert verdict.upstream_text is not None
    up = verdict.upstream_text
    # a position after the splice maps back to the client's text; one inside it maps to nothing
    client = "SELECT email FROM customers WHERE id = 1"
    after = up.index("WHERE id") + 1
    assert verdict.client_position(after) == client.index("WHERE id") + 1
    assert verdict.client_position(up.index("pg_catalog") + 1) is None
    assert verdict.client_position(1) == 1


def test_writes_keep_todays_rules(world) -> None:
    gateway, _ = world
    for sql, code in [
        ("INSERT INTO orders SELECT id + 10, id, 1, card_number FROM customers", "masked_data_laundering"),
        ("UPDATE orders SET note = c.ssn FROM customers c WHERE c.id = orders.customer_id", "masked_data_laundering"),
        ("CREATE TABLE t AS SELECT email FROM customers", "masked_data_laundering"),
        ("DELETE FROM customers WHERE card_number LIKE '4%'", "masked_predicate"),
        ("UPDATE customers SET full_name = full_name WHERE id = 1 RETURNING ssn", "masked_returning"),
        ("COPY customers TO STDOUT (FORMAT binary)", "copy_binary_masked"),
    ]:
        async def go(sql=sql):
            try:
                async with Session(gateway, DBA if not sql.startswith("COPY") else AGENT, "main") as session:
                    return session.authorise(sql)
            finally:
                await gateway.close()
        verdict = anyio.run(go)
        assert code in {r.code for r in verdict.reasons}, (sql, verdict.reasons)


# -- the property: generated queries over masked columns, both ways -------------------------------

_COLUMNS = st.sampled_from(["card_number", "ssn", "email", "lower(email)", "substr(card_number, 2, 3)",
                            "coalesce(ssn, 'none')", "full_name || email"])
_LITERALS = st.sampled_from(["'4'", "'4111111111111111'", "'078-05-1120'", "'h'", "'*'", "'['", "'zed'"])
_POSITIONS = st.integers(min_value=1, max_value=6)


@st.composite
def queries(draw) -> str:
    col = draw(_COLUMNS)
    lit = draw(_LITERALS)
    pos = draw(_POSITIONS)
    shape = draw(st.integers(min_value=0, max_value=9))
    if shape == 0:
        return f"SELECT count(CASE WHEN substr({col}, {pos}, 1) = {lit} THEN 1 END) FROM customers"
    if shape == 1:
        return f"SELECT id FROM customers WHERE {col} > {lit} ORDER BY id"
    if shape == 2:
        op = draw(st.sampled_from(["UNION", "INTERSECT", "EXCEPT", "UNION ALL"]))
        return f"SELECT {col} FROM customers {op} SELECT {lit} ORDER BY 1"
    if shape == 3:
        return (f"SELECT c.id, count(*) FROM customers c, generate_series(1, coalesce(ascii(substr({col}, {pos}, "
                "1)), 0) % 7) g GROUP BY c.id ORDER BY c.id")
    if shape == 4:
        return f"SELECT id FROM customers ORDER BY {col} DESC NULLS LAST, id"
    if shape == 5:
        agg = draw(st.sampled_from([f"max({col})", f"min({col})", f"string_agg({col}, ',' ORDER BY {col})",
                                    f"sum(length({col}))", f"count(DISTINCT {col})"]))
        return f"SELECT {agg} FROM customers"
    if shape == 6:
        return f"SELECT id, rank() OVER (ORDER BY {col}, id) FROM customers ORDER BY id"
    if shape == 7:
        return f"SELECT id FROM customers WHERE strpos({col}, {lit}) = {pos % 3} ORDER BY id"
    if shape == 8:
        return f"SELECT DISTINCT {col} IS NULL, length({col}) FROM customers ORDER BY 1, 2"
    other = draw(st.sampled_from(["card_number", "ssn", "email"]))
    return (f"SELECT count(*) FROM customers a JOIN customers b ON substr(a.{other}, {pos}) = "
            f"substr(b.card_number, {pos})")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sql=queries())
def test_property_no_oracle(world, sql: str) -> None:
    assert_no_oracle(world, sql)
