"""The analysis's notion of "read" agrees with PostgreSQL's own.

Every statement the analysis classifies as read-only must run inside a
``READ ONLY`` transaction without PostgreSQL refusing it for writing
(SQLSTATE 25006), and every statement it classifies as writing must be refused
there — so the read-only pin and the classification back each other up.
Statements come from the policy tests, the public cases and the psql corpus,
run against the public cases' fixture database.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import yaml

from pgwarden.engine.catalog_loader import load_catalog
from pgwarden.policy.analysis import StatementClass
from pgwarden.policy.sql import analyse
from support.cases import load_public_cases

READS = [
    "SELECT id, full_name FROM customers ORDER BY id",
    "SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id",
    "WITH t AS (SELECT customer_id, amount FROM orders) SELECT customer_id, max(amount) FROM t GROUP BY 1",
    "EXPLAIN DELETE FROM orders WHERE id = 1",
    "EXPLAIN ANALYZE SELECT * FROM orders",
    "SELECT row_to_json(c) FROM customers c",
    "TABLE orders",
    "VALUES (1), (2)",
    "SELECT * FROM generate_series(1, 3)",
    "SHOW search_path",
    "SELECT pg_advisory_xact_lock(42)",
]
WRITES = [
    "DELETE FROM orders WHERE id = 1",
    "UPDATE orders SET note = 'x' WHERE id = 1",
    "INSERT INTO orders VALUES (9, 1, 1, 'x')",
    "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) SELECT count(*) FROM d",
    "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT nextval('orders_seq')",
    "SELECT setval('orders_seq', 5)",
    "CREATE TABLE t (id int)",
    "CREATE TEMP TABLE t2 AS SELECT 1",
    "SELECT 1 INTO t3",
    "TRUNCATE orders",
    "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN UPDATE SET note = 'm'",
    "COMMENT ON TABLE orders IS 'x'",
    "CREATE INDEX ON orders (note)",
]

# PostgreSQL runs these in a READ ONLY transaction, yet they block others or change
# server state: only policy stops them, so the analysis must not call them reads.
POLICY_ONLY = [
    "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
    "ANALYZE orders",
    "CHECKPOINT",
]

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "psql_describe.yaml"


@pytest.fixture(scope="module")
def db(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + "CREATE SEQUENCE orders_seq;")


def _read_only_outcome(dsn: str, sql: str) -> str | None:
    """SQLSTATE PostgreSQL raises for ``sql`` in a READ ONLY transaction (None: it ran)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN READ ONLY")
        try:
            conn.execute(sql.encode())
        except psycopg.Error as exc:
            return exc.diag.sqlstate or "?"
        finally:
            conn.rollback()
    return None


_CATALOGS: dict = {}


def _classes(dsn: str, sql: str) -> frozenset[StatementClass]:
    if dsn not in _CATALOGS:
        with psycopg.connect(dsn) as conn:
            _CATALOGS[dsn] = load_catalog(conn, search_path=["public"])
    analysis = analyse(sql, _CATALOGS[dsn])
    assert analysis.ok and not any(st.unknown for st in analysis.statements), (sql, analysis)
    return frozenset().union(*(st.classes for st in analysis.statements))


def _writing(classes: frozenset[StatementClass]) -> bool:
    return bool(classes - {StatementClass.READ, StatementClass.SESSION, StatementClass.TRANSACTION})


@pytest.mark.parametrize("sql", READS)
def test_reads_run_in_read_only_transactions(db: str, sql: str) -> None:
    assert not _writing(_classes(db, sql)), sql
    assert _read_only_outcome(db, sql) != "25006", sql


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_by_read_only_transactions(db: str, sql: str) -> None:
    assert _writing(_classes(db, sql)), sql
    assert _read_only_outcome(db, sql) == "25006", sql


@pytest.mark.parametrize("sql", POLICY_ONLY)
def test_what_read_only_transactions_allow_but_policy_must_stop(db: str, sql: str) -> None:
    assert _read_only_outcome(db, sql) is None, sql  # the pin alone would not stop it
    assert _writing(_classes(db, sql)), sql


def test_psql_describe_queries_are_reads_postgres_agrees_with(db: str) -> None:
    statements = yaml.safe_load(CORPUS.read_text())["statements"]
    ran = 0
    for sql in statements:
        if _writing(_classes(db, sql)):
            continue
        outcome = _read_only_outcome(db, sql)
        assert outcome != "25006", sql
        ran += outcome is None
    assert ran > 150  # most of psql's describe queries run as they are
