"""The server's own DEBUG and LOG messages never reach an agent, through either door.

PostgreSQL reports each statement it parses at DEBUG2 with the text it parsed — for a read of a masked
table, the statement as rewritten upstream, with the masks' derived keys in it. A client cannot ask for
those levels (``client_min_messages`` is bounded to notice, warning or error: the red-team in
``wire_proxy/test_redteam_session.py``), but the database or the upstream role can carry
``client_min_messages = debug2`` of its own (``ALTER DATABASE … SET``). Both doors drop DEBUG and LOG
messages whatever asked for them (``policy.results.diagnostic_withheld``), and keep the NOTICEs a
statement raises.
"""

from __future__ import annotations

import os
import re

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from pgwarden.policy.results import diagnostic_withheld
from support.cases import load_public_cases
from support.mcp_stdio import tool_results
from support.wire import Keys, RunningProxy, config_data

MASK_KEY = "test-mask-key-0123456789"
READ = "SELECT email FROM customers ORDER BY id LIMIT 1"
NOTICE = "DROP TABLE IF EXISTS public.no_such_table"  # NOTICE: … does not exist, skipping


def _leaks(text: str) -> list[str]:
    return re.findall(r"[0-9a-f]{64}|decode\(|FROM \(SELECT|DEBUG|LOG:", text)


@pytest.fixture(scope="module")
def doors(make_db_module, tmp_path_factory):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    dsn = make_db_module(load_public_cases().fixture_sql)
    dbname = conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET client_min_messages = debug2')
        conn.execute(f'ALTER DATABASE "{dbname}" SET log_min_messages = debug2')
    directory = tmp_path_factory.mktemp("server-messages")
    keys = Keys(directory)
    data = config_data(dsn, directory, keys)
    proxy = RunningProxy(data, directory)
    config = directory / "pgwarden.yaml"
    config.write_text(yaml.safe_dump({**data, "audit": {"journal_dir": str(directory / "mcp-journal")}}))
    try:
        yield proxy, config, keys
    finally:
        proxy.close()


def test_the_predicate() -> None:
    for severity in ("DEBUG1", "DEBUG2", "DEBUG5", "LOG", "debug3"):
        assert diagnostic_withheld({"V": severity, "M": "x"})
    for severity in ("NOTICE", "WARNING", "INFO", "ERROR"):
        assert not diagnostic_withheld({"V": severity, "M": "x"})
    assert diagnostic_withheld({"S": "LOG", "M": "x"})  # no V (servers before 9.6)


def test_the_wire_door_drops_debug_messages(doors) -> None:
    proxy, _, keys = doors
    notices: list[str] = []
    with psycopg.connect(proxy.dsn(keys.token("dana", ("dba",)), user="dana"), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
        assert conn.execute("SHOW client_min_messages").fetchone() == ("debug2",)  # the database's own
        conn.execute(READ).fetchall()  # simple protocol
        conn.execute(READ + " OFFSET %s", [0]).fetchall()  # extended: Parse is reported at DEBUG2
        conn.execute(NOTICE)
    assert notices == ['NOTICE: table "no_such_table" does not exist, skipping'], notices


def test_the_mcp_door_drops_debug_messages(doors) -> None:
    _, config, keys = doors
    results = tool_results(config, keys.token(), [("query", {"sql": READ}), ("query", {"sql": READ + " OFFSET 0"})],
                           mask_key=MASK_KEY)
    for is_error, text in results:
        assert not is_error, text[:500]
        assert "h:" in text  # the masked e-mail came back
        assert not _leaks(text), text[:500]
