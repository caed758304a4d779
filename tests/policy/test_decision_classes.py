"""Verdicts for each bypass class, with variants beyond the public examples.

Pure: the fixture schema is an in-memory catalog (support/policies.py). Each
row says what must happen — deny with a given reason code, or allow with a
given mask on a given output — so a regression names the class it reopened.
"""

from __future__ import annotations

import pytest

from pgwarden.policy.verdict import Decision
from support.policies import World

W = World()

DENY = [
    # denied relations, directly and through every way of naming them
    ("SELECT * FROM secrets", "table_denied"),
    ("SELECT api_key FROM public.secrets", "table_denied"),
    ("SELECT * FROM PUBLIC.SECRETS", "table_denied"),
    ('SELECT * FROM U&"secr\\0065ts"', "table_denied"),
    ("SELECT * FROM ONLY secrets", "table_denied"),
    ("TABLE secrets", "table_denied"),
    ("SELECT 1 FROM orders WHERE EXISTS (SELECT 1 FROM secrets)", "table_denied"),
    ("SELECT (SELECT api_key FROM secrets LIMIT 1)", "table_denied"),
    ("WITH s AS (SELECT * FROM secrets) SELECT * FROM s", "table_denied"),
    ("SELECT * FROM orders o JOIN LATERAL (SELECT api_key FROM secrets) s ON true", "table_denied"),
    ("SELECT * FROM secret_view", "table_denied"),
    ("EXPLAIN SELECT * FROM secrets", "table_denied"),
    ("DECLARE c CURSOR FOR SELECT * FROM secrets", "table_denied"),
    ("PREPARE p AS SELECT * FROM secrets", "table_denied"),
    ("SELECT * FROM billing.invoices", "schema_denied"),
    ("SELECT iban FROM billing.invoices i JOIN orders o ON o.id = i.id", "schema_denied"),
    ("COPY billing.invoices TO STDOUT", "schema_denied"),
    # statistics that hold values of masked columns
    ("SELECT most_common_vals FROM pg_stats", "statistics_leak"),
    ("SELECT * FROM pg_catalog.pg_statistic", "statistics_leak"),
    ("SELECT * FROM pg_stats_ext", "statistics_leak"),
    ("SELECT histogram_bounds::text FROM pg_catalog.pg_stats WHERE attname = 'ssn'", "statistics_leak"),
    # credentials and other sessions' statements
    ("SELECT rolpassword FROM pg_authid", "sensitive_catalog"),
    ("SELECT query FROM pg_stat_activity", "sensitive_catalog"),
    ("SELECT * FROM pg_user_mappings", "sensitive_catalog"),
    # writes, hidden or not, under a read-only rule
    ("DELETE FROM orders WHERE id = 1", "statement_class_denied"),
    ("WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) SELECT * FROM d", "statement_class_denied"),
    ("WITH u AS (UPDATE orders SET note = 'x' WHERE id = 1 RETURNING id) SELECT 1", "statement_class_denied"),
    ("WITH i AS (INSERT INTO orders VALUES (3, 1, 1, 'x') RETURNING id) SELECT * FROM i", "statement_class_denied"),
    ("EXPLAIN ANALYZE DELETE FROM orders", "statement_class_denied"),
    ("EXPLAIN (ANALYZE, VERBOSE) UPDATE orders SET note = 'x' WHERE id = 1", "statement_class_denied"),
    ("EXPLAIN (ANALYZE true) INSERT INTO orders VALUES (9, 1, 1, 'x')", "statement_class_denied"),
    ("SELECT 1; DELETE FROM orders WHERE id = 1", "statement_class_denied"),
    ("COMMIT; DELETE FROM orders", "statement_class_denied"),
    ("END; UPDATE orders SET note = 'x' WHERE id = 1", "statement_class_denied"),
    ("COMMIT AND CHAIN; DELETE FROM orders WHERE id = 1", "statement_class_denied"),
    ("ROLLBACK; BEGIN; UPDATE orders SET note = 'x' WHERE id = 2; COMMIT", "statement_class_denied"),
    ("SELECT 1; DROP TABLE orders", "approval_needs_single_statement"),
    ("SELECT 1; TRUNCATE orders", "statement_class_denied"),
    ("MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE", "statement_class_denied"),
    ("SELECT * FROM orders FOR UPDATE", "statement_class_denied"),
    ("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", "statement_class_denied"),
    ("COPY orders FROM STDIN", "statement_class_denied"),
    ("PREPARE p AS DELETE FROM orders WHERE id = 1", "statement_class_denied"),
    ("REFRESH MATERIALIZED VIEW order_totals", "statement_class_denied"),
    ("VACUUM orders", "statement_class_denied"),
    ("GRANT SELECT ON secrets TO public", "statement_class_denied"),
    ("CREATE ROLE x SUPERUSER", "statement_class_denied"),
    # session changes
    ("SET ROLE postgres", "session_change"),
    ("SET LOCAL ROLE postgres", "session_change"),
    ("SET SESSION ROLE postgres", "session_change"),
    ("RESET ROLE", "session_change"),
    ("SET SESSION AUTHORIZATION postgres", "session_change"),
    ("SET SESSION AUTHORIZATION DEFAULT", "session_change"),
    ("SET search_path = billing, public", "session_change"),
    ("SET search_path TO DEFAULT", "session_change"),
    ("set Search_Path to billing", "session_change"),
    ("SET default_transaction_read_only = off", "session_change"),
    ("SET transaction_read_only TO off", "session_change"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "session_change"),
    ("SET statement_timeout = 0", "session_change"),
    ("SET statement_timeout = '1h'", "session_change"),
    ("SET lock_timeout = 0", "session_change"),
    ("SET session_replication_role = replica", "session_change"),
    ("SET row_security = off", "session_change"),
    ("SET app.tenant_id = '42'", "setting_not_allowed"),
    ("SELECT set_config('search_path', 'billing', false)", "configuration_change"),
    ("SELECT pg_catalog.set_config('role', 'postgres', true)", "configuration_change"),
    ("SELECT * FROM set_config('default_transaction_read_only', 'off', false)", "configuration_change"),
    ("ALTER SYSTEM SET work_mem = '1GB'", "configuration_change"),
    ("SELECT pg_reload_conf()", "configuration_change"),
    # code and SQL given as strings
    ("DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$", "dynamic_sql"),
    ("DO LANGUAGE plpgsql $$ BEGIN PERFORM 1; END $$", "dynamic_sql"),
    ("SELECT query_to_xml('SELECT * FROM secrets', true, false, '')", "dynamic_sql"),
    ("SELECT * FROM query_to_xml_and_xmlschema('select 1', true, false, '')", "dynamic_sql"),
    ("SELECT cursor_to_xml('c', 1, true, false, '')", "dynamic_sql"),
    ("SELECT ts_stat('SELECT to_tsvector(api_key) FROM secrets')", "dynamic_sql"),
    ("SELECT table_to_xml('public.customers', true, false, '')", "whole_table_serialiser"),
    ("SELECT database_to_xml(true, false, '')", "whole_table_serialiser"),
    ("SELECT dblink_exec('dbname=postgres', 'DROP TABLE orders')", "network_access"),
    # server files, programs, large objects, signals, replication
    ("SELECT pg_read_file('/etc/passwd')", "server_file_access"),
    ("SELECT PG_CATALOG.PG_READ_BINARY_FILE('/etc/passwd')", "server_file_access"),
    ("SELECT * FROM pg_ls_dir('.')", "server_file_access"),
    ("SELECT length(pg_read_file('postgresql.conf'))", "server_file_access"),
    ("SELECT id FROM orders WHERE note = pg_read_file('/etc/hostname')", "server_file_access"),
    ("SELECT * FROM orders o, LATERAL pg_stat_file(o.note) f", "server_file_access"),
    ("COPY orders TO '/tmp/orders.csv'", "server_file_access"),
    ("COPY orders TO PROGRAM 'curl http://x'", "server_file_access"),
    ("COPY (SELECT 1) TO PROGRAM 'id'", "server_file_access"),
    # COPY options that escape, double or re-encode characters findings are made of inside the values
    # (the detectors read the line, the client reads the values back out of it)
    ("COPY (SELECT note FROM orders) TO STDOUT WITH (DELIMITER '@')", "copy_format_option"),
    ("COPY orders TO STDOUT DELIMITER '-'", "copy_format_option"),
    ("COPY orders TO STDOUT WITH DELIMITER ' ' CSV", "copy_format_option"),
    ("COPY (SELECT note FROM orders) TO STDOUT (FORMAT csv, QUOTE '@')", "copy_format_option"),
    ("COPY (SELECT note FROM orders) TO STDOUT CSV ESCAPE '_'", "copy_format_option"),
    ("COPY (SELECT note FROM orders) TO STDOUT (FORMAT csv, DELIMITER E'\\t')", "copy_format_option"),
    ("COPY (SELECT note FROM orders) TO STDOUT (ENCODING 'SJIS')", "copy_format_option"),
    ("COPY (SELECT note FROM orders) TO STDOUT (ENCODING 'SQL_ASCII')", "copy_format_option"),
    ("SELECT lo_import('/etc/passwd')", "large_object"),
    ("SELECT lo_get(1234)", "large_object"),
    ("SELECT pg_terminate_backend(pid) FROM pg_locks", "backend_signal"),
    ("SELECT pg_cancel_backend(1)", "backend_signal"),
    ("SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", "replication_control"),
    ("SELECT pg_create_logical_replication_slot('s', 'test_decoding')", "replication_control"),
    ("LOAD 'plpgsql'", "server_program"),
    # laundering masked data into tables
    ("CREATE TEMP TABLE t AS SELECT * FROM customers", "masked_data_laundering"),
    ("CREATE TABLE t AS SELECT card_number FROM customers", "masked_data_laundering"),
    ("SELECT card_number INTO TEMP t FROM customers", "masked_data_laundering"),
    ("SELECT * INTO t FROM customers", "masked_data_laundering"),
    ("CREATE MATERIALIZED VIEW m AS SELECT ssn FROM customers", "masked_data_laundering"),
    ("CREATE TEMP TABLE t AS SELECT id FROM customers WHERE card_number LIKE '4%'", "masked_data_laundering"),
    # masked columns as oracles where the masks cannot be placed inside the statement (EXPLAIN shows
    # the plan, not values: its estimates come from the raw column's statistics)
    ("EXPLAIN SELECT id FROM customers WHERE ssn = '078-05-1120'", "masked_predicate"),  # estimates: statistics
    ("EXPLAIN ANALYZE SELECT id FROM customers WHERE card_number LIKE '4%'", "masked_predicate"),
    # masked values into side channels or other columns
    ("SELECT pg_notify('ch', card_number) FROM customers", "masked_data_laundering"),
    ("SELECT set_config('TimeZone', ssn, false) FROM customers", "masked_data_laundering"),
    # functions that are not built in
    ("SELECT my_func(1)", "function_not_allowed"),
    ("SELECT public.my_func(card_number) FROM customers", "function_not_allowed"),
    ("CALL my_proc()", "statement_class_denied"),
    ("SELECT hstore(c)::text FROM customers c", "function_not_allowed"),
    # unparseable or not understood
    ("SELEC 1", "syntax_error"),
    ("SELECT 'unterminated", "syntax_error"),
    ("", "empty"),
    ("EXECUTE never_prepared", "not_understood"),
    ("FETCH ALL FROM never_declared", "not_understood"),
    ("SELECT nosuch.col FROM orders", "not_understood"),
    # DDL needs approval, but not smuggled beside others
    ("CREATE TABLE x (id int); SELECT 1", "approval_needs_single_statement"),
    # UPDATE/DELETE without (real) WHERE by a writer
]


# Reads that used to be refused as oracles (or as unmaskable outputs) now run with the masks inside the
# statement: predicates, ordering, COPY and unknown-width outputs all see masked values (test_no_oracle.py
# proves the results equal those of a pre-masked copy against PostgreSQL).
REWRITTEN = [
    "SELECT id FROM customers WHERE card_number LIKE '4111%'",
    "SELECT id FROM customers WHERE ssn = '078-05-1120'",
    "SELECT id FROM customers ORDER BY email",
    "SELECT count(*) FROM customers GROUP BY ssn",
    "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.ssn < c.ssn)",
    "SELECT o.id FROM orders o JOIN customers c ON c.email = o.note",
    "SELECT id FROM customer_cards WHERE cc LIKE '4%'",
    "SELECT DISTINCT ON (card_number) id FROM customers",
    "SELECT count(*) FILTER (WHERE ssn LIKE '0%') FROM customers",
    "SELECT string_agg(full_name, ',' ORDER BY card_number) FROM customers",
    "SELECT row_number() OVER (PARTITION BY email) FROM customers",
    "SELECT id FROM customers WHERE email IS NULL OR email LIKE 'a%'",
    "SELECT id FROM orders WHERE (SELECT card_number FROM customers LIMIT 1) LIKE '4%'",
    "COPY customers TO STDOUT",
    "COPY customers (card_number) TO STDOUT",
    "COPY (SELECT card_number AS x FROM customers) TO STDOUT WITH (FORMAT csv)",
    "SELECT * FROM unnest((SELECT array_agg(email) FROM customers))",
    "SELECT * FROM json_populate_record(null::customers, (SELECT row_to_json(c) FROM customers c LIMIT 1))",
    "SELECT (c).* FROM customers c",
    "SELECT * FROM unnest(ARRAY[(SELECT c FROM customers c LIMIT 1)])",
]


@pytest.mark.parametrize("sql", REWRITTEN, ids=[q[:60] for q in REWRITTEN])
def test_masked_reads_are_rewritten_not_refused(sql: str) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.ALLOW, (sql, verdict.reasons)
    assert verdict.upstream_text is not None and "\"public\"." in verdict.upstream_text
    assert all(p.masked_upstream for p in verdict.plans)
    assert all(p.scrub_errors for p in verdict.plans)


@pytest.mark.parametrize(("sql", "code"), DENY, ids=[d[0][:60] for d in DENY])
def test_denied_with_reason(sql: str, code: str) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.DENY, (sql, verdict.reasons)
    codes = {r.code for r in verdict.reasons}
    assert code in codes, (sql, codes)
    for reason in verdict.reasons:
        assert reason.message and len(reason.message) > 20  # a sentence, not a bare code


MASKED = [
    # (sql, output position, strategy, whole)
    ("SELECT card_number AS x FROM customers", 0, "keep_last", False),
    ('SELECT "card_number" FROM "customers"', 0, "keep_last", False),
    ("SELECT c.card_number FROM customers AS c", 0, "keep_last", False),
    ("SELECT t.d FROM customers AS t(a, b, c, d)", 0, "keep_last", False),  # column aliases by position
    ("SELECT c::text FROM customers c", 0, "redact", True),
    ("SELECT xmlforest(c.card_number) FROM customers c", 0, "redact", True),
    ("SELECT jsonb_object_agg(id, ssn) FROM customers", 0, "redact", True),
    ("SELECT public.customers.card_number FROM public.customers", 0, "keep_last", False),
    ("SELECT id, full_name, email FROM customers", 2, "hash", False),
    ("SELECT x FROM (SELECT card_number AS x FROM customers) s", 0, "keep_last", False),
    ("SELECT s.y FROM (SELECT x AS y FROM (SELECT card_number AS x FROM customers) a) s", 0, "keep_last", False),
    ("WITH a AS (SELECT ssn AS s FROM customers), b AS (SELECT s AS t FROM a) SELECT t FROM b", 0, "redact", False),
    ("WITH x(e) AS (SELECT email FROM customers) SELECT e FROM x", 0, "hash", False),
    ("SELECT cc FROM customer_cards", 0, "keep_last", False),
    ("SELECT v.cc FROM customer_cards v JOIN orders o ON o.id = v.id", 0, "keep_last", False),
    ("SELECT lower(card_number) FROM customers", 0, "redact", True),
    ("SELECT substr(card_number, 1, 8) || substr(card_number, 9) FROM customers", 0, "redact", True),
    ("SELECT card_number || '' FROM customers", 0, "redact", True),
    ("SELECT card_number::bigint FROM customers", 0, "redact", True),
    ("SELECT CAST(ssn AS varchar(20)) FROM customers", 0, "redact", True),
    ("SELECT reverse(card_number) FROM customers", 0, "redact", True),
    ("SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers", 0, "redact", True),
    ("SELECT encode(convert_to(card_number, 'UTF8'), 'base64') FROM customers", 0, "redact", True),
    ("SELECT format('%s', email) FROM customers", 0, "redact", True),
    ("SELECT concat_ws(',', id, card_number) FROM customers", 0, "redact", True),
    ("SELECT CASE WHEN id = 1 THEN card_number ELSE '' END FROM customers", 0, "redact", True),
    ("SELECT coalesce(NULL, ssn) FROM customers", 0, "redact", True),
    ("SELECT greatest(card_number, '0') FROM customers", 0, "redact", True),
    ("SELECT string_agg(ssn, ',') FROM customers", 0, "redact", True),
    ("SELECT array_agg(card_number)::text FROM customers", 0, "redact", True),
    ("SELECT json_agg(email) FROM customers", 0, "redact", True),
    ("SELECT max(card_number) FROM customers", 0, "redact", True),
    ("SELECT (SELECT card_number FROM customers LIMIT 1)", 0, "redact", True),
    ("SELECT ARRAY(SELECT ssn FROM customers)", 0, "redact", True),
    ("SELECT row_to_json(c) FROM customers c", 0, "redact", True),
    ("SELECT to_jsonb(c.*) FROM customers c", 0, "redact", True),
    ("SELECT c FROM customers c", 0, "redact", True),
    ("SELECT customers FROM customers", 0, "redact", True),
    ("SELECT ROW(c.*)::text FROM customers c", 0, "redact", True),
    ("SELECT (c).card_number FROM customers c", 0, "redact", True),
    ("SELECT json_build_object('k', card_number) FROM customers", 0, "redact", True),
    ("SELECT xmlelement(name x, ssn) FROM customers", 0, "redact", True),
    ("SELECT v FROM customers c CROSS JOIN LATERAL unnest(ARRAY[c.ssn]) AS u(v)", 0, "redact", True),
    ("SELECT * FROM json_to_record((SELECT row_to_json(c) FROM customers c LIMIT 1)) AS t(card_number text)",
     0, "redact", True),
    ("SELECT r.card_number FROM json_populate_record(null::customers, (SELECT row_to_json(c) FROM customers c "
     "LIMIT 1)) r", 0, "redact", True),
    ("SELECT t.v FROM customers c, LATERAL (SELECT c.card_number AS v) t", 0, "keep_last", False),
    ("SELECT note FROM orders UNION ALL SELECT card_number FROM customers", 0, "keep_last", False),
    ("SELECT id, note FROM orders UNION SELECT id, ssn FROM customers", 1, "redact", False),
    ("VALUES ((SELECT card_number FROM customers LIMIT 1))", 0, "redact", True),
    ("WITH RECURSIVE r(v, n) AS (SELECT 'x'::text, 0 UNION ALL SELECT c.card_number, r.n + 1 FROM r, customers c "
     "WHERE r.n < 1) SELECT v FROM r", 0, "redact", True),
    ("SELECT jsonb_path_query(to_jsonb(c), '$.card_number') FROM customers c", 0, "redact", True),
    ("PREPARE p AS SELECT card_number FROM customers", 0, "keep_last", False),
    ("DECLARE c CURSOR FOR SELECT email FROM customers", 0, "hash", False),
]


@pytest.mark.parametrize(("sql", "position", "strategy", "whole"), MASKED, ids=[m[0][:60] for m in MASKED])
def test_masked_output(sql: str, position: int, strategy: str, whole: bool) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.ALLOW, (sql, verdict.reasons)
    masks = {m.position: m for p in verdict.plans for m in p.masks}
    assert position in masks, (sql, masks)
    assert (masks[position].strategy, masks[position].whole) == (strategy, whole)
    assert all(p.scrub_errors for p in verdict.plans if p.masks)


def test_star_masks_exactly_the_masked_positions() -> None:
    verdict = W.decide("SELECT * FROM customers")
    masks = {m.position: (m.column_name, m.strategy, m.origin) for m in verdict.plans[0].masks}
    assert masks == {2: ("email", "hash", (16385, 3)), 3: ("card_number", "keep_last", (16385, 4)),
                     4: ("ssn", "redact", (16385, 5))}


def test_join_using_star_keeps_positions() -> None:
    # USING merges the join column: customers' columns follow it, then orders' others
    verdict = W.decide("SELECT * FROM customers JOIN orders USING (id)")
    positions = sorted(m.position for m in verdict.plans[0].masks)
    assert positions == [2, 3, 4]
    verdict = W.decide("SELECT * FROM orders JOIN customers USING (id)")
    assert sorted(m.position for m in verdict.plans[0].masks) == [5, 6, 7]


ALLOW = [
    "SELECT id, full_name FROM customers ORDER BY id",
    "SELECT c.full_name, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY 1 ORDER BY 1",
    "SELECT note FROM orders WHERE note = '; DROP TABLE orders; --'",
    "SELECT count(*) FROM customers",
    "SELECT * FROM orders",
    "SELECT * FROM order_totals",
    "WITH t AS (SELECT customer_id, amount FROM orders) SELECT customer_id, max(amount) FROM t GROUP BY 1",
    "SELECT id FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE amount > 10)",
    "EXPLAIN SELECT * FROM orders",
    "EXPLAIN DELETE FROM orders WHERE id = 1",
    "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM orders",
    "SELECT now(), current_user, version(), pg_backend_pid()",
    "SELECT current_setting('search_path')",
    "SHOW search_path",
    "BEGIN; SELECT 1; COMMIT",
    "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "SET client_encoding TO 'UTF8'",
    "SET TIME ZONE 'UTC'",
    "SET extra_float_digits = 3",
    "SET LOCAL work_mem = '64MB'",
    "SET DateStyle = ISO",
    "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT * FROM generate_series(1, 3) g(x)",
    "SELECT x FROM unnest(ARRAY[1, 2]) AS u(x)",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT id FROM orders o WHERE o.amount > (SELECT avg(amount) FROM orders)",
    "DEALLOCATE ALL",
    "DISCARD PLANS",
    "SELECT count(*) FILTER (WHERE ssn IS NOT NULL) FROM customers",  # NULL-ness is not masked
    "SELECT count(email), count(DISTINCT card_number) FROM customers",  # counts carry no values
    "SELECT id FROM customers WHERE email IS NULL",
    "RESET ALL",  # pinned settings come from the start-up packet, so RESET ALL returns to them
    "SET search_path TO public",  # the pinned value itself
    "SET statement_timeout = '5s'",  # tighter than pinned
    "SELECT set_config('TimeZone', 'UTC', false)",
    "LISTEN jobs",
    # COPY with its options at their defaults, named or not
    "COPY (SELECT note FROM orders) TO STDOUT (FORMAT csv, DELIMITER ',', QUOTE '\"', ESCAPE '\"', HEADER)",
    "COPY (SELECT note FROM orders) TO STDOUT (DELIMITER E'\\t', NULL 'n/a', ENCODING 'utf-8')",
    "COPY orders TO STDOUT WITH CSV HEADER FORCE QUOTE *",
    "COPY (SELECT note FROM orders) TO STDOUT (ENCODING 'UNICODE')",
]


@pytest.mark.parametrize("sql", ALLOW)
def test_allowed(sql: str) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.ALLOW, (sql, verdict.reasons)
    assert not any(p.masks for p in verdict.plans)


APPROVAL = [
    "CREATE TABLE audit_log (id int)",
    "ALTER TABLE orders ADD COLUMN shipped boolean",
    "DROP TABLE orders",
    "CREATE INDEX ON orders (customer_id)",
    "CREATE VIEW v AS SELECT id FROM orders",
    "COMMENT ON TABLE orders IS 'x'",
]


@pytest.mark.parametrize("sql", APPROVAL)
def test_ddl_needs_approval(sql: str) -> None:
    verdict = W.decide(sql)
    assert verdict.decision is Decision.NEEDS_APPROVAL, (sql, verdict.reasons)
    assert verdict.approval is not None and verdict.approval.approvers == ("dba",)


def test_unknown_principal_is_denied() -> None:
    verdict = W.decide("SELECT 1", subject="mallory", groups=())
    assert verdict.decision is Decision.DENY
    assert verdict.reasons[0].code == "no_rule"


def test_errors_are_withheld_when_a_masked_column_is_read_anywhere() -> None:
    verdict = W.decide("SELECT count(*) FROM (SELECT ssn::int AS x FROM customers) s")
    assert verdict.decision is Decision.ALLOW and verdict.plans[0].scrub_errors
    assert not W.decide("SELECT count(*) FROM (SELECT id::int AS x FROM customers) s").plans[0].scrub_errors


def test_dba_rule_writes_but_still_masked_and_no_laundering() -> None:
    assert W.decide("DELETE FROM orders WHERE id = 1", "alice", ["dba"]).decision is Decision.ALLOW
    assert W.decide("DELETE FROM orders", "alice", ["dba"]).reasons[0].code == "missing_where"
    assert W.decide("UPDATE orders SET note = 'x' WHERE true", "alice", ["dba"]).reasons[0].code == "missing_where"
    v = W.decide("UPDATE orders SET note = c.card_number FROM customers c WHERE c.id = orders.customer_id",
                 "alice", ["dba"])
    assert "masked_data_laundering" in {r.code for r in v.reasons}
    v = W.decide("INSERT INTO orders SELECT id, id, 1, ssn FROM customers", "alice", ["dba"])
    assert "masked_data_laundering" in {r.code for r in v.reasons}
    v = W.decide("ALTER TABLE customers ADD COLUMN c2 text GENERATED ALWAYS AS (card_number) STORED",
                 "alice", ["dba"])
    assert "masked_data_laundering" in {r.code for r in v.reasons}
    v = W.decide("ALTER TABLE customers ALTER COLUMN full_name TYPE text USING (full_name || ssn)",
                 "alice", ["dba"])
    assert "masked_data_laundering" in {r.code for r in v.reasons}
    assert W.decide("ALTER TABLE customers ADD COLUMN c3 text", "alice", ["dba"]).decision is Decision.ALLOW
    # a DML target cannot be wrapped: its masked columns stay out of RETURNING and of its predicates
    v = W.decide("UPDATE customers SET full_name = 'x' WHERE id = 1 RETURNING card_number", "alice", ["dba"])
    assert v.reasons[0].code == "masked_returning"
    v = W.decide("UPDATE customers SET full_name = 'x' WHERE id = 1 RETURNING lower(email)", "alice", ["dba"])
    assert v.reasons[0].code == "masked_returning"
    v = W.decide("DELETE FROM customers WHERE card_number LIKE '4%'", "alice", ["dba"])
    assert "masked_predicate" in {r.code for r in v.reasons}
    v = W.decide("UPDATE customers SET full_name = 'x' WHERE ssn = '078-05-1120'", "alice", ["dba"])
    assert "masked_predicate" in {r.code for r in v.reasons}
    # ... while another table's masked columns in FROM are wrapped, so filtering on them is harmless
    v = W.decide("UPDATE orders SET note = 'x' FROM customers c WHERE c.id = orders.customer_id "
                 "AND c.card_number LIKE '4%'", "alice", ["dba"])
    assert v.decision is Decision.ALLOW and v.upstream_text is not None, v.reasons
    assert W.decide("UPDATE customers SET full_name = 'x' WHERE id = 1 RETURNING id", "alice",
                    ["dba"]).decision is Decision.ALLOW


def test_verdict_cache_is_exact_text_and_per_principal() -> None:
    w = World()
    first = w.decide("SELECT id FROM orders")
    again = w.decide("SELECT id FROM orders")
    assert again is first
    assert w.decide("SELECT id FROM orders ").decision is Decision.ALLOW
    assert w.decide("SELECT id FROM orders", "mallory", ()).decision is Decision.DENY
    # constants matter: same fingerprint, different verdicts
    assert w.decide("SELECT current_setting('work_mem')").decision is Decision.ALLOW
    assert w.decide("SELECT set_config('role', 'postgres', false)").decision is Decision.DENY
    assert w.decide("SELECT set_config('work_mem', '1MB', false)").decision is Decision.ALLOW


def test_shape_cache_serves_new_literals_but_never_literal_dependent_verdicts() -> None:
    w = World()
    first = w.decide("SELECT id, note FROM orders WHERE id = 1")
    assert w.decide("SELECT id, note FROM orders WHERE id = 2") is first  # same shape
    # a text with masks spliced in is shared too, its splices placed in the new text (they move with the
    # literals): see test_masked_shape_cache.py
    masked = w.decide("SELECT id, card_number FROM customers WHERE id = 1")
    other = w.decide("SELECT id, card_number FROM customers WHERE id = 22")
    assert other is not masked and other.upstream_text.endswith("WHERE id = 22")
    assert other.plans is masked.plans
    # verdicts that looked at a literal are never reused for other literals
    assert w.decide("SELECT set_config('TimeZone', 'UTC', false)").decision is Decision.ALLOW
    assert w.decide("SELECT set_config('role', 'postgres', false)").decision is Decision.DENY
    assert w.decide("SET search_path TO public").decision is Decision.ALLOW
    assert w.decide("SET search_path TO billing").decision is Decision.DENY
    assert w.decide("SET statement_timeout = '5s'").decision is Decision.ALLOW
    assert w.decide("SET statement_timeout = '0'").decision is Decision.DENY
    dba = World()
    assert dba.decide("DELETE FROM orders WHERE 1 = 2", "d", ["dba"]).reasons[0].code == "missing_where"
    assert dba.decide("DELETE FROM orders WHERE id = 2", "d", ["dba"]).decision is Decision.ALLOW
    assert dba.decide("DELETE FROM orders WHERE 1 = 1", "d", ["dba"]).reasons[0].code == "missing_where"
    # a client's own $n parameters are not literals: exact text only
    assert dba.decide("DELETE FROM orders WHERE $1 = $2", "d", ["dba"]).reasons[0].code == "missing_where"
    # ORDER BY positions are part of the shape
    assert w.decide("SELECT full_name, email FROM customers ORDER BY 1").decision is Decision.ALLOW
    assert w.decide("SELECT full_name, email FROM customers ORDER BY 2").decision is Decision.ALLOW  # masked inside


def test_discard_all_is_refused_only_where_it_would_drop_the_assumed_role() -> None:
    from pgwarden.policy.catalog import builtin_catalog
    from pgwarden.policy.decision import Decider
    from pgwarden.policy.language import PolicyDocument, Rule, UpstreamLogin

    def decide(**rule):
        policy = PolicyDocument(rules=[Rule(name="r", target="main", **rule)])
        return Decider(policy, version="v").decide("DISCARD ALL", subject="a", groups=(), target="main",
                                                    catalog=builtin_catalog())

    widened = decide(upstream_role="agent_ro")  # the login is wider than the role SET on top of it
    assert widened.decision is Decision.DENY and widened.reasons[0].code == "session_change"
    assert "upstream_login" in widened.reasons[0].message
    assert decide(upstream_role="agent_ro", upstream_login=UpstreamLogin(user="agent_ro")).allowed
    assert decide(upstream_login=UpstreamLogin(user="agent_ro")).allowed
    assert decide().allowed  # no role assumed: nothing to drop
