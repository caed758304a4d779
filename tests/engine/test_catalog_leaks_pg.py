"""Issue 5, items 3 to 6 and 8 against a real PostgreSQL, through the engine's Session.

Sentinels sit where the catalogs show them to anyone: a denied table's TOAST-stored value, its
column default, check constraint, comments, a view and a function body that quote it, a user
mapping's password, another session's query text, a sequence of the denied table. The agent's
statements run through the engine; nothing it receives (values, column names, errors, notices,
status) may contain the sentinel. Introspection of permitted objects keeps working.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import psycopg
import pytest
import yaml

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session, StatementRefused, UpstreamError
from support.cases import load_public_cases

REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})
SENTINEL = "sk_live_SENTINEL123"

LEAKY_SQL = f"""
CREATE TABLE vault (id serial PRIMARY KEY, secret text DEFAULT '{SENTINEL}-default',
                    blob text, CHECK (secret <> '{SENTINEL}-check'));
COMMENT ON TABLE vault IS '{SENTINEL}-comment';
COMMENT ON COLUMN vault.secret IS '{SENTINEL}-colcomment';
ALTER TABLE vault ALTER COLUMN blob SET STORAGE EXTERNAL;
INSERT INTO vault (secret, blob) VALUES ('x', repeat('{SENTINEL}', 400));
CREATE VIEW vault_view AS SELECT id FROM vault WHERE secret <> '{SENTINEL}-view';
CREATE FUNCTION vault_fn() RETURNS text LANGUAGE sql AS $$ SELECT '{SENTINEL}-fn' $$;
CREATE FOREIGN DATA WRAPPER dummy;
CREATE SERVER dummy_srv FOREIGN DATA WRAPPER dummy;
CREATE USER MAPPING FOR CURRENT_USER SERVER dummy_srv OPTIONS (password '{SENTINEL}-umopt');
CREATE FUNCTION public.upper(integer) RETURNS text LANGUAGE sql AS $$ SELECT api_key FROM secrets LIMIT 1 $$;
CREATE FUNCTION leak_op(text, text) RETURNS text LANGUAGE sql AS $$ SELECT api_key FROM secrets LIMIT 1 $$;
CREATE OPERATOR ||| (LEFTARG = text, RIGHTARG = text, FUNCTION = leak_op);
CREATE TABLE orders_brin (id int, note text);
CREATE INDEX orders_brin_idx ON orders_brin USING brin (id);
COMMENT ON TABLE orders IS 'orders placed';
"""


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")


@pytest.fixture(scope="module")
def leaky_db(make_db_module) -> str:
    return make_db_module(load_public_cases().fixture_sql + LEAKY_SQL + "\nANALYZE;")


def make_gateway(dsn: str) -> Gateway:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    for rule in data["rules"]:
        if rule["name"] == "ai-agents":
            rule["tables"]["deny"] = ["public.secrets", "public.vault", "public.vault_view"]
    gateway = Gateway(parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples"))
    anyio.run(gateway.refresh_catalog, "main")
    return gateway


def attempt(gateway: Gateway, sql: str) -> str:
    """Run ``sql`` as the agent; everything the agent received, as one string ('' never means allowed)."""
    async def go() -> str:
        try:
            async with Session(gateway, AGENT, "main") as session:
                try:
                    result = await session.run(sql)
                except StatementRefused as refused:
                    return "REFUSED " + " ".join(f"{r.code}: {r.message}" for r in refused.verdict.reasons)
                except UpstreamError as err:
                    return f"ERROR {err.code} {err.message} {err.sqlstate}"
                parts = ["ALLOWED", *result.notices]
                for r in result.results:
                    parts += [r.status, *r.columns, *(str(v) for row in r.rows for v in row)]
                return " ".join(parts)
        finally:
            await gateway.close()  # the pools belong to this event loop
    return anyio.run(go)


LEAKS = [
    # TOAST tables hold the out-of-line values of every table
    "SELECT chunk_data::text FROM pg_toast.pg_toast_{toast}",
    # defaults, constraints, comments, view and function bodies of denied objects
    "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef",
    "SELECT column_default FROM information_schema.columns WHERE column_default IS NOT NULL",
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint",
    "SELECT check_clause FROM information_schema.check_constraints",
    "SELECT description FROM pg_description",
    "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c",
    "SELECT col_description(a.attrelid, a.attnum) FROM pg_attribute a",
    "SELECT obj_description('public.vault'::regclass, 'pg_class')",
    "SELECT definition FROM pg_views WHERE schemaname = 'public'",
    "SELECT pg_get_viewdef('public.vault_view'::regclass)",
    "SELECT view_definition FROM information_schema.views",
    "SELECT prosrc FROM pg_proc WHERE proname = 'vault_fn'",
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE proname = 'vault_fn'",
    "SELECT routine_definition FROM information_schema.routines WHERE routine_schema = 'public'",
    # FDW user-mapping options hold passwords
    "SELECT umoptions FROM pg_user_mappings",
    "SELECT * FROM pg_user_mapping",
    "SELECT option_value FROM information_schema.user_mapping_options",
    # statistics of denied tables
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'vault'",
    "SELECT most_common_vals::text FROM pg_stats",
    "SELECT * FROM pg_statistic",
    # sequences of denied tables
    "SELECT last_value FROM vault_id_seq",
    "SELECT pg_sequence_last_value('public.vault_id_seq')",
    "SELECT last_value FROM pg_sequences",
    # user code behind built-in names and operators
    "SELECT upper(1)",
    "SELECT upper('x')",  # ambiguous while public.upper(integer) exists: refused, the reason says pg_catalog.upper
    "SELECT 'a' ||| 'b'",
    "SELECT 'a' OPERATOR(public.|||) 'b'",
    "SELECT vault_fn()",
    # server secrets
    "SELECT * FROM pg_hba_file_rules",
    "SELECT * FROM pg_show_all_file_settings()",
    "SELECT * FROM pg_file_settings",
    "SELECT * FROM pg_control_system()",
    "SELECT setconfig FROM pg_db_role_setting",
    "SELECT rolconfig FROM pg_roles",
]


@pytest.mark.parametrize("sql", LEAKS)
def test_catalogs_tell_nothing_about_denied_objects(leaky_db: str, sql: str) -> None:
    with psycopg.connect(leaky_db) as conn:
        toast = conn.execute("SELECT reltoastrelid::int FROM pg_class WHERE relname = 'vault'").fetchone()[0]
    received = attempt(make_gateway(leaky_db), sql.format(toast=toast))
    assert SENTINEL not in received, received
    assert received.startswith(("REFUSED", "ERROR")), received


def test_other_sessions_query_text_stays_hidden(leaky_db: str) -> None:
    gateway = make_gateway(leaky_db)

    def other() -> None:
        with psycopg.connect(leaky_db) as conn:
            conn.execute(f"SELECT pg_sleep(2) /* {SENTINEL} */")

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.5)
    try:
        for sql in ("SELECT query FROM pg_stat_activity", "SELECT * FROM pg_stat_activity",
                    "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
                    "SELECT * FROM pg_stat_get_activity(NULL)"):
            received = attempt(gateway, sql)
            assert SENTINEL not in received, (sql, received)
        received = attempt(gateway, "SELECT pid, state FROM pg_stat_activity")
        assert received.startswith("ALLOWED") and SENTINEL not in received
    finally:
        thread.join()


INTROSPECTION = [
    "SELECT attname, null_frac FROM pg_stats WHERE schemaname = 'public' AND tablename = 'orders'",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'full_name'",
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders'",
    "SELECT obj_description('public.orders'::regclass, 'pg_class')",
    "SELECT name, parameter_types FROM pg_prepared_statements",  # (statement is refused: it may hold the rewrite)
    # upper() has a user overload here: the built-in, schema-qualified, and other built-ins still work
    "SELECT pg_catalog.upper('y'), lower('x')",
    "SELECT pg_advisory_xact_lock(42)",
]


@pytest.mark.parametrize("sql", INTROSPECTION)
def test_introspection_of_permitted_objects_keeps_working(leaky_db: str, sql: str) -> None:
    received = attempt(make_gateway(leaky_db), sql)
    assert received.startswith("ALLOWED"), received
    assert SENTINEL not in received


def test_pg_stats_of_masked_columns_is_refused(leaky_db: str) -> None:
    gateway = make_gateway(leaky_db)
    for sql in ("SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers'",
                "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers' AND attname = 'ssn'",
                "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers' OR attname = 'id'"):
        received = attempt(gateway, sql)
        assert received.startswith("REFUSED") and "078-05-1120" not in received, received


STATE_CHANGING = [
    "SELECT brin_summarize_new_values('orders_brin_idx')",
    "SELECT brin_summarize_range('orders_brin_idx', 0)",
    "SELECT brin_desummarize_range('orders_brin_idx', 0)",
    "SELECT pg_import_system_collations('public')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock_shared(1)",
    "SELECT pg_notify('chan', 'x')",
    "NOTIFY chan, 'x'",
    "SET jit_dump_bitcode = on",
    "SET log_statement = 'none'",
    "SELECT set_config('log_min_messages', 'panic', false)",
    "SELECT nextval('vault_id_seq')",
]


@pytest.mark.parametrize("sql", STATE_CHANGING)
def test_state_changing_builtins_are_refused_to_a_read_only_agent(leaky_db: str, sql: str) -> None:
    assert attempt(make_gateway(leaky_db), sql).startswith("REFUSED")


def test_false_denials_of_item_8(leaky_db: str) -> None:
    gateway = make_gateway(leaky_db)
    for sql in ("SELECT id FROM orders UNION SELECT customer_id FROM orders ORDER BY id",
                "SELECT id AS k FROM orders UNION ALL SELECT id FROM orders ORDER BY k",
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                "SET default_transaction_read_only = on",
                " UNION ALL ".join(["SELECT id FROM orders"] * 1500),
                "SELECT " + " + ".join(["id"] * 2000) + " FROM orders"):
        received = attempt(gateway, sql)
        assert received.startswith("ALLOWED"), (sql[:80], received[:300])
