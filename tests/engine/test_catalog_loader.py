"""The live catalog loader against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from pgwarden.engine.catalog_loader import aload_catalog, load_catalog
from pgwarden.policy.catalog import Catalog, Column

SCHEMA_SQL = """
CREATE SCHEMA app;
CREATE TABLE customers (id int PRIMARY KEY, name varchar(20), balance numeric(10, 2), tags text[]);
CREATE TABLE app.customers (id bigint, region text);
CREATE TABLE app.only_app (x int);
CREATE VIEW customer_names AS SELECT id, name FROM customers WHERE id > 0;
CREATE VIEW app.regions AS SELECT DISTINCT region FROM app.customers;
CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM customers;
CREATE TABLE events (at date, what text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE FOREIGN DATA WRAPPER dummy_fdw;
CREATE SERVER dummy_server FOREIGN DATA WRAPPER dummy_fdw;
CREATE FOREIGN TABLE remote_things (a int) SERVER dummy_server;
CREATE SEQUENCE counter;
CREATE TYPE mood AS ENUM ('ok', 'meh');
CREATE TABLE feelings (m mood);
CREATE TABLE pg_class (shadow int);  -- a user table with a system name: pg_catalog still wins
CREATE FUNCTION add_one(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1';
CREATE FUNCTION app.add_one(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1';
CREATE FUNCTION app.app_only() RETURNS int LANGUAGE sql AS 'SELECT 1';
"""


@pytest.fixture
def db(make_db: Callable[[str], str]) -> str:
    return make_db(SCHEMA_SQL)


def _load(dsn: str, search_path: tuple[str, ...] = ("public",)) -> Catalog:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return load_catalog(conn, search_path=search_path)


def test_tables_with_columns_and_types(db: str) -> None:
    cat = _load(db)
    assert cat.complete
    rel = cat.relations[("public", "customers")]
    assert rel.kind == "r"
    assert rel.columns == (
        Column("id", 1, "integer"),
        Column("name", 2, "character varying(20)"),
        Column("balance", 3, "numeric(10,2)"),
        Column("tags", 4, "text[]"),
    )
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT 'customers'::regclass::oid::int8").fetchone() == (rel.oid,)
    # A user type outside pg_catalog is always schema-qualified, whatever the session's search_path.
    assert cat.relations[("public", "feelings")].columns == (Column("m", 1, "public.mood"),)


def test_relation_kinds_and_what_is_left_out(db: str) -> None:
    cat = _load(db)
    kinds = {name: cat.relations[("public", name)].kind
             for name in ("customers", "customer_names", "totals", "events", "events_2024", "remote_things")}
    assert kinds == {"customers": "r", "customer_names": "v", "totals": "m", "events": "p",
                     "events_2024": "r", "remote_things": "f"}
    names = {name for (_, name) in cat.relations}
    # sequences are loaded (their owning table's deny lists hold for them, see RELATIONS_SQL)
    assert cat.relations[("public", "counter")].kind == "S"
    assert "customers_pkey" not in names  # index
    assert not any(schema == "pg_toast" or schema.startswith("pg_temp_") for schema, _ in cat.relations)


def test_views_carry_fully_qualified_definitions(db: str) -> None:
    # The loading session's own search_path must not leak into view_sql: the analyser resolves the text
    # with its pinned path, so anything outside pg_catalog has to be qualified.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET search_path = app, public")
        cat = load_catalog(conn, search_path=["public"])
        assert conn.execute("SHOW search_path").fetchone() == ("app, public",)
    view = cat.relations[("public", "customer_names")]
    assert view.is_view
    assert view.view_sql is not None and "FROM public.customers" in view.view_sql
    assert [c.name for c in view.columns] == ["id", "name"]
    regions = cat.relations[("app", "regions")]
    assert regions.view_sql is not None and "FROM app.customers" in regions.view_sql
    totals = cat.relations[("public", "totals")]
    assert totals.is_view and totals.view_sql is not None and "public.customers" in totals.view_sql
    # System views are known by their columns only; their definitions are not loaded.
    pg_stats = cat.relations[("pg_catalog", "pg_stats")]
    assert pg_stats.kind == "v" and pg_stats.view_sql is None
    assert pg_stats.column("most_common_vals") is not None


def test_search_path_resolution(db: str) -> None:
    public_first = _load(db, ("public", "app"))
    assert public_first.search_path == ("public", "app")
    assert public_first.resolve_relation(None, "customers").schema == "public"  # type: ignore[union-attr]
    assert public_first.resolve_relation(None, "only_app").schema == "app"  # type: ignore[union-attr]

    app_first = _load(db, ("app", "public"))
    assert app_first.resolve_relation(None, "customers").schema == "app"  # type: ignore[union-attr]
    assert app_first.resolve_relation("public", "customers").schema == "public"  # type: ignore[union-attr]

    public_only = _load(db, ("public",))
    assert public_only.resolve_relation(None, "only_app") is None
    assert public_only.resolve_relation(None, "pg_class").schema == "pg_catalog"  # type: ignore[union-attr]
    assert public_only.resolve_relation("public", "pg_class") is not None
    assert public_only.resolve_relation(None, "tables") is None  # information_schema is not on the path
    assert public_only.resolve_relation("information_schema", "tables") is not None


def test_own_temp_tables_appear_as_pg_temp_and_others_do_not(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as mine, psycopg.connect(db, autocommit=True) as other:
        mine.execute("CREATE TEMP TABLE scratch (a int, b text)")
        mine.execute("CREATE TEMP TABLE customers (shadowing int)")
        other.execute("CREATE TEMP TABLE theirs (secret text)")
        mine.execute("CREATE FUNCTION pg_temp.my_tmp_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        cat = load_catalog(mine, search_path=["public"])
        other_cat = load_catalog(other, search_path=["public"])

    scratch = cat.relations[("pg_temp", "scratch")]
    assert [c.name for c in scratch.columns] == ["a", "b"]
    # Temp relations shadow everything, as in PostgreSQL.
    assert cat.resolve_relation(None, "customers") is cat.relations[("pg_temp", "customers")]
    assert cat.function_schemas("my_tmp_fn") == frozenset({"pg_temp"})
    assert all(name != "theirs" for _, name in cat.relations)
    assert not any(schema.startswith("pg_temp_") for schema, _ in cat.relations)

    assert ("pg_temp", "theirs") in other_cat.relations
    assert ("pg_temp", "scratch") not in other_cat.relations
    assert "my_tmp_fn" not in other_cat.functions


def test_dropped_columns_are_excluded(make_db: Callable[[str], str]) -> None:
    dsn = make_db("CREATE TABLE t (a int, gone text, c date); ALTER TABLE t DROP COLUMN gone;")
    cols = _load(dsn).relations[("public", "t")].columns
    assert cols == (Column("a", 1, "integer"), Column("c", 3, "date"))


def test_functions_and_their_schemas(db: str) -> None:
    cat = _load(db)
    assert cat.function_schemas("add_one") == frozenset({"public", "app"})
    assert cat.function_schemas("app_only") == frozenset({"app"})
    assert cat.is_builtin_function("lower")
    assert not cat.is_builtin_function("add_one")
    assert "pg_catalog" in cat.function_schemas("count")  # aggregates count as functions
    assert "information_schema" in cat.function_schemas("_pg_expandarray")


def test_version_changes_on_every_load(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        first = load_catalog(conn, search_path=["public"])
        second = load_catalog(conn, search_path=["public"])
        conn.execute("CREATE TABLE added_later (x int)")
        third = load_catalog(conn, search_path=["public"])
    assert len({first.version, second.version, third.version}) == 3
    assert first.relations == second.relations
    # The content digest (second field) only moves when the content does.
    assert first.version.split("-")[1] == second.version.split("-")[1] != third.version.split("-")[1]
    assert ("public", "added_later") in third.relations and ("public", "added_later") not in first.relations


def test_callers_transaction_and_settings_are_left_alone(db: str) -> None:
    with psycopg.connect(db, row_factory=dict_row) as conn:  # not autocommit, a non-tuple row factory
        assert conn.info.transaction_status == TransactionStatus.IDLE
        load_catalog(conn, search_path=["public"])
        assert conn.info.transaction_status == TransactionStatus.IDLE

        conn.execute("CREATE TABLE uncommitted (x int)")
        cat = load_catalog(conn, search_path=["public"])
        assert ("public", "uncommitted") in cat.relations  # the load sees the caller's own transaction
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SHOW search_path").fetchone() == {"search_path": '"$user", public'}
        conn.rollback()
    assert ("public", "uncommitted") not in _load(db).relations


def test_async_loader_gives_the_same_catalog(db: str) -> None:
    async def aload() -> Catalog:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as aconn:
            return await aload_catalog(aconn, search_path=["app", "public"])

    sync_cat = _load(db, ("app", "public"))
    async_cat = asyncio.run(aload())
    assert async_cat.relations == sync_cat.relations
    assert async_cat.functions == sync_cat.functions
    assert async_cat.search_path == sync_cat.search_path
    assert async_cat.complete
    assert async_cat.version != sync_cat.version


def test_public_cases_database(public_cases_db: str) -> None:
    cat = _load(public_cases_db)
    customers = cat.resolve_relation(None, "customers")
    assert customers is not None and customers.qualified == "public.customers"
    assert [c.name for c in customers.columns] == ["id", "full_name", "email", "card_number", "ssn"]
    assert cat.resolve_relation(None, "invoices") is None
    assert cat.resolve_relation("billing", "invoices") is not None
    assert cat.resolve_relation(None, "pg_stats").qualified == "pg_catalog.pg_stats"  # type: ignore[union-attr]


def test_types_whose_casts_run_user_code(make_db: Callable[[str], str]) -> None:
    """Both sides of a user cast, and domains whose CHECK (or a base domain's) calls a user function; a
    CHECK of built-ins only runs no user code."""
    dsn = make_db("""
        CREATE FUNCTION ok(text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
        CREATE DOMAIN checked AS text CHECK (ok(VALUE));
        CREATE DOMAIN "Over Checked" AS checked;
        CREATE DOMAIN plain AS text CHECK (length(VALUE) < 10);
        CREATE TYPE mood AS ENUM ('ok', 'meh');
        CREATE FUNCTION mood_int(mood) RETURNS int LANGUAGE sql AS 'SELECT 1';
        CREATE CAST (mood AS int4) WITH FUNCTION mood_int(mood);
    """)
    cat = _load(dsn)
    assert cat.checked_domains == {"public.checked", 'public."Over Checked"'}
    assert cat.user_cast_types == {"public.checked", 'public."Over Checked"', "public.mood", "integer"}
