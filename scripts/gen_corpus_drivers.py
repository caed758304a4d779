#!/usr/bin/env python3
"""Generate tests/corpus/drivers.yaml: what PostgreSQL drivers send on their own
(connect, type introspection, transactions, cursors, COPY, LISTEN, two-phase commit).

End to end, run with the project venv:  .venv/bin/python scripts/gen_corpus_drivers.py

Starts a throwaway PostgreSQL (pgserver) with log_statement=all, creates a database
with an enum, a composite type, a domain, a range type and a table using them, then
drives three Python drivers through their typical API surface, each with its own
application_name, and reads the statements back from the server log:

* psycopg 3 (the project venv's): TypeInfo/EnumInfo/CompositeInfo/RangeInfo/
  MultirangeInfo.fetch, server-side binding, prepared statements, nested transactions,
  isolation/read-only/deferrable, server-side (named, scrollable, WITH HOLD) cursors,
  ClientCursor, COPY in/out, executemany and pipeline mode, psycopg.sql composition,
  LISTEN/NOTIFY, two-phase commit;
* psycopg2 and asyncpg, run from the throwaway venv /tmp/corpus_venv (created by the
  helper if missing): their introspection (register_composite/register_range/hstore
  lookup; asyncpg's type introspection for enum/composite/domain/range/arrays/jsonb
  codecs), transactions, cursors, COPY, executemany/execute_values, LISTEN, pool reset.

Two-phase commit statements fail on this server (max_prepared_transactions = 0); the
server logs a statement before running it, so their text is still captured.
Statements that differ only in literal values are kept once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_corpus_psql import (
    dedupe_by_shape,
    embedded_pg,
    ensure_tmp_venv,
    server_version,
    venv_versions,
    write_corpus,
)

SETUP_SQL = """
CREATE DATABASE drivers;
\\c drivers
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE address AS (street text, city text, zip varchar(10));
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE TABLE things (
    id serial PRIMARY KEY,
    name text NOT NULL,
    feeling mood DEFAULT 'ok',
    feelings mood[],
    home address,
    qty posint,
    span floatrange,
    spans floatmultirange,
    doc jsonb,
    created timestamptz DEFAULT now()
);
INSERT INTO things (name, feeling, feelings, home, qty, span, doc)
SELECT 'thing ' || g, 'happy', ARRAY['sad', 'happy']::mood[], ROW('Main St', 'Springfield', '12345')::address,
       g, floatrange(0, g), jsonb_build_object('n', g)
FROM generate_series(1, 30) g;
CREATE FUNCTION add_thing(p_name text, p_qty integer) RETURNS integer LANGUAGE sql
    AS $$ INSERT INTO things (name, qty) VALUES (p_name, p_qty) RETURNING id $$;
"""


def run_psycopg3(dsn: str) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.types import TypeInfo
    from psycopg.types.composite import CompositeInfo, register_composite
    from psycopg.types.enum import EnumInfo, register_enum
    from psycopg.types.json import Jsonb
    from psycopg.types.multirange import MultirangeInfo, register_multirange
    from psycopg.types.range import RangeInfo, register_range

    with psycopg.connect(dsn) as conn:
        TypeInfo.fetch(conn, "jsonb")
        TypeInfo.fetch(conn, "posint")
        register_enum(EnumInfo.fetch(conn, "mood"), conn)
        register_composite(CompositeInfo.fetch(conn, "address"), conn)
        register_range(RangeInfo.fetch(conn, "floatrange"), conn)
        register_multirange(MultirangeInfo.fetch(conn, "floatmultirange"), conn)
        conn.commit()
        conn.execute("SELECT * FROM things WHERE id = %s AND name LIKE %s", [1, "thing%"]).fetchall()
        conn.execute("SELECT %(doc)s::jsonb ->> 'n'", {"doc": Jsonb({"n": 1})}).fetchone()
        for i in range(6):  # prepared after the 5th execution (prepare_threshold)
            conn.execute("SELECT name FROM things WHERE qty = %s", [i + 1]).fetchone()
        conn.execute("SELECT count(*) FROM things WHERE feeling = %s", ["happy"], prepare=True)
        conn.rollback()
        with conn.transaction():
            conn.execute("UPDATE things SET qty = qty + 1 WHERE id = %s", [2])
            with conn.transaction():
                conn.execute("INSERT INTO things (name, qty) VALUES (%s, %s) RETURNING id", ["n1", 3])
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO things (name, qty) VALUES (%s, %s)", ["bad", -1])
            except psycopg.errors.CheckViolation:
                pass
        conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        conn.read_only = True
        conn.deferrable = True
        conn.execute("SELECT sum(qty) FROM things").fetchone()
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = False
        conn.deferrable = None
        conn.execute("SELECT 1").fetchone()
        conn.commit()
        conn.isolation_level = None
        with conn.transaction(), conn.cursor(name="big_scan", scrollable=True, withhold=True) as cur:
            cur.itersize = 10
            cur.execute("SELECT id, name, home FROM things ORDER BY id")
            cur.fetchmany(5)
            cur.scroll(0, "absolute")
            cur.fetchone()
            cur.scroll(-1)
            cur.fetchall()
        with conn.cursor(name="plain") as cur:
            cur.execute("SELECT * FROM things WHERE qty > %s", [3])
            for _ in cur:
                pass
        conn.commit()
        with psycopg.ClientCursor(conn) as cur:
            cur.execute(
                "SELECT * FROM things WHERE name = %s AND qty IN (%s, %s) AND doc @> %s",
                ["thing 1", 1, 2, Jsonb({"n": 1})],
            )
            cur.execute("SELECT %s::date, %s::numeric, %s, %s", ["2024-05-17", "1.5", None, True])
        with conn.cursor() as cur:
            with cur.copy("COPY things (name, qty) FROM STDIN") as cp:
                cp.write_row(["copied", 4])
            with cur.copy("COPY things (name, qty) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "int4"])
                cp.write_row(["copied-bin", 5])
            with cur.copy(
                "COPY (SELECT id, name FROM things WHERE qty > 2) TO STDOUT (FORMAT CSV, HEADER)"
            ) as cp:
                for _ in cp:
                    pass
            cur.executemany("INSERT INTO things (name, qty) VALUES (%s, %s)", [["m1", 1], ["m2", 2]])
            cur.executemany(
                "UPDATE things SET qty = %s WHERE name = %s RETURNING id", [[9, "m1"]], returning=True
            )
        conn.commit()
        with conn.pipeline():
            conn.execute("INSERT INTO things (name, qty) VALUES (%s, %s)", ["p1", 1])
            conn.execute("SELECT count(*) FROM things")
        conn.commit()
        q = sql.SQL("SELECT {fields} FROM {table} WHERE {col} = {val} ORDER BY {col}").format(
            fields=sql.SQL(", ").join(map(sql.Identifier, ["id", "name"])),
            table=sql.Identifier("public", "things"),
            col=sql.Identifier("qty"),
            val=sql.Placeholder(),
        )
        conn.execute(q, [2])
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier("public")))
        conn.execute("SHOW search_path")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal("5s")))
        conn.execute("SELECT set_config('application_name', %s, false)", ["psycopg"])
        conn.commit()
        conn.autocommit = True
        conn.execute("LISTEN things_changed")
        conn.execute("NOTIFY things_changed, 'hello'")
        conn.execute("SELECT pg_notify(%s, %s)", ["things_changed", "again"])
        list(conn.notifies(timeout=0.5, stop_after=2))
        conn.execute("UNLISTEN things_changed")
    conn = psycopg.connect(dsn)
    xid = conn.xid(42, "corpus-gtrid", "corpus-bqual")
    conn.tpc_begin(xid)
    conn.execute("INSERT INTO things (name, qty) VALUES (%s, %s)", ["2pc", 1])
    with contextlib.suppress(psycopg.Error):
        conn.tpc_prepare()
    conn.close()
    with psycopg.connect(dsn) as conn:
        conn.tpc_recover()
        conn.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for fn in (conn.tpc_commit, conn.tpc_rollback):
            with contextlib.suppress(psycopg.Error):
                fn(conn.xid(42, "corpus-gtrid", "corpus-bqual"))
        with contextlib.suppress(psycopg.Error):
            conn.tpc_rollback("plain-xid")


PSYCOPG2_SCRIPT = r"""
import io
import sys

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

dsn = sys.argv[1]
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("SELECT * FROM things WHERE id = %s AND name LIKE %s", (1, "thing%"))
cur.fetchall()
conn.commit()
psycopg2.extras.register_composite("address", cur)
psycopg2.extras.register_range("floatrange", "FloatRange", cur)
try:
    psycopg2.extras.register_hstore(cur)
except psycopg2.ProgrammingError:
    conn.rollback()
psycopg2.extras.register_default_jsonb(conn)
psycopg2.extras.register_uuid()
conn.commit()
cur.execute("SELECT home, span, doc FROM things WHERE qty = %(q)s", {"q": 2})
cur.fetchall()
psycopg2.extras.execute_values(cur, "INSERT INTO things (name, qty) VALUES %s RETURNING id",
                               [("v1", 1), ("v2", 2), ("v3", 3)], fetch=True)
psycopg2.extras.execute_batch(cur, "UPDATE things SET qty = %s WHERE name = %s", [(5, "v1"), (6, "v2")])
cur.executemany("DELETE FROM things WHERE name = %s", [("v3",)])
cur.callproc("add_thing", ["proc", 7])
cur.execute(sql.SQL("SELECT {} FROM {} WHERE {} > %s").format(
    sql.SQL(", ").join([sql.Identifier("id"), sql.Identifier("name")]), sql.Identifier("things"),
    sql.Identifier("qty")), (3,))
cur.copy_from(io.StringIO("c1\t1\nc2\t2\n"), "things", columns=("name", "qty"))
cur.copy_to(io.StringIO(), "things", columns=("id", "name"))
cur.copy_expert("COPY (SELECT id, name FROM things) TO STDOUT WITH CSV HEADER", io.StringIO())
conn.commit()
named = conn.cursor("big_scan")
named.itersize = 10
named.execute("SELECT id, name FROM things ORDER BY id")
for _ in named:
    pass
named.close()
named = conn.cursor("held", withhold=True, scrollable=True)
named.execute("SELECT id FROM things")
named.fetchmany(3)
named.scroll(0, mode="absolute")
named.close()
conn.commit()
conn.set_session(isolation_level="SERIALIZABLE", readonly=True, deferrable=True)
cur.execute("SELECT count(*) FROM things")
conn.commit()
conn.set_session(isolation_level="REPEATABLE READ", readonly=False, deferrable=False)
cur.execute("SELECT 1")
conn.rollback()
conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT", deferrable="DEFAULT")
dict_cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
dict_cur.execute("SELECT id, feeling FROM things WHERE feeling = %s::mood LIMIT 3", ("happy",))
dict_cur.fetchall()
conn.commit()
conn.autocommit = True
cur.execute("LISTEN things_changed")
cur.execute("NOTIFY things_changed, %s", ("payload",))
conn.poll()
cur.execute("UNLISTEN *")
conn.autocommit = False
xid = conn.xid(42, "corpus-gtrid", "corpus-bqual")
conn.tpc_begin(xid)
cur.execute("INSERT INTO things (name, qty) VALUES (%s, %s)", ("2pc", 1))
try:
    conn.tpc_prepare()
except psycopg2.Error:
    pass
conn.close()
conn = psycopg2.connect(dsn)
conn.tpc_recover()
conn.rollback()
conn.close()
"""

ASYNCPG_SCRIPT = r"""
import asyncio
import io
import json
import sys

import asyncpg

host = sys.argv[1]
KW = dict(host=host, user="postgres", database="drivers",
          server_settings={"application_name": "asyncpg"})


async def main():
    conn = await asyncpg.connect(**KW)
    await conn.fetchval("SELECT 1")
    await conn.fetch("SELECT * FROM things WHERE id = $1", 1)  # enum, composite, domain, ranges, jsonb
    await conn.fetchval("SELECT $1::mood[]", ["sad", "ok"])
    await conn.fetchval("SELECT ROW('a', 'b', 'c')::address")
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.fetchval("SELECT $1::jsonb", {"a": [1, 2]})
    await conn.fetchrow("SELECT doc FROM things WHERE doc @> $1", {"n": 1})
    await conn.executemany("INSERT INTO things (name, qty) VALUES ($1, $2)", [("a1", 1), ("a2", 2)])
    await conn.execute("UPDATE things SET qty = qty + 1 WHERE name = 'a1'")
    async with conn.transaction(isolation="serializable", readonly=True, deferrable=True):
        await conn.fetchval("SELECT count(*) FROM things")
    async with conn.transaction(isolation="repeatable_read"):
        await conn.fetchval("SELECT 1")
    async with conn.transaction():
        await conn.execute("DELETE FROM things WHERE name = $1", "a2")
        try:
            async with conn.transaction():  # savepoint
                await conn.execute("INSERT INTO things (name, qty) VALUES ($1, $2)", "bad", -1)
        except asyncpg.CheckViolationError:
            pass
        async for _ in conn.cursor("SELECT id, name FROM things WHERE qty > $1", 1, prefetch=10):
            pass
        cur = await conn.cursor("SELECT id FROM things ORDER BY id")
        await cur.fetch(5)
        await cur.forward(2)
    stmt = await conn.prepare("SELECT name FROM things WHERE qty = $1")
    await stmt.fetch(2)
    await conn.copy_records_to_table("things", records=[("r1", 1), ("r2", 2)], columns=["name", "qty"])
    await conn.copy_to_table("things", source=io.BytesIO(b"t1\t1\n"), columns=["name", "qty"])
    await conn.copy_from_table("things", output=io.BytesIO(), columns=["id", "name"], format="csv",
                               header=True)
    await conn.copy_from_query("SELECT id, name FROM things WHERE qty > $1", 2, output=io.BytesIO(),
                               format="csv")
    await conn.add_listener("things_changed", lambda *a: None)
    await conn.execute("NOTIFY things_changed, 'x'")
    await conn.remove_listener("things_changed", lambda *a: None)
    await conn.reload_schema_state()
    await conn.fetchval("SELECT $1::floatrange", asyncpg.Range(1.0, 2.0))
    await conn.close()

    pool = await asyncpg.create_pool(min_size=1, max_size=1, **KW)
    async with pool.acquire() as c:
        await c.fetchval("SELECT now()")
    async with pool.acquire() as c:
        await c.execute("SET search_path TO public")
    await pool.close()


asyncio.run(main())
"""


def run_child(py: Path, code: str, args: list[str], workdir: Path) -> None:
    script = workdir / "child.py"
    script.write_text(code, encoding="utf-8")
    res = subprocess.run(
        [str(py), str(script), *args],
        text=True,
        capture_output=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if res.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{res.stdout}\n{res.stderr}")


def main() -> int:
    import psycopg

    py = ensure_tmp_venv()
    versions = venv_versions(py, ["psycopg2-binary", "asyncpg"])
    sections: list[tuple[str, list[str]]] = []
    with embedded_pg() as pg:
        srv_version = server_version(pg)
        pg.psql(SETUP_SQL)

        mark = pg.log_mark()
        run_psycopg3(pg.dsn("drivers", "psycopg"))
        sections.append(("psycopg", pg.logged_statements(since=mark, app="psycopg")))

        mark = pg.log_mark()
        run_child(py, PSYCOPG2_SCRIPT, [pg.dsn("drivers", "psycopg2")], pg.workdir)
        sections.append(("psycopg2", pg.logged_statements(since=mark, app="psycopg2")))

        mark = pg.log_mark()
        run_child(py, ASYNCPG_SCRIPT, [pg.host], pg.workdir)
        sections.append(("asyncpg", pg.logged_statements(since=mark, app="asyncpg")))

    for name, stmts in sections:
        print(f"  {name}: {len(stmts)} captured", file=sys.stderr)
    source = (
        "Produced by scripts/gen_corpus_drivers.py: statements read from the server log "
        f"(log_statement=all) of a throwaway PostgreSQL {srv_version} (pgserver package) while "
        f"three drivers ran, in this order: psycopg {psycopg.__version__} (project venv) — "
        "TypeInfo/EnumInfo/CompositeInfo/RangeInfo/MultirangeInfo.fetch, server-side binding ($n), "
        "prepared statements, nested transactions/savepoints, isolation level/read only/deferrable, "
        "named scrollable WITH HOLD cursors, ClientCursor (client-side literals), COPY in (text, "
        "binary) and out, executemany, pipeline mode, psycopg.sql composition, SET/SHOW, "
        "LISTEN/NOTIFY, two-phase commit; then, from a throwaway venv (" + versions + "): psycopg2 "
        "(client-side literals; register_composite/register_range/register_hstore introspection, "
        "execute_values/execute_batch/executemany, callproc, copy_from/copy_to/copy_expert, named "
        "cursors, set_session, LISTEN/NOTIFY, two-phase commit) and asyncpg (type introspection "
        "triggered by an enum, composite, domain, range, multirange and arrays, set_type_codec for "
        "json/jsonb, executemany, transactions with isolation/savepoints, cursors, prepared "
        "statements, copy_records_to_table/copy_to_table/copy_from_table/copy_from_query, "
        "add/remove_listener, pool acquire/release reset). The database had an enum, a composite "
        "type, a domain, a range type and a table using them. Two-phase-commit statements failed "
        "on the server (max_prepared_transactions = 0) but were logged before running. Statements "
        "that differ only in literal values are kept once, first seen."
    )
    write_corpus("drivers", source, dedupe_by_shape(s for _, stmts in sections for s in stmts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
