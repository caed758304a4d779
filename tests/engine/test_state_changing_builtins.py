"""Issue 5, item 6: built-ins that write although the transaction is read-only, found from the catalog.

Candidates are PG's own pg_catalog functions that are volatile and not parallel-safe (what the server
marks as possibly changing state). Each one a read-only transaction lets run, and that is not pure
(sequence, sleep, lock, random, xml/cursor helpers the gateway handles otherwise), must be denied by
the gateway's built-in list: so a new server version with a new writing function fails this test.
"""

from __future__ import annotations

import psycopg

from pgwarden.policy.builtins import function_denial
from support.policies import World

CANDIDATES_SQL = """
SELECT p.proname::text, pg_catalog.oidvectortypes(p.proargtypes)
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.provolatile = 'v' AND p.proparallel = 'u'
  AND p.prokind = 'f' AND p.pronargs <= 1
ORDER BY 1
"""
# Index maintenance functions take an index; run them on a real one.
SETUP = """
CREATE TABLE t (id int, body tsvector);
INSERT INTO t SELECT g, to_tsvector('x') FROM generate_series(1, 10) g;
CREATE INDEX t_brin ON t USING brin (id);
CREATE INDEX t_gin ON t USING gin (body) WITH (fastupdate = on);
"""
ARGUMENTS = {"regclass": ["'t_brin'", "'t_gin'"], "": [""], "text": ["'public'"], "regnamespace": ["'public'"]}


def test_functions_that_write_in_a_read_only_transaction_are_denied(make_db) -> None:
    dsn = make_db(SETUP)
    writes: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        candidates = conn.execute(CANDIDATES_SQL).fetchall()
        for name, argtypes in candidates:
            for arg in ARGUMENTS.get(argtypes, []):
                call = f"SELECT pg_catalog.{name}({arg})"
                try:
                    with conn.transaction(force_rollback=True):
                        conn.execute("SET TRANSACTION READ ONLY")
                        conn.execute(call)
                except psycopg.errors.ReadOnlySqlTransaction:
                    continue  # the server itself refuses it under the gateway's pinned read-only transaction
                except psycopg.Error:
                    continue  # needs other arguments or privileges: refused by the server anyway
                writes.append(name)
    world = World()
    allowed_pure = {"lastval", "currval", "pg_sequence_last_value", "dsnowball_init"}
    undenied = sorted({n for n in writes if n not in allowed_pure and function_denial(n) is None
                       and world.decide(f"SELECT pg_catalog.{n}()").decision.value == "allow"})
    assert "brin_summarize_new_values" in writes or "gin_clean_pending_list" in writes  # the probe works
    assert not undenied, undenied
