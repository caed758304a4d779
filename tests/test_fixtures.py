"""The database fixtures themselves: a working server, isolated per-test databases, the public cases."""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from support.cases import BUNDLED_CASES, PublicCases, shared_cases_path


def test_fresh_db_is_a_working_empty_database(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) >= 130000  # DROP DATABASE ... WITH (FORCE)
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None and name[0] == conninfo_to_dict(fresh_db)["dbname"]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_fresh_dbs_are_isolated(fresh_db: str, make_db: Callable[[str], str]) -> None:
    other = make_db("CREATE TABLE only_here (x int); INSERT INTO only_here VALUES (42);")
    assert conninfo_to_dict(other)["dbname"] != conninfo_to_dict(fresh_db)["dbname"]
    with psycopg.connect(other) as conn:
        assert conn.execute("SELECT x FROM only_here").fetchall() == [(42,)]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)


def test_databases_are_dropped_after_the_test(pg_admin_dsn: str, make_db: Callable[[str], str]) -> None:
    # The previous tests' databases are gone; only this test's own exist.
    mine = conninfo_to_dict(make_db(""))["dbname"]
    with psycopg.connect(pg_admin_dsn) as admin:
        names = {r[0] for r in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"pgw_test_{os.getpid()}_%"])}
    assert names == {mine}


def test_public_cases_db_is_seeded_and_analyzed(public_cases_db: str) -> None:
    with psycopg.connect(public_cases_db) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM billing.invoices").fetchone() == (1,)
        stats = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'customers'").fetchone()
        assert stats is not None and stats[0] > 0


def test_public_cases_load(public_cases: PublicCases) -> None:
    assert "CREATE TABLE customers" in public_cases.fixture_sql
    assert public_cases.cases
    assert {c.expect for c in public_cases.cases} <= {"deny", "no_leak", "allow"}
    assert all(c.sql.strip() for c in public_cases.cases)


def test_bundled_cases_copy_matches_shared_original() -> None:
    shared = shared_cases_path()
    if shared is None:
        pytest.skip("the shared public_cases.yaml is not present here")
    assert BUNDLED_CASES.read_bytes() == shared.read_bytes(), (
        f"tests/data/public_cases.yaml is stale: copy {shared} over it")
