"""Wire-door attack pass: real clients (raw protocol bytes, psycopg text and binary, asyncpg) as an AI agent
(group ``ai-agents``) and a writer (group ``writers``) against the ``hr`` schema of
:mod:`support.attack_policy`.

Every attempt asserts the safe outcome: no sentinel (``RAW…``) in any byte the client receives, and no write
that takes effect (checked on a direct connection). Breaches are ``xfail(strict=True)`` tests whose reason
starts with ``BREACH:``; a fixed one stays as a test of its class (the statement and portal name swaps).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.wire_proxy import Bind, Describe, Execute, Parse, Query, Sync
from support.attack_policy import SENTINELS, SETUP_SQL, attack_config
from support.wire import Keys, RawClient, RunningProxy

MASKED = "SELECT national_id, salary, email FROM hr.employees"
WRITERS = ("writers",)


# ---- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attack_db(make_db_module) -> str:
    return make_db_module(SETUP_SQL)


@pytest.fixture(scope="module")
def attack_proxy(attack_db: str, wire_dir: Path, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    p = RunningProxy(attack_config(attack_db, wire_dir, keys), wire_dir)
    yield p
    p.close()


def leaks(data: bytes, sql: str = "") -> list[bytes]:
    """The sentinels in ``data`` (a sentinel the attacker typed into ``sql`` itself is not a leak)."""
    typed = sql.encode()
    return [s for s in SENTINELS if s in data and s not in typed]


def state(dsn: str) -> str:
    """A digest of everything an agent must not be able to change, read on a direct connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        parts = []
        for table in ("hr.tasks", "hr.employees", "hr.payments", "hr.secrets", "vault.keys", "hr.audit_probe"):
            parts.append(conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                                      f" FROM {table} t").fetchone())
        parts.append(conn.execute("SELECT last_value, is_called FROM hr.audit_probe_id_seq").fetchone())
        parts.append(conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone())
        parts.append(conn.execute(
            "SELECT string_agg(n.nspname || '.' || c.relname, ',' ORDER BY 1) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('hr', 'vault', 'public')").fetchone())
        parts.append(conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace::regnamespace::text "
                                  "IN ('hr', 'vault', 'public')").fetchone())
        parts.append(conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone())
        return hashlib.sha256(repr(parts).encode()).hexdigest()


@pytest.fixture
def unchanged(attack_db: str) -> Iterator[None]:
    before = state(attack_db)
    yield
    assert state(attack_db) == before, "a write took effect"


def raw(proxy: RunningProxy, keys: Keys, groups: tuple[str, ...] = ("ai-agents",), **kw) -> RawClient:
    return RawClient(proxy.port, keys.token(groups=groups), **kw)


def run(client: RawClient, *msgs) -> tuple[list[tuple[int, bytes]], bytes]:
    """Send messages (ending with Sync or a Query) and read up to ReadyForQuery; frames and raw bytes."""
    start = len(client.received)
    client.send(*msgs)
    frames = client.read_until({ord("Z")})
    return frames, bytes(client.received[start:])


def kinds(frames: list[tuple[int, bytes]]) -> str:
    return "".join(chr(k) for k, _ in frames)


def error_of(frames: list[tuple[int, bytes]]) -> str | None:
    for k, payload in frames:
        if k == ord("E"):
            fields = {f[:1]: f[1:] for f in payload.split(b"\0") if f}
            return fields.get(b"M", b"").decode(errors="replace")
    return None


def rows_of(frames: list[tuple[int, bytes]]) -> list[list[bytes | None]]:
    out = []
    for k, payload in frames:
        if k == ord("D"):
            n = int.from_bytes(payload[:2], "big")
            pos, row = 2, []
            for _ in range(n):
                size = int.from_bytes(payload[pos:pos + 4], "big", signed=True)
                pos += 4
                if size < 0:
                    row.append(None)
                else:
                    row.append(payload[pos:pos + size])
                    pos += size
            out.append(row)
    return out


def both_ways(client: RawClient, sql: str) -> list[tuple[str, list[tuple[int, bytes]], bytes]]:
    """``sql`` as a simple Query and through the extended protocol (Parse/Bind/Describe/Execute)."""
    simple = run(client, Query(sql))
    extended = run(client, Parse("", sql), Bind("", "", (), (), ()), Describe("P", ""), Execute("", 0), Sync())
    return [("simple", *simple), ("extended", *extended)]


def assert_no_leak(client: RawClient, sql: str) -> list[tuple[str, list[tuple[int, bytes]], bytes]]:
    results = both_ways(client, sql)
    for mode, _frames, data in results:
        assert not leaks(data, sql), f"{mode}: {sql!r} leaked {leaks(data, sql)}"
    # the session survives the attempt
    assert rows_of(run(client, Query("SELECT 1"))[0]) == [[b"1"]]
    return results


def assert_denied(client: RawClient, sql: str) -> None:
    for mode, frames, data in both_ways(client, sql):
        assert error_of(frames) is not None, f"{mode}: {sql!r} was not refused: {kinds(frames)}"
        assert not leaks(data, sql), f"{mode}: {sql!r} leaked {leaks(data, sql)}"
    assert rows_of(run(client, Query("SELECT 1"))[0]) == [[b"1"]]


@pytest.fixture
def agent(attack_proxy: RunningProxy, keys: Keys) -> Iterator[RawClient]:
    client = raw(attack_proxy, keys)
    assert client.startup[-1][0] == ord("Z"), client.startup
    yield client
    client.close()


# ---- masked values in every shape of SELECT ---------------------------------------------------------

MASKED_READS = [
    "SELECT * FROM hr.employees ORDER BY id",
    "SELECT id, salary, national_id, email FROM employees ORDER BY id",
    "SELECT card_number FROM hr.payments ORDER BY id",
    "TABLE hr.employees",
    "SELECT national_id AS x, email AS \"y\" FROM hr.employees",
    "SELECT lower(national_id), upper(email), salary * 1 FROM hr.employees",
    "SELECT substr(card_number, 1, 12) || substr(card_number, 13) FROM hr.payments",
    "SELECT reverse(national_id), replace(email, '@', ' at ') FROM hr.employees",
    "SELECT encode(convert_to(national_id, 'UTF8'), 'hex'), encode(convert_to(email, 'UTF8'), 'base64') FROM hr.employees",
    "SELECT length(national_id), octet_length(email), md5(card_number) FROM hr.employees, hr.payments",
    "SELECT e::text FROM hr.employees e",
    "SELECT row_to_json(e) FROM hr.employees e",
    "SELECT to_jsonb(e) FROM hr.employees e",
    "SELECT to_json(p) FROM hr.payments p",
    "SELECT json_agg(e)::text FROM hr.employees e",
    "SELECT jsonb_agg(to_jsonb(p)) FROM hr.payments p",
    "SELECT (array_agg(e))[1]::text FROM hr.employees e",
    "SELECT array_agg(national_id), array_agg(salary), array_agg(email) FROM hr.employees",
    "SELECT string_agg(national_id, ','), string_agg(card_number, ',') FROM hr.employees, hr.payments",
    "SELECT format('%s', e), concat(e), concat_ws('|', e.national_id, e.email) FROM hr.employees e",
    "SELECT ROW(e.national_id, e.salary)::text FROM hr.employees e",
    "SELECT (e).national_id FROM (SELECT e FROM hr.employees e) s",
    "SELECT x.n FROM hr.employees e, LATERAL (SELECT e.national_id AS n) x",
    "SELECT * FROM (VALUES (1)) v(x), LATERAL (SELECT national_id, salary FROM hr.employees) l",
    "WITH c AS (SELECT national_id, email FROM hr.employees) SELECT * FROM c",
    "WITH RECURSIVE r(n, v) AS (SELECT 1, national_id FROM hr.employees UNION ALL SELECT n + 1, v FROM r WHERE n < 2) "
    "SELECT * FROM r",
    "WITH c AS MATERIALIZED (SELECT * FROM hr.payments) SELECT card_number FROM c",
    "SELECT national_id FROM hr.employees UNION SELECT 'x'",
    "SELECT national_id FROM hr.employees UNION ALL SELECT email FROM hr.employees",
    "SELECT national_id FROM hr.employees INTERSECT SELECT national_id FROM hr.employees",
    "SELECT email FROM hr.employees EXCEPT SELECT 'nobody'",
    "SELECT (SELECT national_id FROM hr.employees WHERE id = 1)",
    "SELECT (SELECT max(card_number) FROM hr.payments), (SELECT min(email) FROM hr.employees)",
    "SELECT ARRAY(SELECT national_id FROM hr.employees)",
    "SELECT DISTINCT national_id FROM hr.employees",
    "SELECT DISTINCT ON (email) email, national_id FROM hr.employees ORDER BY email",
    "SELECT national_id, count(*) FROM hr.employees GROUP BY 1",
    "SELECT max(salary), sum(salary), avg(salary), max(national_id), min(email) FROM hr.employees",
    "SELECT id, first_value(national_id) OVER (ORDER BY id), lag(email) OVER w FROM hr.employees "
    "WINDOW w AS (ORDER BY id)",
    "SELECT national_id FROM ONLY hr.employees",
    "SELECT employees.national_id FROM hr.employees",
    "SELECT hr.employees.national_id FROM hr.employees",
    "SELECT \"national_id\" FROM \"hr\".\"employees\"",
    "SELECT U&\"nation\\0061l_id\" FROM U&\"\\0068r\".employees",
    "SELECT national_id /* comment */ FROM hr.employees -- trailing",
    "SELECT $q$x$q$, national_id FROM hr.employees",
    "SELECT e.* FROM hr.employees AS e(a, b, c, d, f, g)",
    "SELECT d, c FROM hr.employees AS e(a, b, c, d, f, g)",
    "SELECT national_id FROM hr.employees FETCH FIRST 1 ROWS ONLY",
    "SELECT card_number FROM hr.payments p JOIN hr.employees e ON e.id = p.employee_id",
    "SELECT p.card_number FROM hr.payments p WHERE p.card_number = (SELECT max(card_number) FROM hr.payments)",
    "SELECT * FROM hr.employees NATURAL JOIN (SELECT 1 AS id) x",
    "SELECT * FROM hr.staff",
    "SELECT national_id, salary, email FROM staff",
    "SELECT s::text FROM hr.staff s",
    "SELECT xmlelement(name x, national_id)::text FROM hr.employees",
    "SELECT jsonb_build_object('n', national_id, 's', salary) FROM hr.employees",
    "SELECT json_build_array(card_number) FROM hr.payments",
    "SELECT national_id FROM hr.employees WHERE national_id IS NOT NULL",
    "SELECT CASE WHEN id = 1 THEN national_id ELSE email END FROM hr.employees",
    "SELECT coalesce(salary::text, national_id) FROM hr.employees",
    "SELECT national_id::bytea FROM hr.employees",
    "SELECT national_id COLLATE \"C\" FROM hr.employees",
    "SELECT regexp_replace(national_id, '[^0-9]', '', 'g') FROM hr.employees",
    "SELECT split_part(email, '@', 1) FROM hr.employees",
    "SELECT to_tsvector('simple', national_id)::text FROM hr.employees",
    "SELECT unnest(ARRAY[national_id, email]) FROM hr.employees",
    "SELECT * FROM hr.employees e, LATERAL unnest(ARRAY[e.national_id]) u",
    "SELECT * FROM ROWS FROM (unnest(ARRAY(SELECT national_id FROM hr.employees))) r",
    "SELECT (SELECT e2.national_id FROM hr.employees e2 WHERE e2.id = e1.id) FROM hr.employees e1",
    "SELECT national_id FROM hr.employees WHERE id IN (SELECT employee_id FROM hr.payments)",
    "SELECT grouping(national_id), national_id FROM hr.employees GROUP BY ROLLUP (national_id)",
    "SELECT mode() WITHIN GROUP (ORDER BY national_id), percentile_disc(0.5) WITHIN GROUP (ORDER BY salary) "
    "FROM hr.employees",
    "SELECT national_id FROM hr.employees FOR SHARE",
    "SELECT md5(national_id), sha256(convert_to(email, 'UTF8')) FROM hr.employees",
    "EXPLAIN SELECT national_id FROM hr.employees WHERE national_id = 'x'",
    "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM hr.employees",
    "SELECT '\\' , $x$ ' ; SELECT national_id FROM hr.employees; -- $x$",
]


@pytest.mark.parametrize("sql", MASKED_READS)
def test_masked_columns_never_leave_raw(agent: RawClient, sql: str) -> None:
    assert_no_leak(agent, sql)


# ---- inference on masked values: predicates, ordering, grouping see masked values only -----------------

# (sql, the only answer consistent with the masked values; raw values would give another answer)
INFERENCE = [
    ("SELECT count(*) FROM hr.employees WHERE salary > 100000", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE salary < 100000", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE salary BETWEEN 123456 AND 123458", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id LIKE '%111%'", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id ILIKE 'rawnid%'", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id ~ '^RAWNID-1'", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id SIMILAR TO 'RAW%'", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE email LIKE 'ada%'", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE position('rawmail' in email) > 0", b"0"),
    ("SELECT count(*) FROM hr.payments WHERE card_number LIKE 'RAW%'", b"0"),
    ("SELECT count(*) FROM hr.payments WHERE substr(card_number, 8, 1) = '4'", b"0"),
    ("SELECT count(*) FROM hr.payments WHERE starts_with(card_number, 'RAWCARD4')", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE length(national_id) = 18", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id > 'RAWNID-2'", b"2"),  # '[masked]' sorts after 'R'
    ("SELECT count(*) FROM hr.employees WHERE national_id::text < 'RAWNID-2'", b"0"),
    ("SELECT array_agg(id ORDER BY salary, id)::text FROM hr.employees", b"{1,2}"),
    ("SELECT array_agg(id ORDER BY national_id DESC, id)::text FROM hr.employees", b"{1,2}"),
    ("SELECT string_agg(id::text, ',' ORDER BY card_number DESC, id) FROM hr.payments", b"2,1"),
    ("SELECT count(*) FROM hr.employees a JOIN hr.employees b ON a.national_id < b.national_id", b"0"),
    ("SELECT count(*) FROM hr.employees a JOIN hr.employees b ON a.salary < b.salary", b"0"),
    ("SELECT count(DISTINCT national_id) FROM hr.employees", b"1"),
    ("SELECT count(DISTINCT salary) FROM hr.employees", b"0"),
    ("SELECT count(*) FROM (SELECT national_id FROM hr.employees GROUP BY national_id) g", b"1"),
    ("SELECT count(*) FROM (SELECT DISTINCT national_id FROM hr.employees) g", b"1"),
    ("SELECT count(*) FROM hr.employees e WHERE e::text LIKE '%RAW%'", b"0"),
    ("SELECT count(*) FROM hr.employees e WHERE row_to_json(e)::text LIKE '%rawmail%'", b"0"),
    ("SELECT count(*) FROM hr.employees e WHERE to_jsonb(e) ->> 'salary' IS NOT NULL", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE EXISTS (SELECT 1 FROM hr.employees x WHERE x.salary > 100000)", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE id = (SELECT id FROM hr.employees ORDER BY salary DESC NULLS LAST, "
     "id DESC LIMIT 1)", b"1"),
    ("WITH c AS (SELECT * FROM hr.employees) SELECT count(*) FROM c WHERE salary > 100000", b"0"),
    ("SELECT count(*) FROM (SELECT salary FROM hr.employees UNION ALL SELECT NULL) s WHERE salary > 100000", b"0"),
    ("SELECT count(*) FROM hr.employees e, LATERAL (SELECT e.salary AS s) x WHERE x.s > 100000", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE national_id IN (SELECT national_id FROM hr.employees WHERE id = 1)",
     b"2"),
    ("SELECT count(*) FROM hr.staff WHERE salary > 100000", b"0"),
    ("SELECT count(*) FROM hr.staff WHERE national_id LIKE 'RAW%'", b"0"),
    ("SELECT count(*) FROM hr.employees GROUP BY salary > 100000", b"2"),
    ("SELECT count(*) FROM hr.employees HAVING max(salary) > 100000", None),
    ("SELECT sum(CASE WHEN national_id LIKE 'RAWNID-1%' THEN 1 ELSE 0 END) FROM hr.employees", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE salary IS NOT NULL", b"0"),
    ("SELECT count(*) FROM hr.employees WHERE salary::text LIKE '1%'", b"0"),
    ("SELECT count(*) FROM hr.employees e JOIN hr.payments p ON p.card_number LIKE '%' || e.badge::text", b"0"),
    ("SELECT rank FROM (SELECT id, rank() OVER (ORDER BY salary DESC NULLS LAST) FROM hr.employees) r WHERE id = 2",
     b"1"),
]


@pytest.mark.parametrize(("sql", "safe"), INFERENCE)
def test_predicates_on_masked_columns_see_only_masked_values(agent: RawClient, sql: str, safe: bytes | None) -> None:
    for mode, frames, data in both_ways(agent, sql):
        assert not leaks(data, sql)
        if error_of(frames) is not None:
            continue  # refusing the statement is safe too
        got = [r[0] for r in rows_of(frames)]
        expected = [] if safe is None else [safe]
        assert got == expected, f"{mode}: {sql!r} answered {got}, raw values decided it"


# error oracles: a statement that fails only for some raw value must behave the same for any guess
ORACLE_PAIRS = [
    ("SELECT CASE WHEN national_id LIKE 'RAWNID-1%' THEN 1 / (id - id) ELSE 0 END FROM hr.employees",
     "SELECT CASE WHEN national_id LIKE 'NOPE%' THEN 1 / (id - id) ELSE 0 END FROM hr.employees"),
    ("SELECT 1 / (salary - 123457) FROM hr.employees", "SELECT 1 / (salary - 1) FROM hr.employees"),
    ("SELECT CASE WHEN salary > 100000 THEN 'x'::int END FROM hr.employees",
     "SELECT CASE WHEN salary > 999999999 THEN 'x'::int END FROM hr.employees"),
    ("SELECT CASE WHEN email LIKE 'ada%' THEN pg_sleep(0)::text::int END FROM hr.employees",
     "SELECT CASE WHEN email LIKE 'zzz%' THEN pg_sleep(0)::text::int END FROM hr.employees"),
    ("SELECT count(*) FROM hr.payments WHERE CASE WHEN card_number LIKE 'RAWCARD4%' THEN 1 / (id - id) = 1 END",
     "SELECT count(*) FROM hr.payments WHERE CASE WHEN card_number LIKE 'NOPE%' THEN 1 / (id - id) = 1 END"),
]


@pytest.mark.parametrize(("guess", "control"), ORACLE_PAIRS)
def test_error_oracles_on_masked_values_answer_alike(agent: RawClient, guess: str, control: str) -> None:
    for (_, frames_g, data_g), (_, frames_c, _) in zip(both_ways(agent, guess), both_ways(agent, control),
                                                      strict=True):
        assert not leaks(data_g, guess)
        assert (error_of(frames_g) is None) == (error_of(frames_c) is None), (error_of(frames_g), error_of(frames_c))
        if error_of(frames_g) is None:
            assert rows_of(frames_g) == rows_of(frames_c)


# ---- error messages that would echo a raw value ------------------------------------------------------

ERROR_ECHOES = [
    "SELECT national_id::int FROM hr.employees",
    "SELECT email::int FROM hr.employees",
    "SELECT card_number::bigint FROM hr.payments",
    "SELECT card_number::bigint / 0 FROM hr.payments",
    "SELECT national_id::date FROM hr.employees",
    "SELECT national_id::json FROM hr.employees",
    "SELECT national_id::uuid FROM hr.employees",
    "SELECT email::inet FROM hr.employees",
    "SELECT salary::text::int / 0 FROM hr.employees",
    "SELECT (national_id || 'x')::int FROM hr.employees",
    "SELECT e::text::int FROM hr.employees e",
    "SELECT row_to_json(e)::text::int FROM hr.employees e",
    "SELECT string_agg(national_id, ',')::int FROM hr.employees",
    "SELECT to_number(national_id, '999') FROM hr.employees",
    "SELECT to_date(email, 'YYYY-MM-DD') FROM hr.employees",
    "SELECT national_id::regclass FROM hr.employees",
    "SELECT national_id::regproc FROM hr.employees",
    "SELECT jsonb_path_query('{}', national_id::jsonpath) FROM hr.employees",
    "SELECT xmlparse(document national_id) FROM hr.employees",
    "SELECT ('{' || email || '}')::int[] FROM hr.employees",
    "SELECT make_date(1, 1, 1) + national_id::interval FROM hr.employees",
    "SELECT 1 FROM hr.employees WHERE national_id::int = 1",
    "SELECT 1 FROM hr.employees ORDER BY email::numeric",
    "SELECT count(*) FROM hr.employees GROUP BY national_id::int",
    "SELECT (SELECT card_number FROM hr.payments)",
    "SELECT * FROM hr.employees WHERE id = (SELECT national_id FROM hr.employees LIMIT 1)::int",
    "SELECT national_id::int FROM hr.staff",
    "WITH c AS (SELECT email FROM hr.employees) SELECT email::int FROM c",
    "SELECT CASE WHEN id > 0 THEN national_id::int END FROM hr.employees",
    "SELECT lpad(national_id, 3)::int FROM hr.employees",
    "SELECT convert_from(convert_to(national_id, 'UTF8'), 'UTF8')::int FROM hr.employees",
    "SELECT national_id::varchar(3)::int FROM hr.employees",
    "SELECT secret::int FROM hr.secrets",
    "SELECT secret::int FROM vault.keys",
    "SELECT secret::int FROM hr.secret_view",
]


@pytest.mark.parametrize("sql", ERROR_ECHOES)
def test_errors_do_not_echo_raw_values(agent: RawClient, sql: str) -> None:
    assert_no_leak(agent, sql)


# ---- catalog leaks: statistics, definitions, comments, defaults ------------------------------------------

CATALOG = [
    "SELECT most_common_vals::text, histogram_bounds::text FROM pg_stats WHERE schemaname = 'hr'",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'employees'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname = 'national_id'",
    "SELECT histogram_bounds::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname = 'salary'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'payments' "
    "AND attname = 'card_number'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'secrets' "
    "AND attname = 'secret'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'vault' AND tablename = 'keys' "
    "AND attname = 'secret'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'staff' "
    "AND attname = 'national_id'",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'employees' AND attname = 'name' "
    "AND schemaname = 'hr' OR true",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname IN ('name', 'national_id')",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname = 'name' UNION ALL SELECT most_common_vals::text FROM pg_stats",
    "SELECT most_common_vals::text FROM pg_catalog.pg_stats s WHERE (s.schemaname, s.tablename, s.attname) = "
    "('hr', 'employees', 'national_id')",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname = lower('NATIONAL_ID')",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname ~ '^nat'",
    "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname <> 'name'",
    "WITH s AS (SELECT * FROM pg_stats) SELECT most_common_vals::text FROM s WHERE schemaname = 'hr' "
    "AND tablename = 'employees' AND attname = 'name'",
    "SELECT most_common_vals::text FROM (SELECT * FROM pg_stats WHERE schemaname = 'hr' AND tablename = 'employees' "
    "AND attname = 'national_id') s",
    "SELECT s::text FROM pg_stats s WHERE schemaname = 'hr' AND tablename = 'employees' AND attname = 'email'",
    "SELECT row_to_json(s) FROM pg_stats s",
    "SELECT stavalues1::text FROM pg_statistic",
    "SELECT stavalues1::text FROM pg_catalog.pg_statistic WHERE starelid = 'hr.employees'::regclass",
    "SELECT * FROM pg_stats_ext",
    "SELECT * FROM pg_stats_ext_exprs",
    "SELECT stxdmcv::text FROM pg_statistic_ext_data",
    "SELECT prosrc FROM pg_proc WHERE prosrc LIKE '%RAW%'",
    "SELECT definition FROM pg_views WHERE schemaname IN ('hr', 'vault')",
    "SELECT definition FROM pg_views",
    "SELECT pg_get_viewdef('vault.literal_view'::regclass)",
    "SELECT pg_get_viewdef('vault.literal_view')",
    "SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE relkind = 'v'",
    "SELECT view_definition FROM information_schema.views",
    "SELECT column_default FROM information_schema.columns WHERE table_name = 'secrets'",
    "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef",
    "SELECT pg_get_constraintdef(oid) FROM pg_constraint",
    "SELECT check_clause FROM information_schema.check_constraints",
    "SELECT obj_description('hr.secrets'::regclass)",
    "SELECT obj_description(c.oid) FROM pg_class c",
    "SELECT description FROM pg_description",
    "SELECT col_description('vault.keys'::regclass, 2)",
    "SELECT ev_action::text FROM pg_rewrite",
    "SELECT query FROM pg_stat_activity",
    "SELECT * FROM pg_stat_activity",
    "SELECT pg_get_functiondef(p.oid) FROM pg_proc p WHERE proname = 'nextval'",
    "SELECT * FROM pg_catalog.pg_stat_user_tables",
    "SELECT relname, reltuples FROM pg_class WHERE relnamespace = 'hr'::regnamespace",
    "SELECT * FROM information_schema.columns WHERE table_schema = 'hr'",
]


@pytest.mark.parametrize("sql", CATALOG)
def test_catalog_does_not_show_raw_values(agent: RawClient, sql: str) -> None:
    assert_no_leak(agent, sql)


def test_catalog_of_permitted_plain_columns_still_answers(agent: RawClient) -> None:
    frames, _ = run(agent, Query("SELECT histogram_bounds::text FROM pg_stats WHERE schemaname = 'hr' "
                                 "AND tablename = 'employees' AND attname = 'badge'"))
    assert rows_of(frames) == [[b"{4711,4712}"]]


# ---- denied tables and schemas, however they are spelled -----------------------------------------------

DENIED_READS = [
    "SELECT * FROM hr.secrets",
    "SELECT * FROM secrets",
    "SELECT * FROM \"hr\".\"secrets\"",
    "SELECT * FROM HR.SECRETS",
    "SELECT * FROM hr . secrets",
    "SELECT * FROM hr/**/./**/secrets",
    "SELECT * FROM U&\"hr\".U&\"secr\\0065ts\"",
    "SELECT * FROM U&\"!0068r\" UESCAPE '!' . secrets",
    "TABLE hr.secrets",
    "TABLE secrets",
    "SELECT * FROM ONLY hr.secrets",
    "SELECT secret FROM hr.secrets s",
    "SELECT (SELECT secret FROM hr.secrets)",
    "SELECT count(*) FROM hr.employees WHERE EXISTS (SELECT 1 FROM hr.secrets WHERE secret LIKE 'RAW%')",
    "WITH s AS (SELECT * FROM hr.secrets) SELECT * FROM s",
    "SELECT * FROM hr.employees, LATERAL (SELECT secret FROM hr.secrets) s",
    "SELECT 1 UNION SELECT secret FROM hr.secrets",
    "SELECT * FROM hr.secret_view",
    "SELECT * FROM hr.vault_view",
    "SELECT * FROM vault.keys",
    "SELECT * FROM \"vault\".keys",
    "SELECT * FROM vault.literal_view",
    "SELECT secret FROM vault.keys",
    "SELECT 1; SELECT * FROM hr.secrets",
    "SELECT * FROM hr.secrets; SELECT 1",
    "COPY hr.secrets TO STDOUT",
    "COPY (SELECT * FROM hr.secrets) TO STDOUT",
    "COPY (SELECT * FROM hr.secret_view) TO STDOUT",
    "COPY vault.keys TO STDOUT",
    "SELECT row_to_json(s) FROM hr.secrets s",
    "SELECT query_to_xml('select * from hr.secrets', true, false, '')",
    "SELECT table_to_xml('hr.secrets', true, false, '')",
    "SELECT schema_to_xml('vault', true, false, '')",
    "SELECT database_to_xml(true, false, '')",
    "SELECT * FROM ts_stat('SELECT to_tsvector(''simple'', secret) FROM hr.secrets')",
    "SELECT cursor_to_xml('c', 10, false, false, '')",
    "SELECT xpath('/', query_to_xml('select * from vault.keys', true, false, ''))",
    "SELECT pg_read_file('/etc/hostname')",
    "SELECT pg_read_binary_file('/etc/hostname')",
    "SELECT pg_ls_dir('.')",
    "SELECT dblink('dbname=postgres', 'select secret from hr.secrets')",
    "SELECT hstore(e) FROM hr.employees e",
    "EXPLAIN ANALYZE SELECT * FROM hr.secrets",
    "DECLARE c CURSOR FOR SELECT * FROM hr.secrets",
    "PREPARE ps AS SELECT * FROM hr.secrets",
]


@pytest.mark.parametrize("sql", DENIED_READS)
def test_denied_tables_are_refused(agent: RawClient, sql: str) -> None:
    assert_denied(agent, sql)


# ---- writes through a read-only rule --------------------------------------------------------------------

AGENT_WRITES = [
    "SELECT nextval('hr.audit_probe_id_seq')",
    "SELECT * FROM nextval('hr.audit_probe_id_seq')",
    "VALUES (nextval('hr.audit_probe_id_seq'))",
    "SELECT \"nextval\"('hr.audit_probe_id_seq'::regclass)",
    "SELECT pg_catalog.nextval('hr.audit_probe_id_seq')",
    "SELECT NEXTVAL(U&'hr.audit_probe_id_seq')",
    "SELECT id FROM hr.tasks WHERE nextval('hr.audit_probe_id_seq') > 0",
    "SELECT pg_catalog.setval('hr.audit_probe_id_seq', 100)",
    "SELECT (SELECT nextval('hr.audit_probe_id_seq'))",
    "WITH n AS (SELECT nextval('hr.audit_probe_id_seq')) SELECT * FROM n",
    "WITH d AS (DELETE FROM hr.tasks WHERE id = 1 RETURNING id) SELECT count(*) FROM d",
    "WITH u AS (UPDATE hr.tasks SET state = 'x' WHERE id = 2 RETURNING id) SELECT * FROM u",
    "WITH i AS (INSERT INTO hr.tasks VALUES (99, 'open', 'x') RETURNING *) SELECT * FROM i",
    "WITH i AS (INSERT INTO hr.audit_probe (note) VALUES ('x') RETURNING *) SELECT 1",
    "INSERT INTO hr.tasks VALUES (99, 'open', 'x')",
    "UPDATE hr.tasks SET state = 'x' WHERE id = 3",
    "INSERT INTO hr.audit_probe (note) VALUES ('x') RETURNING (SELECT national_id FROM hr.employees LIMIT 1)",
    "SELECT * FROM hr.tasks FOR UPDATE",
    "SELECT * FROM hr.tasks FOR NO KEY UPDATE",
    "SELECT * FROM hr.tasks FOR KEY SHARE NOWAIT",
    "SELECT * FROM hr.tasks WHERE id = 1 FOR UPDATE SKIP LOCKED",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock(2)",
    "SELECT pg_advisory_lock_shared(3)",
    "SELECT lo_import('/etc/hostname')",
    "SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT lo_unlink(1)",
    "SELECT pg_notify('a', 'b')",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT pg_stat_reset()",
    "SELECT pg_switch_wal()",
    "SELECT pg_create_restore_point('x')",
    "SELECT pg_logical_emit_message(false, 'x', 'y')",
    "SELECT pg_create_logical_replication_slot('s', 'test_decoding')",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('search_path', 'vault', false)",
    "SELECT pg_catalog.set_config('role', 'postgres', true)",
    "SELECT query_to_xml('delete from hr.tasks returning id', true, false, '')",
    "SELECT query_to_xml('select nextval(''hr.audit_probe_id_seq'')', true, false, '')",
    "SELECT dblink_exec('dbname=postgres', 'drop table hr.tasks')",
    "DO $$ BEGIN EXECUTE 'DROP TABLE hr.tasks'; END $$",
    "DO $$ BEGIN PERFORM nextval('hr.audit_probe_id_seq'); END $$",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT national_id FROM hr.employees LIMIT 1); END $$",
    "DO LANGUAGE plpgsql $body$ BEGIN INSERT INTO hr.tasks VALUES (98, 'open', 'x'); END $body$",
    "EXPLAIN ANALYZE SELECT nextval('hr.audit_probe_id_seq')",
    "EXPLAIN ANALYZE INSERT INTO hr.tasks VALUES (97, 'open', 'x')",
    "EXPLAIN ANALYZE UPDATE hr.tasks SET note = 'x' WHERE id = 4",
    "COPY hr.tasks FROM STDIN",
    "COPY hr.employees TO '/tmp/pgw-attack-out'",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "SELECT 1; INSERT INTO hr.tasks VALUES (96, 'open', 'x')",
    "COMMIT; INSERT INTO hr.tasks VALUES (95, 'open', 'x')",
    "BEGIN READ WRITE",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "CALL hr.nothing()",
    "LOAD 'auto_explain'",
    "CHECKPOINT",
    "VACUUM hr.tasks",
    "ANALYZE hr.tasks",
    "CLUSTER hr.tasks",
    "REFRESH MATERIALIZED VIEW hr.staff",
    "SELECT txid_current(), pg_current_xact_id(); INSERT INTO hr.tasks VALUES (94, 'open', 'x')",
    "CREATE TEMP TABLE t AS SELECT * FROM hr.employees; SELECT 1",
    "SELECT * INTO TEMP t2 FROM hr.employees; SELECT 1",
    "SELECT 1; DROP TABLE hr.tasks",
    "SELECT 1; CREATE TABLE hr.x(i int)",
    "SELECT 1; TRUNCATE hr.tasks",
    "SELECT 1; ALTER TABLE hr.tasks ADD COLUMN z int",
    "SELECT 1; GRANT ALL ON hr.secrets TO PUBLIC",
    "SELECT 1; CREATE FUNCTION hr.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SELECT 1; CREATE OR REPLACE VIEW hr.staff AS SELECT 1 AS id",
    "BEGIN; DROP TABLE hr.tasks; COMMIT",
    "SELECT 1 \\; DROP TABLE hr.tasks",
]


@pytest.mark.parametrize("sql", AGENT_WRITES)
def test_writes_through_read_only_rule_do_not_take_effect(agent: RawClient, unchanged: None, sql: str) -> None:
    assert_denied(agent, sql)
    run(agent, Query("ROLLBACK"))


# ---- session state: roles, settings, search_path, start-up packet ------------------------------------------

SESSION_CHANGES = [
    "SET ROLE postgres",
    "SET ROLE NONE",
    "RESET ROLE",
    "SET role TO DEFAULT",
    "SET LOCAL ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET SESSION AUTHORIZATION",
    "SET search_path = vault",
    "SET search_path TO vault, hr",
    "SET LOCAL search_path TO vault",
    "RESET search_path",
    "SET default_transaction_read_only = off",
    "SET default_transaction_read_only TO DEFAULT",
    "RESET default_transaction_read_only",
    "SET transaction_read_only = off",
    "SET standard_conforming_strings = off",
    "SET client_encoding = 'SJIS'",
    "SET row_security = off",
    "SET session_replication_role = replica",
    "SET log_statement = 'all'",
    "SET auto_explain.log_min_duration = 0",
    "SET \"default_transaction_read_only\" = off",
    "SET default_transaction_read_only = 'off'; SELECT 1",
    "SELECT 1; SET ROLE postgres",
]


@pytest.mark.parametrize("sql", SESSION_CHANGES)
def test_pinned_session_settings_cannot_change(agent: RawClient, sql: str) -> None:
    assert_denied(agent, sql)
    frames, _ = run(agent, Query("SELECT current_setting('default_transaction_read_only'), "
                                 "current_setting('search_path'), current_setting('standard_conforming_strings'), "
                                 "current_setting('row_security')"))
    assert rows_of(frames) == [[b"on", b"hr", b"on", b"on"]]


@pytest.mark.parametrize("sql", ["RESET ALL", "DISCARD ALL", "DISCARD PLANS", "SET plan_cache_mode = force_generic_plan",
                                 "BEGIN; SET LOCAL statement_timeout = 1000; COMMIT"])
def test_session_resets_keep_the_pins(agent: RawClient, sql: str) -> None:
    run(agent, Query(sql))
    frames, _ = run(agent, Query("SELECT current_setting('default_transaction_read_only'), "
                                 "current_setting('search_path')"))
    assert rows_of(frames) == [[b"on", b"hr"]]
    assert_denied(agent, "SELECT * FROM keys")
    assert_denied(agent, "SELECT nextval('hr.audit_probe_id_seq')")
    assert_no_leak(agent, MASKED)


STARTUP_PARAMS = [
    {"options": "-c default_transaction_read_only=off"},
    {"options": "-c search_path=vault"},
    {"options": "-c default_transaction_read_only=off -c search_path=vault"},
    {"options": "--search_path=vault"},
    {"options": "-csearch_path=vault"},
    {"options": "-c role=postgres"},
    {"options": "-c session_authorization=postgres"},
    {"options": "-c standard_conforming_strings=off"},
    {"options": "-c row_security=off"},
    {"options": "-c\\ search_path=vault"},
    {"search_path": "vault"},
    {"default_transaction_read_only": "off"},
    {"standard_conforming_strings": "off"},
    {"role": "postgres"},
    {"session_authorization": "postgres"},
    {"client_encoding": "SJIS"},
    {"replication": "database"},
    {"application_name": "x", "options": "-c search_path=vault,hr"},
]


@pytest.mark.parametrize("params", STARTUP_PARAMS)
def test_startup_packet_cannot_unpin_settings(attack_proxy: RunningProxy, keys: Keys, params: dict) -> None:
    client = raw(attack_proxy, keys, params=params)
    try:
        assert not leaks(bytes(client.received))
        if client.startup[-1][0] != ord("Z"):
            assert error_of(client.startup) is not None  # refused at start-up: safe
            return
        frames, _ = run(client, Query("SELECT current_setting('default_transaction_read_only'), "
                                      "current_setting('search_path'), current_setting('standard_conforming_strings'),"
                                      " current_user = session_user"))
        assert rows_of(frames) == [[b"on", b"hr", b"on", b"t"]]
        assert_denied(client, "SELECT * FROM keys")
    finally:
        client.close()


def test_parameter_status_carries_no_secret(attack_proxy: RunningProxy, keys: Keys) -> None:
    client = raw(attack_proxy, keys, params={"application_name": "probe"})
    try:
        statuses = [p for k, p in client.startup if k == ord("S")]
        assert statuses and not any(leaks(p) for p in statuses)
        _frames, data = run(client, Query("SET application_name = 'x'"))
        assert not leaks(data)
    finally:
        client.close()


# ---- parser differentials: quoting, comments, dollar quotes ---------------------------------------------

HARMLESS_TEXT = [
    ("SELECT $$; DROP TABLE hr.tasks; $$", b"; DROP TABLE hr.tasks; "),
    ("SELECT $a$ $$ ; SELECT * FROM hr.secrets; $$ $a$", b" $$ ; SELECT * FROM hr.secrets; $$ "),
    ("SELECT 1 /* ; DROP TABLE hr.tasks */", b"1"),
    ("SELECT 1 /* /* */ ; DROP TABLE hr.tasks */", b"1"),
    ("SELECT 1 -- ; DROP TABLE hr.tasks", b"1"),
    ("SELECT 'a; DROP TABLE hr.tasks; --'", b"a; DROP TABLE hr.tasks; --"),
    ("SELECT 'it''s; SELECT * FROM hr.secrets'", b"it's; SELECT * FROM hr.secrets"),
    ("SELECT E'a\\\\'", b"a\\"),
    ("SELECT U&'d\\0061t\\+000061'", b"data"),
    ("SELECT \"name\" FROM hr.employees WHERE id = 1", b"Ada"),
    ("SELECT name FROM hr.employees WHERE name = '; DROP TABLE hr.tasks; --'", None),
    ("SELECT note FROM hr.tasks WHERE id = 1", b"task 1"),
    ("SELECT count(*) FROM hr.tasks WHERE state = 'open'", b"30"),
    ("SELECT e.name, p.amount FROM hr.employees e JOIN hr.payments p ON p.employee_id = e.id WHERE e.id = 2", b"Ben"),
    ("SELECT '\\' , $x$ ' ; SELECT * FROM hr.secrets; -- $x$", b"\\"),
]


@pytest.mark.parametrize(("sql", "first"), HARMLESS_TEXT)
def test_harmless_quoting_is_answered_correctly(agent: RawClient, unchanged: None, sql: str,
                                                first: bytes | None) -> None:
    for mode, frames, data in both_ways(agent, sql):
        assert error_of(frames) is None, f"FALSE DENIAL ({mode}): {sql!r}: {error_of(frames)}"
        assert not leaks(data, sql)
        rows = rows_of(frames)
        assert [r[0] for r in rows[:1]] == ([] if first is None else [first])


def test_backslash_quote_injection_stays_one_statement(agent: RawClient) -> None:
    for sql in ("SELECT E'\\'; SELECT * FROM hr.secrets; --'", "SELECT E'\\\\'; SELECT * FROM hr.secrets; --'"):
        for _, _frames, data in both_ways(agent, sql):
            assert not leaks(data, sql)


# ---- protocol-level tricks ---------------------------------------------------------------------------

def test_binary_result_formats_of_masked_columns_give_the_masked_values(agent: RawClient) -> None:
    """Masked columns arrive masked whatever format is asked (the masks run upstream; text and NULL have
    the same bytes in both formats); a whole-row value, whose binary form the gateway cannot read, is
    refused."""
    text_frames, _ = run(agent, Parse("", MASKED), Bind("", "", (), (), ()), Execute("", 0), Sync())
    assert error_of(text_frames) is None and rows_of(text_frames)
    for formats in ((1,), (0, 1, 0), (1, 0, 0), (0, 0, 1)):
        frames, data = run(agent, Parse("", MASKED), Bind("", "", (), (), formats), Execute("", 0), Sync())
        assert not leaks(data)
        assert error_of(frames) is None and rows_of(frames) == rows_of(text_frames)
    frames, data = run(agent, Parse("", "SELECT e FROM hr.employees e"), Bind("", "", (), (), (1,)),
                       Execute("", 0), Sync())
    assert not leaks(data) and "binary format" in (error_of(frames) or "")
    frames, data = run(agent, Parse("", "SELECT row_to_json(p)::jsonb FROM hr.payments p"), Bind("", "", (), (), (1,)),
                       Execute("", 0), Sync())
    assert not leaks(data)


def test_binary_results_of_plain_columns_still_work(agent: RawClient) -> None:
    frames, _ = run(agent, Parse("", "SELECT id FROM hr.employees ORDER BY id"), Bind("", "", (), (), (1,)),
                    Execute("", 0), Sync())
    assert rows_of(frames) == [[b"\0\0\0\1"], [b"\0\0\0\2"]]


def test_named_statements_portals_and_partial_execute(agent: RawClient) -> None:
    frames, data = run(agent, Parse("s1", "SELECT 1"), Parse("s2", MASKED), Bind("", "s1", (), (), ()),
                       Execute("", 0), Bind("pm", "s2", (), (), ()), Execute("pm", 1), Execute("pm", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Parse("", "SELECT 1"), Bind("", "", (), (), ()), Parse("", MASKED), Execute("", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Execute("nope", 0), Sync())
    assert error_of(frames) is not None
    frames, data = run(agent, Bind("", "never-parsed", (), (), ()), Execute("", 0), Sync())
    assert error_of(frames) is not None and not leaks(data)
    frames, data = run(agent, Parse("", "SELECT national_id FROM hr.employees WHERE national_id = $1"),
                       Bind("", "", (), (b"[masked]",), ()), Execute("", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Parse("", "SELECT 1"), Bind("", "", (), (), ()), Execute("", 0),
                       Query("SELECT * FROM hr.secrets"), Sync())
    assert not leaks(data)


def test_sql_prepared_statements_are_checked_and_masked(agent: RawClient) -> None:
    frames, data = run(agent, Query("PREPARE q AS " + MASKED))
    assert error_of(frames) is None
    frames, data = run(agent, Query("EXECUTE q"))
    assert not leaks(data) and len(rows_of(frames)) == 2
    frames, data = run(agent, Bind("", "q", (), (), ()), Execute("", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Bind("", "q", (), (), (1,)), Execute("", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Parse("p9", MASKED), Sync())
    frames, data = run(agent, Query("EXECUTE p9"))
    assert not leaks(data)
    frames, data = run(agent, Query("PREPARE q2(int) AS SELECT card_number FROM hr.payments WHERE id = $1"))
    frames, data = run(agent, Bind("", "q2", (), (b"1",), (1,)), Execute("", 0), Sync())
    assert not leaks(data)
    frames, data = run(agent, Query("EXECUTE q2(1)"))
    assert not leaks(data) and rows_of(frames) == [[b"*******************1111"]]


@pytest.mark.parametrize("fmt", [(), (1,)], ids=["text", "binary"])
def test_statement_name_swapped_by_sql_prepare(agent: RawClient, fmt: tuple[int, ...]) -> None:
    """Once a breach: the gateway kept its screen of a protocol-level name that SQL DEALLOCATE + PREPARE had
    swapped for a SELECT of masked columns. A name such a statement creates or drops is now forgotten when
    the statement is sent, so the Bind of it is refused."""
    run(agent, Parse("s1", "SELECT 1"), Sync())
    run(agent, Bind("", "s1", (), (), ()), Execute("", 0), Sync())
    run(agent, Query("DEALLOCATE s1"))
    run(agent, Query("PREPARE s1 AS " + MASKED))
    frames, data = run(agent, Bind("", "s1", (), (), fmt), Execute("", 0), Sync())
    assert not leaks(data), f"raw values returned: {leaks(data)}"
    assert error_of(frames) is not None
    frames, data = run(agent, Query("EXECUTE s1"))  # by SQL it is decided on its own, and masked
    assert not leaks(data) and error_of(frames) is None and len(rows_of(frames)) == 2
    run(agent, Query("DEALLOCATE ALL"))


RUN_S1 = (Bind("", "s1", (), (), ()), Execute("", 0), Sync())
NAME_SWAPS = {
    "dealloc-all": ([Parse("s1", "SELECT 1"), Sync()], RUN_S1, [Query("DEALLOCATE ALL")], [Query("PREPARE s1 AS " + MASKED)],
                    RUN_S1),
    "discard-all": ([Parse("s1", "SELECT 1"), Sync()], RUN_S1, [Query("DISCARD ALL")], [Query("PREPARE s1 AS " + MASKED)],
                    RUN_S1),
    "same-shape": ([Parse("s1", "SELECT id, name, badge FROM hr.employees"), Sync()], RUN_S1, [Query("DEALLOCATE s1")],
                   [Query("PREPARE s1 AS " + MASKED)], RUN_S1),
    "one-text": ([Parse("s1", "SELECT 1"), Sync()], RUN_S1, [Query("DEALLOCATE s1; PREPARE s1 AS " + MASKED)], RUN_S1),
    "card-keep-last": ([Parse("s1", "SELECT 'x'"), Sync()], RUN_S1, [Query("DEALLOCATE s1")],
                       [Query("PREPARE s1 AS SELECT card_number FROM hr.payments")], RUN_S1),
    "portal-by-declare": ([Query("BEGIN")], [Parse("", "SELECT g FROM generate_series(1, 3) g"), Bind("c", "", (), (), ()),
                                             Execute("c", 1), Sync()],
                          [Query("CLOSE c")], [Query("DECLARE c CURSOR FOR " + MASKED)], [Execute("c", 0), Sync()]),
}


@pytest.mark.parametrize("steps", list(NAME_SWAPS.values()), ids=list(NAME_SWAPS))
def test_name_swaps(agent: RawClient, steps) -> None:
    """Once a breach (every way SQL can swap what a screened protocol name means: DEALLOCATE [ALL],
    DISCARD ALL, CLOSE + DECLARE, in one text or several)."""
    for msgs in steps:
        run(agent, *msgs)
    assert not leaks(bytes(agent.received)), f"raw values returned: {leaks(bytes(agent.received))}"
    run(agent, Query("ROLLBACK"))
    run(agent, Query("DEALLOCATE ALL"))


def test_name_swap_pipelined_behind_the_swap_or_run_from_a_portal(agent: RawClient) -> None:
    """The Bind of the swapped name sent in the same packet as the swap (before its reply), and the swap
    itself run from a protocol portal (Parse of DEALLOCATE / PREPARE, executed later): refused either way."""
    run(agent, Parse("s1", "SELECT 1"), Sync())
    run(agent, *RUN_S1)
    agent.send(Query("DEALLOCATE s1; PREPARE s1 AS " + MASKED), *RUN_S1)
    frames = agent.read_until({ord("Z")}) + agent.read_until({ord("Z")})
    assert not leaks(bytes(agent.received)) and error_of(frames) is not None
    run(agent, Query("DEALLOCATE ALL"))
    run(agent, Parse("s1", "SELECT 1"), Sync())
    run(agent, *RUN_S1)
    run(agent, Parse("d", "DEALLOCATE s1"), Parse("p", "PREPARE s1 AS " + MASKED), Sync())
    run(agent, Bind("", "d", (), (), ()), Execute("", 0), Bind("", "p", (), (), ()), Execute("", 0), Sync())
    frames, _ = run(agent, *RUN_S1)
    assert not leaks(bytes(agent.received)) and error_of(frames) is not None
    run(agent, Query("DEALLOCATE ALL"))


def test_statement_name_swapped_without_a_prior_run_is_caught(agent: RawClient) -> None:
    for first in ("SELECT 1", "SELECT id, name, badge FROM hr.employees"):
        run(agent, Parse("s1", first), Sync())
        run(agent, Query("DEALLOCATE s1; PREPARE s1 AS " + MASKED))
        frames, data = run(agent, Bind("", "s1", (), (), ()), Execute("", 0), Sync())
        assert not leaks(data) and error_of(frames) is not None
        run(agent, Query("DEALLOCATE ALL"))


def test_cursors_declare_and_fetch(agent: RawClient, unchanged: None) -> None:
    assert error_of(run(agent, Query("BEGIN"))[0]) is None
    frames, data = run(agent, Query("DECLARE cur CURSOR FOR " + MASKED))
    assert error_of(frames) is None
    frames, data = run(agent, Query("FETCH ALL cur"))
    assert not leaks(data) and len(rows_of(frames)) == 2
    frames, data = run(agent, Query("DECLARE bcur BINARY CURSOR FOR " + MASKED))
    frames, data = run(agent, Query("FETCH ALL bcur"))
    assert not leaks(data)
    run(agent, Query("ROLLBACK"))
    run(agent, Query("BEGIN"))
    frames, data = run(agent, Query("DECLARE h CURSOR WITH HOLD FOR " + MASKED))
    run(agent, Query("COMMIT"))
    frames, data = run(agent, Query("FETCH ALL h"))
    assert not leaks(data)
    run(agent, Query("CLOSE ALL"))
    run(agent, Query("BEGIN"))
    run(agent, Parse("", MASKED), Bind("pp", "", (), (), ()), Execute("pp", 1), Sync())
    frames, data = run(agent, Query("FETCH ALL pp"))
    assert not leaks(data)
    run(agent, Query("ROLLBACK"))
    run(agent, Query("BEGIN"))
    run(agent, Query("DECLARE c2 CURSOR FOR SELECT 1"))
    frames, data = run(agent, Query("MOVE ALL c2; FETCH c2"))
    assert not leaks(data)
    run(agent, Query("ROLLBACK"))


COPY_OUT = [
    "COPY (SELECT national_id, email, salary FROM hr.employees) TO STDOUT",
    "COPY hr.employees TO STDOUT",
    "COPY hr.employees (national_id) TO STDOUT CSV HEADER",
    "COPY hr.payments TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)",
    "COPY (SELECT e FROM hr.employees e) TO STDOUT",
    "COPY (SELECT row_to_json(p) FROM hr.payments p) TO STDOUT",
    "COPY (SELECT national_id, email FROM hr.employees) TO STDOUT (FORMAT binary)",
    "COPY hr.employees TO STDOUT WITH (FORMAT binary)",
    "COPY hr.staff TO STDOUT",
    "COPY (SELECT * FROM hr.staff) TO STDOUT",
    "COPY (WITH c AS (SELECT national_id FROM hr.employees) SELECT * FROM c) TO STDOUT",
    "COPY (SELECT national_id::int FROM hr.employees) TO STDOUT",
]


@pytest.mark.parametrize("sql", COPY_OUT)
def test_copy_out_is_masked(agent: RawClient, sql: str) -> None:
    assert_no_leak(agent, sql)


def test_psycopg_text_binary_pipeline_and_server_cursor(attack_proxy: RunningProxy, keys: Keys) -> None:
    with psycopg.connect(attack_proxy.dsn(keys.token()), autocommit=True) as conn:
        rows = conn.execute(MASKED + " ORDER BY id").fetchall()
        assert rows[0][0] == "[masked]" and rows[0][1] is None and rows[0][2].startswith("h:")
        assert conn.execute("SELECT card_number FROM hr.payments WHERE id = %s", [1]).fetchone() == (
            "*******************1111",)
        with conn.cursor(binary=True) as cur:
            try:
                cur.execute(MASKED)
                assert not any(leaks(repr(r).encode()) for r in cur.fetchall())
            except psycopg.Error as exc:
                assert not leaks(str(exc).encode())
        for _ in range(7):
            row = conn.execute("SELECT national_id FROM hr.employees WHERE id = %s", [1], prepare=True).fetchone()
            assert row == ("[masked]",)
        with conn.transaction(), conn.cursor("srv") as cur:
            cur.execute(MASKED)
            assert not any(leaks(repr(r).encode()) for r in cur.fetchall())
        with pytest.raises(psycopg.Error), conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT * FROM hr.secrets WHERE id = %s", [1])
        with conn.cursor() as cur, cur.copy("COPY hr.employees TO STDOUT") as copy:
            out = b"".join(bytes(x) for x in copy)
        assert not leaks(out) and b"[masked]" in out
        with pytest.raises(psycopg.Error) as info:
            conn.execute("SELECT national_id::int FROM hr.employees")
        assert not leaks(str(info.value).encode())
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_binary_client(attack_proxy: RunningProxy, keys: Keys) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def go() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=attack_proxy.port, user="agent", database="main",
                                     password=keys.token(), ssl=False)
        try:
            for sql in (MASKED, "SELECT card_number FROM hr.payments", "SELECT e FROM hr.employees e",
                        "SELECT row_to_json(e) FROM hr.employees e", "SELECT to_jsonb(p) FROM hr.payments p",
                        "SELECT array_agg(national_id) FROM hr.employees"):
                try:
                    rows = await conn.fetch(sql)
                except asyncpg.PostgresError as exc:
                    assert not leaks(str(exc).encode()), sql
                else:
                    assert not leaks(repr([tuple(r) for r in rows]).encode()), sql
            stmt = await conn.prepare("SELECT id FROM hr.employees WHERE id = $1")
            assert (await stmt.fetchrow(1))["id"] == 1
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM hr.secrets")
            with pytest.raises(asyncpg.PostgresError):
                await conn.fetch("SELECT nextval('hr.audit_probe_id_seq')")
            assert await conn.fetchval("SELECT count(*)::int FROM hr.employees") == 2
        finally:
            await conn.close()

    asyncio.run(go())


# ---- a writer laundering masked values into a table it may write -------------------------------------------

WRITER_LAUNDERING = [
    "INSERT INTO hr.tasks (id, state, note) SELECT 100 + id, 'open', national_id FROM hr.employees",
    "INSERT INTO hr.tasks (id, state, note) SELECT 100 + id, 'open', email FROM hr.employees",
    "INSERT INTO hr.tasks (id, state, note) SELECT 100 + id, 'open', salary::text FROM hr.employees",
    "INSERT INTO hr.tasks (id, state, note) SELECT 100 + id, 'open', e::text FROM hr.employees e",
    "INSERT INTO hr.tasks (id, state, note) VALUES (101, 'open', (SELECT national_id FROM hr.employees WHERE id = 1))",
    "UPDATE hr.tasks t SET note = e.national_id FROM hr.employees e WHERE t.id = e.id",
    "UPDATE hr.tasks SET note = (SELECT email FROM hr.employees WHERE id = 1) WHERE id = 1",
    "UPDATE hr.tasks SET note = (SELECT row_to_json(e)::text FROM hr.employees e WHERE id = 1) WHERE id = 1",
    "UPDATE hr.tasks t SET note = s.national_id FROM hr.staff s WHERE t.id = s.id",
    "WITH src AS (SELECT id, national_id FROM hr.employees) UPDATE hr.tasks t SET note = src.national_id "
    "FROM src WHERE t.id = src.id",
    "MERGE INTO hr.tasks t USING hr.employees e ON t.id = e.id WHEN MATCHED THEN UPDATE SET note = e.national_id",
    "MERGE INTO hr.tasks t USING (SELECT id + 100 AS id, email FROM hr.employees) e ON t.id = e.id "
    "WHEN NOT MATCHED THEN INSERT VALUES (e.id, 'open', e.email)",
    "INSERT INTO hr.tasks VALUES (1, 'open', 'x') ON CONFLICT (id) DO UPDATE SET note = "
    "(SELECT national_id FROM hr.employees WHERE id = 1)",
    "UPDATE hr.tasks SET note = 'x' WHERE id = 1 RETURNING (SELECT national_id FROM hr.employees WHERE id = 1)",
    "INSERT INTO hr.tasks VALUES (150, 'open', 'x') RETURNING (SELECT email FROM hr.employees WHERE id = 1)",
    "UPDATE hr.tasks t SET note = 'x' FROM hr.employees e WHERE t.id = e.id RETURNING e.national_id, e.salary",
    "DELETE FROM hr.tasks t USING hr.employees e WHERE t.id = e.id AND t.id = 1 RETURNING e.national_id",
    "UPDATE hr.tasks t SET note = 'x' FROM hr.payments p WHERE t.id = p.id RETURNING p.card_number",
]


@pytest.mark.parametrize("sql", WRITER_LAUNDERING)
def test_writer_cannot_launder_masked_values(attack_proxy: RunningProxy, keys: Keys, unchanged: None,
                                             sql: str) -> None:
    client = raw(attack_proxy, keys, WRITERS)
    try:
        assert error_of(run(client, Query("BEGIN"))[0]) is None
        _, data = run(client, Query(sql))
        assert not leaks(data, sql), f"the statement itself returned {leaks(data, sql)}"
        _frames, data = run(client, Query("SELECT note FROM hr.tasks"))
        assert not leaks(data), f"laundered into hr.tasks.note: {leaks(data)}"
        _frames, data = run(client, Query("COPY hr.tasks TO STDOUT"))
        assert not leaks(data)
    finally:
        run(client, Query("ROLLBACK"))
        client.close()


WRITER_ORACLES = [
    # each deletes / updates a row only if a raw value matches: under masking nothing may match
    "UPDATE hr.tasks t SET note = 'hit' FROM hr.employees e WHERE t.id = e.id AND e.salary > 100000",
    "UPDATE hr.tasks t SET note = 'hit' FROM hr.employees e WHERE t.id = e.id AND e.national_id LIKE 'RAWNID-1%'",
    "UPDATE hr.tasks SET note = 'hit' WHERE id = 1 AND EXISTS (SELECT 1 FROM hr.employees WHERE email LIKE 'ada%')",
    "UPDATE hr.tasks SET note = 'hit' WHERE id IN (SELECT id FROM hr.employees WHERE salary < 100000)",
    "INSERT INTO hr.tasks SELECT 200, 'open', 'hit' FROM hr.employees WHERE national_id LIKE '%111%'",
    "DELETE FROM hr.tasks t USING hr.employees e WHERE t.id = e.id AND e.salary > 100000",
]


@pytest.mark.parametrize("sql", WRITER_ORACLES)
def test_writer_predicates_on_masked_values_do_not_decide(attack_proxy: RunningProxy, keys: Keys, unchanged: None,
                                                          sql: str) -> None:
    client = raw(attack_proxy, keys, WRITERS)
    try:
        run(client, Query("BEGIN"))
        frames, data = run(client, Query(sql))
        assert not leaks(data, sql)
        if error_of(frames) is None:
            tags = [p for k, p in frames if k == ord("C")]
            assert tags and tags[-1].rstrip(b"\0").endswith(b" 0"), f"raw values decided the write: {tags}"
    finally:
        run(client, Query("ROLLBACK"))
        client.close()


WRITER_FORBIDDEN = [
    "UPDATE hr.employees SET name = national_id",
    "DELETE FROM hr.employees WHERE id = 99",
    "INSERT INTO hr.audit_probe (note) VALUES ('x')",
    "INSERT INTO hr.tasks SELECT 300, 'open', secret FROM hr.secrets",
    "UPDATE hr.tasks SET note = (SELECT secret FROM vault.keys LIMIT 1) WHERE id = 1",
    "WITH d AS (DELETE FROM hr.payments WHERE id = 99 RETURNING *) SELECT * FROM d",
    "UPDATE hr.tasks SET note = 'x' WHERE id = 1; UPDATE hr.employees SET name = 'x' WHERE id = 1",
    "SELECT 1; DROP TABLE hr.tasks",
    "UPDATE hr.tasks SET note = 'x' WHERE id = 1; DROP TABLE hr.tasks",
    "DO $$ BEGIN EXECUTE 'TRUNCATE hr.tasks'; END $$",
    "SELECT set_config('role', 'postgres', false)",
    "SET ROLE postgres",
    "COPY hr.tasks FROM PROGRAM 'id'",
]


@pytest.mark.parametrize("sql", WRITER_FORBIDDEN)
def test_writer_is_held_to_its_tables(attack_proxy: RunningProxy, keys: Keys, unchanged: None, sql: str) -> None:
    client = raw(attack_proxy, keys, WRITERS)
    try:
        assert_denied(client, sql)
    finally:
        run(client, Query("ROLLBACK"))
        client.close()


def test_writer_write_of_its_own_table_works(attack_proxy: RunningProxy, keys: Keys, attack_db: str) -> None:
    client = raw(attack_proxy, keys, WRITERS)
    try:
        run(client, Query("BEGIN"))
        frames, _ = run(client, Query("UPDATE hr.tasks SET note = 'done' WHERE id = 7"))
        assert error_of(frames) is None, f"FALSE DENIAL: {error_of(frames)}"
        frames, _ = run(client, Query("SELECT note FROM hr.tasks WHERE id = 7"))
        assert rows_of(frames) == [[b"done"]]
    finally:
        run(client, Query("ROLLBACK"))
        client.close()
    with psycopg.connect(attack_db) as conn:
        assert conn.execute("SELECT note FROM hr.tasks WHERE id = 7").fetchone() == ("task 7",)


# ---- approvals: held statements cannot be smuggled ------------------------------------------------------------

SMUGGLED_DDL = [
    "SELECT 1; DROP TABLE hr.tasks",
    "SELECT 1; DROP TABLE hr.tasks; SELECT 2",
    "DROP TABLE hr.tasks; SELECT 1",
    "SELECT 1;DROP TABLE hr.tasks",
    "/* x */ SELECT 1; /* y */ DROP TABLE hr.tasks",
    "SELECT $$x$$; DROP TABLE hr.tasks",
    "SELECT 1; CREATE TABLE hr.smuggled(i int)",
    "SELECT 1; CREATE INDEX ON hr.tasks(note)",
    "SELECT 1; ALTER TABLE hr.tasks DROP COLUMN note",
    "SELECT 1; CREATE VIEW hr.leak AS SELECT * FROM hr.secrets",
    "SELECT 1; CREATE OR REPLACE FUNCTION hr.f() RETURNS text LANGUAGE sql AS $$SELECT secret FROM hr.secrets$$",
    "BEGIN; CREATE TABLE hr.smuggled(i int); COMMIT",
    "DO $$ BEGIN EXECUTE 'CREATE TABLE hr.smuggled(i int)'; END $$",
    "DO $$ BEGIN EXECUTE format('DROP TABLE %I.%I', 'hr', 'tasks'); END $$",
    "DO $do$ BEGIN CREATE FUNCTION hr.g() RETURNS int LANGUAGE sql AS $f$SELECT 1$f$; END $do$",
    "SELECT 1; GRANT SELECT ON hr.secrets TO PUBLIC",
    "SELECT 1; COMMENT ON TABLE hr.tasks IS 'x'",
    "SELECT 1; SECURITY LABEL ON TABLE hr.tasks IS 'x'",
    "SELECT 1; CREATE EXTENSION dblink",
    "SELECT 1; ALTER SYSTEM SET default_transaction_read_only = off",
]


@pytest.mark.parametrize("sql", SMUGGLED_DDL)
def test_held_statements_cannot_ride_along(agent: RawClient, unchanged: None, sql: str) -> None:
    assert_denied(agent, sql)
    run(agent, Query("ROLLBACK"))


def test_writer_smuggled_ddl_is_refused(attack_proxy: RunningProxy, keys: Keys, unchanged: None) -> None:
    client = raw(attack_proxy, keys, WRITERS)
    try:
        for sql in ("UPDATE hr.tasks SET note = 'x' WHERE id = 1; DROP TABLE hr.tasks",
                    "BEGIN; UPDATE hr.tasks SET note = 'x' WHERE id = 1; CREATE TABLE hr.w(i int); COMMIT",
                    "WITH u AS (UPDATE hr.tasks SET note = 'x' WHERE id = 1 RETURNING 1) SELECT 1; TRUNCATE hr.tasks"):
            assert_denied(client, sql)
            run(client, Query("ROLLBACK"))
    finally:
        client.close()


HELD_ALONE = [
    "EXPLAIN ANALYZE CREATE TABLE hr.smuggled AS SELECT 1",
    "PREPARE d AS DELETE FROM hr.tasks",
    "EXPLAIN ANALYZE DELETE FROM hr.tasks",
]


@pytest.mark.parametrize("sql", HELD_ALONE)
def test_statement_sent_alone_is_held_or_refused_and_changes_nothing(attack_proxy: RunningProxy, keys: Keys,
                                                                     unchanged: None, sql: str) -> None:
    import time

    client = raw(attack_proxy, keys, timeout=0.2)
    try:
        client.send(Query(sql))
        deadline, frames = time.monotonic() + 1.0, []
        while time.monotonic() < deadline and not any(k == ord("Z") for k, _ in frames):
            try:
                data = client.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                break
            client.received += data
            client.frames.feed(data)
            frames += [(f.type, f.payload) for f in client.frames]
        assert not leaks(bytes(client.received))
        # refused, or held for an approver (only notices while it waits): nothing ran
        assert error_of(frames) is not None or all(k == ord("N") for k, _ in frames), frames
    finally:
        client.close()
