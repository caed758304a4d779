"""The engine session against a real PostgreSQL: pinned settings, masks, errors, session state.

These prove the verdicts hold where it matters — upstream. A text the policy
calls read-only runs in a read-only transaction, pinned settings survive what
a client may send, masked values never arrive raw, errors that quote masked
values lose their text, and cursors and prepared statements keep their masks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.engine import upstream
from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import GatewayError, Session, StatementRefused, UpstreamError
from pgwarden.errors import PgwardenError
from support.cases import load_public_cases
from support.sql_strategies import QUERY_SHAPES, expressions

REPO = Path(__file__).resolve().parents[2]
AGENT = Principal.local("agent", {"ai-agents"})
DBA = Principal.local("dana", {"dba"})


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")


def make_gateway(dsn: str, **rule_overrides) -> Gateway:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    for rule in data["rules"]:
        rule.update(rule_overrides.get(rule["name"], {}))
    gateway = Gateway(parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples"))
    anyio.run(gateway.refresh_catalog, "main")
    return gateway


@pytest.fixture
def cases_db(make_db) -> str:
    return make_db(load_public_cases().fixture_sql)


def run(gateway: Gateway, principal: Principal, *sqls: str):
    async def go():
        try:
            async with Session(gateway, principal, "main") as session:
                out = []
                for sql in sqls:
                    out.append(await session.run(sql))
                return out
        finally:
            await gateway.close()  # the pools belong to this event loop
    return anyio.run(go)


def test_pinned_settings_reach_postgres_and_survive_reset_all(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    results = run(gateway, AGENT, "SHOW default_transaction_read_only", "SHOW statement_timeout",
                  "SHOW search_path", "SELECT current_setting('application_name')", "RESET ALL",
                  "SHOW default_transaction_read_only", "SHOW statement_timeout")
    values = [r.results[-1].rows[0][0] if r.results[-1].rows else None for r in results]
    assert values[0] == "on" and values[1] == "30s" and values[2] == "public"
    assert values[3] == "pgwarden:agent"
    assert values[5] == "on" and values[6] == "30s"


def test_read_only_text_runs_read_only_even_for_a_writer(cases_db: str) -> None:
    # The dba rule may write; a text the analysis calls read-only still runs in a
    # read-only transaction, so a function that writes behind its back fails.
    with psycopg.connect(cases_db, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql VOLATILE AS "
                     "$$ DELETE FROM orders RETURNING 1 $$")
    gateway = make_gateway(cases_db, dba={"functions": {"allow": ["public.sneaky"]}})
    with pytest.raises(UpstreamError) as err:
        run(gateway, DBA, "SELECT sneaky()")
    assert err.value.sqlstate == "25006"  # read_only_sql_transaction
    with psycopg.connect(cases_db) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2


def test_commit_cannot_escape_read_only(cases_db: str) -> None:
    # Even if analysis were fooled, the session-level pin keeps every transaction read-only.
    gateway = make_gateway(cases_db)
    verdict = gateway.decider.decide("SELECT 1", subject="agent", groups={"ai-agents"}, target="main",
                                     catalog=gateway.catalog("main"))
    _, target = gateway.target("main")
    with psycopg.connect(upstream.conninfo(target, verdict.settings), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("COMMIT; DELETE FROM orders")
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2


def test_masks_apply_to_values(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    [result] = run(gateway, AGENT, "SELECT id, email, card_number, ssn, full_name FROM customers ORDER BY id")
    rows = result.results[0].rows
    assert rows[0][0] == "1" and rows[0][4] == "Ada Example"
    assert rows[0][2] == "************1111" and rows[1][2] == "************5559"
    assert rows[0][3] == rows[1][3] == "[masked]"
    assert rows[0][1].startswith("h:") and rows[0][1] != rows[1][1]
    assert result.results[0].masked_columns == ["email", "card_number", "ssn"]
    # the keyed hash is stable: the same value hashes the same in another statement
    [again] = run(gateway, AGENT, "SELECT x.e FROM (SELECT email AS e, id FROM customers) x ORDER BY x.id")
    assert again.results[0].rows[0][0] == rows[0][1]


def test_expression_over_masked_column_is_redacted_whole(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    [result] = run(gateway, AGENT, "SELECT substr(card_number, 1, 12) AS a, row_to_json(c) AS b "
                   "FROM customers c ORDER BY id")
    # masks are applied inside the statement: expressions see the masked value, never the raw one
    rows = result.results[0].rows
    assert [r[0] for r in rows] == ["************", "************"]
    assert '"card_number":"************1111"' in rows[0][1] and '"full_name":"Ada Example"' in rows[0][1]
    assert all("4111111111111111" not in v and "078-05-1120" not in v for r in rows for v in r)


def test_error_quoting_masked_value_is_withheld(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    with pytest.raises(UpstreamError) as err:
        run(gateway, AGENT, "SELECT card_number::bigint / 0 FROM customers")
    assert err.value.sqlstate in ("22003", "22012", "22P02")  # the masked value '****…1111' is no bigint
    assert "4111" not in err.value.message and "withheld" in err.value.message
    with pytest.raises(UpstreamError) as err:
        run(gateway, AGENT, "SELECT ssn::int FROM customers")
    assert "078-05-1120" not in str(err.value.message) and err.value.sqlstate == "22P02"


def test_detectors_catch_sensitive_values_in_unmasked_columns_and_errors(cases_db: str) -> None:
    with psycopg.connect(cases_db, autocommit=True) as conn:
        conn.execute("UPDATE orders SET note = 'paid with 4111 1111 1111 1111, mail zed.sentinel@example.org' "
                     "WHERE id = 1")
    gateway = make_gateway(cases_db)
    [result] = run(gateway, AGENT, "SELECT note FROM orders WHERE id = 1")
    note = result.results[0].rows[0][0]
    assert "4111 1111 1111 1111" not in note and "zed.sentinel" not in note
    assert note.startswith("paid with [masked:card]")
    with pytest.raises(UpstreamError) as err:
        run(gateway, AGENT, "SELECT note::int FROM orders WHERE id = 1")
    assert "4111" not in err.value.message and err.value.sqlstate == "22P02"


def test_row_limit_truncates(cases_db: str) -> None:
    gateway = make_gateway(cases_db, **{"ai-agents": {"max_rows": 1}})
    [result] = run(gateway, AGENT, "SELECT id FROM orders ORDER BY id")
    assert result.results[0].rows == [("1",)] and result.results[0].truncated


def test_cursor_and_prepared_statement_keep_their_masks(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    results = run(gateway, AGENT, "BEGIN", "DECLARE c CURSOR FOR SELECT card_number FROM customers ORDER BY id",
                  "FETCH 1 FROM c", "COMMIT", "PREPARE p AS SELECT ssn FROM customers ORDER BY id", "EXECUTE p")
    assert results[2].results[0].rows == [("************1111",)]
    assert results[5].results[0].rows == [("[masked]",), ("[masked]",)]


def test_unknown_cursor_and_role_changes_are_refused(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    for sql in ("FETCH ALL FROM elsewhere", "EXECUTE never_prepared", "SET ROLE postgres"):
        with pytest.raises(StatementRefused):
            run(gateway, AGENT, sql)


def test_ddl_after_approval_refreshes_catalog(cases_db: str) -> None:
    # The dba rule may run DDL directly; afterwards the new table's columns are known
    # to the analyser, so * over it masks by position.
    gateway = make_gateway(cases_db)
    run(gateway, DBA, "CREATE TABLE public.cards2 AS SELECT id, full_name FROM customers")
    assert gateway.catalog("main").resolve_relation(None, "cards2") is not None
    verdict = gateway.decider.decide("SELECT * FROM cards2", subject="agent", groups=frozenset({"ai-agents"}),
                                     catalog=gateway.catalog("main"))
    assert verdict.allowed


def test_ddl_needs_approval_and_is_not_run(cases_db: str) -> None:
    gateway = make_gateway(cases_db)
    with pytest.raises(StatementRefused) as refused:
        run(gateway, AGENT, "DROP TABLE orders")
    assert refused.value.code == "approval_required"
    assert refused.value.verdict.approval.approvers == ("dba",)
    with psycopg.connect(cases_db) as conn:
        assert conn.execute("SELECT to_regclass('public.orders')").fetchone()[0] == "orders"


def test_unreachable_target_is_a_clear_error(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = f"host={tmp_path} port=1 dbname=nothing user=nobody"
    data["targets"]["main"].pop("password", None)
    gateway = Gateway(parse_config(yaml.safe_dump(data), "test"))
    with pytest.raises(GatewayError) as err:
        anyio.run(gateway.refresh_catalog, "main")
    assert err.value.code == "catalog_unavailable"
    with pytest.raises(PgwardenError) as err:
        run(gateway, AGENT, "SELECT 1")
    assert err.value.code == "upstream_unavailable"


@given(expressions(), st.sampled_from(QUERY_SHAPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_queries_never_return_raw_card_numbers(public_cases_db: str, expression, shape) -> None:
    """Run generated wrappings against PostgreSQL itself: whatever comes back holds no card number."""
    gateway = _shared_gateway(public_cases_db)
    sql = shape[0].format(e=expression[0], a="x")
    try:
        [result] = run(gateway, AGENT, sql)
    except (StatementRefused, UpstreamError) as exc:
        assert "4111111111111111" not in exc.message and "5500005555555559" not in exc.message
        return
    text = "\n".join(str(v) for r in result.results for row in r.rows for v in row)
    assert "4111111111111111" not in text and "5500005555555559" not in text, sql
    assert "41111111" not in text.replace("*", ""), sql


_GATEWAYS: dict[str, Gateway] = {}


def _shared_gateway(dsn: str) -> Gateway:
    if dsn not in _GATEWAYS:
        _GATEWAYS[dsn] = make_gateway(dsn)
    return _GATEWAYS[dsn]


def test_partitions_and_children_inherit_masks_and_denials(make_db) -> None:
    dsn = make_db(load_public_cases().fixture_sql + """
        CREATE TABLE cards (id int, card_number text) PARTITION BY RANGE (id);
        CREATE TABLE cards_low PARTITION OF cards FOR VALUES FROM (0) TO (100);
        INSERT INTO cards VALUES (1, '4111111111111111');
        CREATE TABLE secrets_archive () INHERITS (secrets);
        INSERT INTO secrets_archive VALUES (2, 'sk_live_SENTINEL123');
    """)
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    data["masking"]["columns"].append({"column": "public.cards.card_number", "strategy": "keep_last"})
    gateway = Gateway(parse_config(yaml.safe_dump(data), "test", base_dir=REPO / "examples"))
    anyio.run(gateway.refresh_catalog, "main")
    [result] = run(gateway, AGENT, "SELECT * FROM cards_low")
    assert result.results[0].rows == [("1", "************1111")]
    with pytest.raises(StatementRefused) as refused:
        run(gateway, AGENT, "SELECT * FROM secrets_archive")
    assert refused.value.code == "table_denied"


def test_copy_to_stdout_passes_detectors_and_copy_from_stdin_is_refused(cases_db: str) -> None:
    with psycopg.connect(cases_db, autocommit=True) as conn:
        conn.execute("UPDATE orders SET note = 'card 5500005555555559' WHERE id = 2")
    gateway = make_gateway(cases_db)
    [result] = run(gateway, AGENT, "COPY (SELECT id, note FROM orders ORDER BY id) TO STDOUT")
    assert result.results[0].rows == [("1\tfirst",), ("2\tcard [masked:card]",)]
    [copied] = run(gateway, AGENT, "COPY customers (id, card_number) TO STDOUT")  # masked inside the query
    assert copied.results[0].rows == [("1\t************1111",), ("2\t************5559",)]
    with pytest.raises(StatementRefused):
        run(gateway, AGENT, "COPY customers TO STDOUT (FORMAT binary)")
    dba_gateway = make_gateway(cases_db)
    with pytest.raises(GatewayError) as err:
        run(dba_gateway, DBA, "COPY orders FROM STDIN")
    assert err.value.code == "copy_from_stdin"


def test_notices_of_statements_reading_masked_columns_are_withheld(cases_db: str) -> None:
    with psycopg.connect(cases_db, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION shout(v text) RETURNS text LANGUAGE plpgsql AS
                        $$ BEGIN RAISE NOTICE 'value %', v; RETURN 'ok'; END $$""")
    gateway = make_gateway(cases_db, **{"ai-agents": {"functions": {"allow": ["public.shout"]}}})
    [masked] = run(gateway, AGENT, "SELECT shout(card_number) FROM customers WHERE id = 1")
    assert masked.results[0].rows == [("ok",)]  # the function saw the masked value
    assert masked.notices and all("4111" not in n and "withheld" in n for n in masked.notices)
    [plain] = run(gateway, AGENT, "SELECT shout(note) FROM orders WHERE id = 1")
    assert plain.notices == ["NOTICE: value first"]


def test_missing_secrets_are_clear_errors_not_crashes(cases_db: str, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("PGWARDEN_MASK_KEY")
    gateway = make_gateway(cases_db)
    with pytest.raises((GatewayError, StatementRefused)) as err:  # the hash mask cannot be placed
        run(gateway, AGENT, "SELECT email FROM customers")
    assert err.value.code in ("secret_env_unset", "mask_key_unavailable") and "PGWARDEN_MASK_KEY" in err.value.message
    # pgwarden check with an unset password variable: a warning, then a verdict from the builtin catalog
    proc = subprocess.run(
        [sys.executable, "-m", "pgwarden.cli", "check", "--config", str(REPO / "examples" / "pgwarden.yaml"),
         "--as", "agent", "--groups", "ai-agents", "SELECT id FROM orders"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PGWARDEN_MAIN_PASSWORD"})
    assert proc.returncode == 0, proc.stderr
    assert "secret_env_unset" in proc.stderr and "Traceback" not in proc.stderr
    assert "decision: allow" in proc.stdout


def test_with_its_own_login_a_rule_may_discard_all_and_stays_pinned(cases_db: str) -> None:
    # The rule logs in as a least-privilege role of its own: DISCARD ALL (SESSION AUTHORIZATION
    # DEFAULT, RESET ALL) returns to that login and to the pinned start-up values, never wider.
    role = f"pgw_login_{os.getpid()}"
    with psycopg.connect(cases_db, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON customers, orders TO {role}")
    try:
        gateway = make_gateway(cases_db, **{"ai-agents": {"upstream_login": {"user": role}}})
        results = run(gateway, AGENT, "PREPARE p AS SELECT id FROM orders", "DISCARD ALL",
                      "SELECT current_user, session_user", "SHOW default_transaction_read_only")
        assert results[2].results[0].rows == [(role, role)]
        assert results[3].results[0].rows == [("on",)]
        with pytest.raises(StatementRefused):  # DISCARD ALL dropped p, and the session knows it
            run(gateway, AGENT, "PREPARE p AS SELECT id FROM orders", "DISCARD ALL", "EXECUTE p")
    finally:
        with psycopg.connect(cases_db, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON customers, orders FROM {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("texts", [
    ("PREPARE x AS SELECT card_number FROM customers ORDER BY id; SELECT 1/0", "EXECUTE x"),
    ("PREPARE x AS SELECT id FROM customers ORDER BY id",
     "DEALLOCATE x; PREPARE x AS SELECT card_number FROM customers ORDER BY id; SELECT 1/0", "EXECUTE x"),
    ("BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT card_number FROM customers ORDER BY id",
     "COMMIT; SELECT 1/0", "FETCH ALL FROM c"),
], ids=["prepare-then-fail", "redefined-then-fail", "hold-cursor-then-fail"])
def test_the_session_remembers_what_the_server_remembers_after_a_failed_text(cases_db: str, texts) -> None:
    # PREPARE is not transactional and a WITH HOLD cursor outlives its transaction: a text that
    # made one and then failed leaves it on the server, and the gateway must know it as it is.
    gateway = make_gateway(cases_db)

    async def go():
        try:
            async with Session(gateway, AGENT, "main") as session:
                out = None
                for text in texts:
                    try:
                        out = await session.run(text)
                    except UpstreamError:
                        out = None
                return out
        finally:
            await gateway.close()

    result = anyio.run(go)
    values = [v for row in result.results[-1].rows for v in row]
    assert values and all(v.startswith("*") for v in values), values
    assert "4111111111111111" not in repr(values)


def test_one_text_gets_one_deadline(cases_db: str) -> None:
    # Each statement is under the rule's statement_timeout; together they are not.
    import time

    gateway = make_gateway(cases_db, **{"ai-agents": {"statement_timeout": "1s"}})
    started = time.monotonic()
    with pytest.raises(GatewayError) as err:
        run(gateway, AGENT, "SELECT pg_sleep(0.6); SELECT pg_sleep(0.6); SELECT pg_sleep(0.6); SELECT 1")
    assert err.value.code == "text_timeout" and err.value.sqlstate == "57014"
    assert time.monotonic() - started < 1.9
    # the session is usable afterwards
    assert run(gateway, AGENT, "SELECT 2")[0].results[0].rows == [("2",)]


def test_a_few_huge_values_cannot_fill_the_gateway(cases_db: str) -> None:
    gateway = make_gateway(cases_db, **{"ai-agents": {"max_result_bytes": 3_000_000, "max_rows": 1000}})
    [result] = run(gateway, AGENT, "SELECT repeat('x', 1000000) FROM generate_series(1, 50)")
    statement = result.results[0]
    assert statement.truncated and 1 <= len(statement.rows) <= 4
    assert sum(len(v) for row in statement.rows for v in row) <= 4_000_000
