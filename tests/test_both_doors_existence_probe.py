"""A write that could tell whether a masked value is stored is refused, through both doors.

A unique index on a masked column answers a guess: ``INSERT … (email) VALUES ('guess')`` fails with 23505
if some row holds ``guess`` and succeeds otherwise (``ON CONFLICT DO NOTHING`` says it in its row count);
a foreign key to a masked column answers the same with 23503, an exclusion constraint with 23P01. The
agent never sees the column's values, yet one statement per guess would confirm them. A write that
assigns such a column is refused (``masked_existence_probe``, 42501); writes that leave it alone run.
The same texts go through the wire proxy (psycopg) and the MCP ``execute`` tool (the SDK's client over
stdio).
"""

from __future__ import annotations

import os

import psycopg
import pytest
import yaml

from support.cases import load_public_cases
from support.mcp_stdio import query_outcomes
from support.wire import Keys, RunningProxy, config_data, outcome

SETUP = """
CREATE TABLE public.pr_users (id int PRIMARY KEY, email text UNIQUE, note text);
INSERT INTO public.pr_users VALUES (1, 'zed.sentinel@example.org', 'n1');
CREATE TABLE public.pr_refs (id int PRIMARY KEY, user_email text REFERENCES public.pr_users (email));
CREATE TABLE public.pr_slots (id int PRIMARY KEY, holder text, EXCLUDE USING btree (lower(holder) WITH =));
INSERT INTO public.pr_slots VALUES (1, 'Zed');
"""
MASK_KEY = "test-mask-key-0123456789"

CASES = [
    ("INSERT INTO pr_users (id, email) VALUES (9, 'zed.sentinel@example.org')", "42501"),
    ("INSERT INTO pr_users VALUES (9, 'guess@example.org', 'n')", "42501"),  # every column, email among them
    ("INSERT INTO pr_users (id, email) VALUES (9, 'guess@example.org') ON CONFLICT DO NOTHING", "42501"),
    ("UPDATE pr_users SET email = 'guess@example.org' WHERE id = 1", "42501"),
    ("INSERT INTO pr_refs VALUES (1, 'zed.sentinel@example.org')", "42501"),  # foreign key to the masked column
    ("UPDATE pr_slots SET holder = 'zed' WHERE id = 1", "42501"),  # an exclusion constraint over an expression
    ("MERGE INTO pr_users u USING (VALUES (9)) v (id) ON u.id = v.id "
     "WHEN NOT MATCHED THEN INSERT (id, email) VALUES (9, 'guess@example.org')", "42501"),
    ("WITH w AS (INSERT INTO pr_users (id, email) VALUES (9, 'g@example.org') RETURNING id) SELECT 1", "42501"),
    # what leaves the masked column alone runs
    ("UPDATE pr_users SET note = 'n2' WHERE id = 1", "ok"),
    ("INSERT INTO pr_refs (id) VALUES (2)", "ok"),
]


@pytest.fixture(scope="module")
def doors(make_db_module, tmp_path_factory):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("existence-probe")
    keys = Keys(directory)
    data = config_data(dsn, directory, keys)
    data["rules"].insert(0, {"name": "writer", "match": {"groups": ["writers"]}, "target": "main",
                             "statements": {"allow": ["read", "write"]}, "schemas": {"allow": ["public"]}})
    data["masking"]["columns"] += [{"column": "public.pr_users.email", "strategy": "hash",
                                    "key": {"env": "PGWARDEN_MASK_KEY"}},
                                   {"column": "public.pr_slots.holder", "strategy": "redact"}]
    proxy = RunningProxy(data, directory)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    try:
        yield proxy, config, keys, dsn
    finally:
        proxy.close()


def test_a_write_that_probes_a_masked_value_is_refused_through_both_doors(doors) -> None:
    proxy, config, keys, dsn = doors
    token = keys.token("wren", ("writers",))
    texts = [t for t, _ in CASES]
    wire = [outcome(proxy, token, t, user="wren") for t in texts]
    with psycopg.connect(dsn, autocommit=True) as conn:  # the two allowed writes, again for the MCP door
        conn.execute("DELETE FROM pr_refs")
    mcp = query_outcomes(config, token, texts, mask_key=MASK_KEY, tool="execute")
    expected = [e for _, e in CASES]
    assert wire == expected, list(zip(texts, wire, strict=True))
    assert mcp == expected, list(zip(texts, mcp, strict=True))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pr_users").fetchone() == (1,)
        assert conn.execute("SELECT holder FROM pr_slots").fetchone() == ("Zed",)
