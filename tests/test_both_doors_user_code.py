"""A read that calls user code, under a rule that may write, through both doors.

The analysis sees ``SELECT public.uc_sneaky()`` as a read; the function deletes a row. The rule (``dba``)
may write, with writes held for approval, and lists the function under ``functions.allow``. Each door runs
such a read inside a ``BEGIN READ ONLY`` block of its own, so the hidden write fails (25006); where it
cannot open that block — the text controls transactions itself, or the client's transaction is open — the
read is refused (``read_only_required``, 55000); and the text can never lift the block with ``SET
TRANSACTION READ WRITE``. The same cases run through the wire proxy (psycopg) and the MCP ``query`` tool
(the SDK's client over stdio), and no case may change the table.
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
CREATE TABLE public.uc_ledger (id int PRIMARY KEY, note text);
INSERT INTO public.uc_ledger VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE FUNCTION public.uc_sneaky() RETURNS int LANGUAGE sql VOLATILE
  AS $$ DELETE FROM public.uc_ledger WHERE id = 3 RETURNING 1 $$;
ANALYZE;
"""
MASK_KEY = "test-mask-key-0123456789"

# (text, what each door must answer: an SQLSTATE)
CASES = [
    ("SELECT public.uc_sneaky()", "25006"),  # wrapped: the hidden write fails
    # the block holds: "transaction read-write mode must be set before any query"
    ("SET TRANSACTION READ WRITE; SELECT public.uc_sneaky()", "25001"),
    ("BEGIN; SELECT public.uc_sneaky(); COMMIT", "55000"),  # cannot be wrapped: refused
    ("START TRANSACTION READ WRITE; SELECT public.uc_sneaky()", "55000"),
]


@pytest.fixture(scope="module")
def doors(make_db_module, tmp_path_factory):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql + "\n" + SETUP)
    directory = tmp_path_factory.mktemp("user-code")
    keys = Keys(directory)
    data = config_data(dsn, directory, keys)
    for rule in data["rules"]:
        if rule["name"] == "dba":
            rule["functions"] = {"allow": ["public.uc_sneaky"]}
            rule["approval"] = {"required_for": ["write"], "approvers": ["dba"]}
    proxy = RunningProxy(data, directory)
    # the MCP server is a process of its own: a journal of its own (one writer per journal)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    try:
        yield proxy, config, keys, dsn
    finally:
        proxy.close()


def _ledger(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM public.uc_ledger").fetchone()[0]


def test_a_read_calling_user_code_is_run_read_only_or_refused_through_both_doors(doors) -> None:
    proxy, config, keys, dsn = doors
    token = keys.token("dana", ("dba",))
    texts = [sql for sql, _ in CASES]
    via_mcp = query_outcomes(config, token, texts, mask_key=MASK_KEY)
    assert _ledger(dsn) == 3
    for (sql, expected), mcp in zip(CASES, via_mcp, strict=True):
        wire = outcome(proxy, token, sql, user="dana")
        assert (wire, mcp) == (expected, expected), sql
        assert _ledger(dsn) == 3, sql


def test_a_read_of_no_user_code_inside_a_transaction_is_not_concerned(doors) -> None:
    proxy, _, keys, _ = doors
    with psycopg.connect(proxy.dsn(keys.token("dana", ("dba",)), user="dana")) as conn:
        assert conn.execute("SELECT count(*) FROM public.uc_ledger").fetchone() == (3,)  # inside psycopg's BEGIN
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as err:
            conn.execute("SELECT public.uc_sneaky()")
        assert "READ ONLY" in err.value.diag.message_primary
        assert "outside a transaction block" in err.value.diag.message_primary
