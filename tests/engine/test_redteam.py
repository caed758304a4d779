"""Red-team cases against the engine session, on a schema and policy of their own.

Each test states the SECURE behaviour. The 18 breaches a red-team pass found are fixed and their
tests pass (non-rewritten statements computing on masked columns: ``masked_not_rewritten``;
statistics of partitions, children, indexes and materialised views; ``attmissingval``; mask text
independent of DateStyle and kin). Attacks the engine stopped from the start are kept so each class
is documented. Known false denials are ``xfail(strict=True, reason="FALSE DENIAL: …")``.

Classes: statements that are not rewritten (PREPARE/EXECUTE, DECLARE/FETCH/MOVE, EXPLAIN ANALYZE)
and keep output masks only; planner statistics; catalog columns; session settings that change a
mask's text form; the mask rewrite itself; denied objects; pinned session state.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session, StatementRefused, UpstreamError
from pgwarden.errors import PgwardenError

REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})

SETUP_SQL = r"""
CREATE TABLE patients(id int PRIMARY KEY, name text, diagnosis text, national_id text, phone text,
                      email text, born date);
CREATE TABLE payments(id int PRIMARY KEY, patient_id int REFERENCES patients, iban text, amount numeric);
INSERT INTO patients VALUES
 (1, 'Alice', 'DIAGSENTINEL flu', 'NID-SENTINEL-998877', '+44 7700 900123', 'alice.sentinel@clinic.example',
  '1980-05-17'),
 (2, 'Bob', 'cold', 'NID-222333', '+44 7700 900456', 'bob@clinic.example', '1975-01-02');
INSERT INTO payments VALUES (1, 1, 'GB82WEST12345698765432', 100), (2, 2, 'DE89370400440532013000', 50);
CREATE VIEW patient_view AS SELECT p.id, p.name, p.national_id, pay.iban
  FROM patients p JOIN payments pay ON pay.patient_id = p.id;
CREATE TABLE visits(id int, patient_id int, ssn text, visited date) PARTITION BY RANGE (visited);
CREATE TABLE visits_2024 PARTITION OF visits FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO visits VALUES (1, 1, 'SSN-SENTINEL-4455', '2024-03-03'), (2, 2, 'SSN-SENTINEL-7788', '2024-04-04'),
  (3, 2, 'SSN-SENTINEL-9900', '2024-05-05');
CREATE TABLE base_t(id int, bsecret text);
CREATE TABLE child_t(extra text) INHERITS (base_t);
INSERT INTO child_t VALUES (1, 'INHSENTINEL1', 'e'), (2, 'INHSENTINEL2', 'e'), (3, 'INHSENTINEL3', 'e');
CREATE MATERIALIZED VIEW mv AS SELECT id, national_id FROM patients;
CREATE INDEX patients_lower_nid ON patients (lower(national_id));
CREATE TABLE staff(id int, dob date);
INSERT INTO staff VALUES (1, '1980-05-17');
CREATE SCHEMA vault;
CREATE TABLE vault.keys(id serial, secret text);
INSERT INTO vault.keys(secret) VALUES ('VAULTSENTINEL');
CREATE TABLE denied_t(id serial PRIMARY KEY, secret text DEFAULT 'DENIEDDEFAULT');
INSERT INTO denied_t(secret) VALUES ('DENIEDSENTINEL1'), ('DENIEDSENTINEL2'), ('DENIEDSENTINEL3');
CREATE INDEX denied_lower ON denied_t (lower(secret));
-- fast defaults: the value of every existing row is kept in pg_attribute.attmissingval
ALTER TABLE denied_t ADD COLUMN m text DEFAULT 'DENIEDMISSINGSENTINEL';
ALTER TABLE patients ADD COLUMN insurer text DEFAULT 'INSMISSINGSENTINEL';
ANALYZE;
"""

POLICY = """
version: 1
targets:
  main:
    dsn: DSN
    search_path: [public]
rules:
  - name: ai-agents
    match: {groups: [ai-agents]}
    target: main
    statements: {allow: [read]}
    schemas: {allow: [public], deny: [vault]}
    tables: {allow: ["*"], deny: [public.denied_t]}
masking:
  columns:
    - {column: public.patients.national_id, strategy: redact}
    - {column: public.patients.phone, strategy: keep_last, keep: 2}
    - {column: public.patients.email, strategy: email_domain}
    - {column: public.patients.diagnosis, strategy: hash, key: {env: PGWARDEN_MASK_KEY}}
    - {column: public.patients.born, strategy: "null"}
    - {column: public.patients.insurer, strategy: redact}
    - {column: public.payments.iban, strategy: keep_last, keep: 4, unless_groups: [auditors]}
    - {column: public.visits.ssn, strategy: redact}
    - {column: public.base_t.bsecret, strategy: redact}
    - {column: public.staff.dob, strategy: keep_last, keep: 4}
"""

SENTINELS = ("SENTINEL", "998877", "900123", "12345698765432")


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", "redteam-mask-key-0123456789")


@pytest.fixture(scope="module")
def db(make_db_module) -> str:
    return make_db_module(SETUP_SQL)


def make_gateway(dsn: str) -> Gateway:
    gateway = Gateway(parse_config(POLICY.replace("DSN", dsn), "test", base_dir=REPO / "examples"))
    anyio.run(gateway.refresh_catalog, "main")
    return gateway


def run(dsn: str, *sqls: str, timed: bool = False) -> list:
    """Run ``sqls`` in one session; each outcome is a RunResult, StatementRefused or UpstreamError."""
    import os
    os.environ.setdefault("PGWARDEN_MASK_KEY", "redteam-mask-key-0123456789")
    gateway = make_gateway(dsn)

    async def go():
        out = []
        try:
            async with Session(gateway, AGENT, "main") as session:
                for sql in sqls:
                    started = time.perf_counter()
                    try:
                        outcome = await session.run(sql)
                    except (StatementRefused, UpstreamError, PgwardenError) as exc:
                        outcome = exc
                    out.append((outcome, time.perf_counter() - started) if timed else outcome)
        finally:
            await gateway.close()
        return out
    return anyio.run(go)


def rows(outcome) -> list:
    assert not isinstance(outcome, Exception), outcome
    return outcome.results[-1].rows


def text_of(outcome) -> str:
    if isinstance(outcome, Exception):
        return str(outcome)
    return repr([(r.status, r.columns, r.rows) for r in outcome.results]) + repr(outcome.notices)


def refused(outcome) -> bool:
    return isinstance(outcome, StatementRefused)


def assert_no_sentinel(outcome) -> None:
    text = text_of(outcome)
    assert not any(s in text for s in SENTINELS), text


def prepared(dsn: str, query: str) -> object:
    """PREPARE ``query`` and EXECUTE it: the EXECUTE's outcome, or the PREPARE's refusal."""
    prep, execute = run(dsn, f"PREPARE q AS {query}", "EXECUTE q")
    return prep if refused(prep) else execute


# ---------------------------------------------------------------------------------------------------
# Class: statements the rewrite does not touch (PREPARE/EXECUTE, DECLARE/FETCH, EXPLAIN ANALYZE).
# They read raw values upstream and rely on output masks plus predicate denials; anything that turns
# a raw masked value into a row count, a plan row estimate, an error-or-not or a delay is an oracle.
# ---------------------------------------------------------------------------------------------------

def test_explain_analyze_rows_reveal_masked_character(db: str) -> None:
    [out] = run(db, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT id, (SELECT count(*) FROM "
                    "generate_series(1, ascii(substr(national_id, 5, 1)))) FROM patients WHERE id = 1")
    # 'S' (83), the 5th character of NID-SENTINEL-998877
    assert refused(out) or "rows=83" not in text_of(out)


def test_prepared_count_over_srf_in_from_reveals_masked_character(db: str) -> None:
    out = prepared(db, "SELECT count(*) FROM patients p, generate_series(1, ascii(substr(p.national_id, 5, 1))) "
                       "WHERE p.id = 1")
    assert refused(out) or rows(out) != [("83",)]


def test_prepared_scalar_subquery_srf_reveals_masked_character(db: str) -> None:
    out = prepared(db, "SELECT id, (SELECT count(*) FROM generate_series(1, ascii(substr(national_id, 5, 1)))) "
                       "AS n FROM patients WHERE id = 1")
    assert refused(out) or rows(out) != [("1", "83")]


def test_prepared_select_list_srf_row_count(db: str) -> None:
    out = prepared(db, "SELECT id, generate_series(1, ascii(substr(national_id, 5, 1))) FROM patients WHERE id = 1")
    assert refused(out) or out.results[-1].row_count != 83


def test_cursor_move_row_count(db: str) -> None:
    outs = run(db, "BEGIN", "DECLARE c CURSOR FOR SELECT id, generate_series(1, ascii(substr(national_id, 5, 1))) "
                            "FROM patients WHERE id = 1", "MOVE ALL IN c", "ROLLBACK")
    assert refused(outs[1]) or "83" not in outs[2].results[-1].status


def test_prepared_union_dedup_is_an_equality_oracle(db: str) -> None:
    hit = prepared(db, "SELECT substr(national_id, 5, 1) FROM patients WHERE id = 1 UNION SELECT 'S'")
    miss = prepared(db, "SELECT substr(national_id, 5, 1) FROM patients WHERE id = 1 UNION SELECT 'R'")
    assert refused(hit) or len(rows(hit)) == len(rows(miss))


def test_prepared_count_distinct_masked(db: str) -> None:
    out = prepared(db, "SELECT count(DISTINCT national_id) FROM patients")
    assert refused(out) or rows(out) != [("2",)]


def test_prepared_division_by_zero_oracle(db: str) -> None:
    hit = prepared(db, "SELECT id, 1 / (ascii(substr(national_id, 5, 1)) - 83) FROM patients WHERE id = 1")
    miss = prepared(db, "SELECT id, 1 / (ascii(substr(national_id, 5, 1)) - 84) FROM patients WHERE id = 1")
    assert refused(hit) or isinstance(hit, UpstreamError) == isinstance(miss, UpstreamError)


def test_cursor_division_by_zero_oracle(db: str) -> None:
    def attempt(code: int):
        return run(db, "BEGIN", "DECLARE c CURSOR FOR SELECT id, 1 / (ascii(substr(national_id, 5, 1)) - "
                                f"{code}) FROM patients WHERE id = 1", "FETCH c", "ROLLBACK")
    hit, miss = attempt(83), attempt(84)
    assert refused(hit[1]) or isinstance(hit[2], UpstreamError) == isinstance(miss[2], UpstreamError)


def test_prepared_sleep_timing_oracle(db: str) -> None:
    outs = run(db, "PREPARE s AS SELECT id, CASE WHEN substr(national_id, 5, 1) = 'S' THEN pg_sleep(1) END "
                   "FROM patients WHERE id = 1", "EXECUTE s",
               "PREPARE r AS SELECT id, CASE WHEN substr(national_id, 5, 1) = 'R' THEN pg_sleep(1) END "
               "FROM patients WHERE id = 1", "EXECUTE r", timed=True)
    (prep, _), (_, t_hit), _, (_, t_miss) = outs
    assert refused(prep) or abs(t_hit - t_miss) < 0.5


def test_prepared_masked_predicate_is_refused(db: str) -> None:
    [out] = run(db, "PREPARE p AS SELECT id FROM patients WHERE national_id LIKE 'NID-S%'")
    assert refused(out) and "masked_predicate" in {r.code for r in out.verdict.reasons}


def test_explain_masked_predicate_is_refused(db: str) -> None:
    [out] = run(db, "EXPLAIN ANALYZE SELECT id FROM patients WHERE national_id LIKE 'NID-S%'")
    assert refused(out)


def test_prepared_outputs_are_masked(db: str) -> None:
    out = prepared(db, "SELECT row_to_json(p), national_id, phone FROM patients p WHERE id = 1")
    assert_no_sentinel(out)


def test_cursor_to_xml_is_refused(db: str) -> None:
    outs = run(db, "BEGIN", "DECLARE c CURSOR FOR SELECT national_id FROM patients",
               "SELECT cursor_to_xml('c', 10, false, false, '')", "ROLLBACK")
    assert refused(outs[2])


# ---------------------------------------------------------------------------------------------------
# Class: planner statistics. pg_stats of a masked column is refused, but the mask is looked up on the
# exact relation and column the row describes: partitions, inheritance children, materialised views
# and expression indexes carry the same values under other names.
# ---------------------------------------------------------------------------------------------------

def _stats(db: str, table: str, column: str | None = None):
    where = f"schemaname = 'public' AND tablename = '{table}'" + (f" AND attname = '{column}'" if column else "")
    [out] = run(db, f"SELECT attname, most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE {where}")
    return out


def test_stats_of_partition_of_masked_parent(db: str) -> None:
    assert_no_sentinel(_stats(db, "visits_2024", "ssn"))


def test_stats_of_inheritance_child(db: str) -> None:
    assert_no_sentinel(_stats(db, "child_t", "bsecret"))


def test_stats_of_materialised_view(db: str) -> None:
    assert_no_sentinel(_stats(db, "mv", "national_id"))


def test_stats_of_expression_index_on_masked_column(db: str) -> None:
    assert_no_sentinel(_stats(db, "patients_lower_nid"))


def test_stats_of_expression_index_on_denied_table(db: str) -> None:
    out = _stats(db, "denied_lower")
    assert refused(out) or "sentinel" not in text_of(out).lower()


def test_stats_of_masked_table_are_refused(db: str) -> None:
    assert refused(_stats(db, "patients", "national_id"))
    assert refused(_stats(db, "visits", "ssn"))


def test_stats_of_permitted_column_are_allowed(db: str) -> None:
    assert not refused(_stats(db, "patients", "name"))


# ---------------------------------------------------------------------------------------------------
# Class: catalog columns holding data values.
# ---------------------------------------------------------------------------------------------------

def test_attmissingval_of_denied_table(db: str) -> None:
    [out] = run(db, "SELECT attmissingval::text FROM pg_attribute WHERE attrelid = 'denied_t'::regclass "
                    "AND attname = 'm'")
    assert refused(out) or "SENTINEL" not in text_of(out)


def test_attmissingval_of_masked_column(db: str) -> None:
    [out] = run(db, "SELECT attname, attmissingval::text FROM pg_attribute WHERE atthasmissing")
    assert refused(out) or "INSMISSINGSENTINEL" not in text_of(out)


def test_denied_default_and_sequence_are_refused(db: str) -> None:
    outs = run(db, "SELECT column_default FROM information_schema.columns WHERE table_name = 'denied_t'",
               "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef",
               "SELECT pg_sequence_last_value('denied_t_id_seq')", "SELECT last_value FROM denied_t_id_seq",
               "SELECT pg_sequence_last_value('vault.keys_id_seq'::regclass)")
    assert all(refused(o) for o in outs)


# ---------------------------------------------------------------------------------------------------
# Class: session settings that change a mask's input. keep_last over a non-text type masks the
# type's text form, and DateStyle (a "harmless" setting) moves which digits are kept.
# ---------------------------------------------------------------------------------------------------

def test_datestyle_moves_keep_last_window(db: str) -> None:
    iso, _, german = run(db, "SELECT dob FROM staff", "SET DateStyle = 'German'", "SELECT dob FROM staff")
    assert refused(german) or rows(iso) == rows(german)


# ---------------------------------------------------------------------------------------------------
# Class: the mask rewrite (reads that are rewritten): these hold.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM patients WHERE national_id LIKE 'NID-S%'",
    "SELECT count(*) FROM patients WHERE diagnosis LIKE 'DIAG%'",
    "SELECT id, 1 / (ascii(substr(national_id, 5, 1)) - 83) FROM patients",
    "WITH patients AS (SELECT * FROM patients) SELECT national_id FROM patients",
    "SELECT (WITH patients AS (SELECT 'x' AS national_id) SELECT 1) AS a, national_id FROM patients",
    "SELECT count(*) FROM patients p, generate_series(1, ascii(substr(p.national_id, 5, 1)))",
    "SELECT national_id FROM U&\"p\\0061tients\"",
    "SELECT (jsonb_populate_record(NULL::patients, to_jsonb(p))).national_id FROM patients p",
    "SELECT ssn FROM visits_2024", "SELECT bsecret FROM child_t", "SELECT * FROM mv", "TABLE patient_view",
    "COPY (SELECT national_id FROM patients WHERE national_id LIKE 'NID-S%') TO STDOUT",
    "COPY patients (national_id, phone) TO STDOUT",
])
def test_rewritten_reads_do_not_leak(db: str, sql: str) -> None:
    [out] = run(db, sql)
    assert_no_sentinel(out)
    if "count(*)" in sql and "LIKE" in sql and not isinstance(out, Exception):
        assert rows(out) == [("0",)]


@pytest.mark.xfail(strict=True, reason="FALSE DENIAL: a schema-qualified column reference "
                   "(public.patients.id) fails upstream once patients is replaced by a derived table")
def test_schema_qualified_column_reference(db: str) -> None:
    [out] = run(db, "SELECT public.patients.id FROM public.patients ORDER BY 1")
    assert rows(out) == [("1",), ("2",)]


@pytest.mark.xfail(strict=True, reason="FALSE DENIAL: TABLESAMPLE on a masked table is a syntax error upstream "
                   "(a derived table cannot be sampled)")
def test_tablesample_on_masked_table(db: str) -> None:
    [out] = run(db, "SELECT id FROM patients TABLESAMPLE BERNOULLI (100) ORDER BY 1")
    assert rows(out) == [("1",), ("2",)]


# ---------------------------------------------------------------------------------------------------
# Class: denied objects and pinned session state: these hold.
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM denied_t", "SELECT * FROM vault.keys", "SELECT secret FROM public.denied_t",
    "SELECT obj_description('denied_t'::regclass)",
    "SET \"Search_Path\" TO vault", "SET SCHEMA 'vault'", "SELECT set_config('SEARCH_PATH', 'vault', false)",
    "SET transaction_read_only = off", "BEGIN READ WRITE", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "RESET default_transaction_read_only", "SET application_name = 'x'", "SELECT pg_advisory_lock(1)",
    "NOTIFY foo", "SELECT pg_stat_reset()", "SELECT query FROM pg_stat_activity",
    "SELECT national_id INTO TEMP t FROM patients", "COMMIT; DELETE FROM payments WHERE id = 1",
])
def test_denied_and_pinned(db: str, sql: str) -> None:
    [out] = run(db, sql)
    assert refused(out)
