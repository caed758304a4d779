"""What the server parses is what the gateway parsed, even on a database configured the hostile way.

The analysis reads text as UTF-8 with standard conforming strings. A database (or role) set to
``standard_conforming_strings = off`` reads ``'a\\''; DELETE …; --'`` as a string followed by a
DELETE, where the gateway saw one harmless literal; a ``GBK``/``SJIS`` client encoding lets a
``\\`` end a multi-byte character. The gateway pins client_encoding, standard_conforming_strings
and backslash_quote in the start-up packet (which outranks database and role settings), checks
the server's ParameterStatus, and the policy refuses any change of them.
"""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import psycopg
import pytest
import yaml
from psycopg import sql

from pgwarden.engine import upstream
from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.principal import Principal
from pgwarden.engine.session import Session, StatementRefused

CONFIG = """
version: 1
targets: {main: {dsn: "%s"}}
rules:
  - {name: writer, match: {groups: [writers]}, target: main, statements: {allow: [read, write]},
     require_where: false}
"""
WRITER = Principal.local("w", {"writers"})
# The gateway (standard strings) sees one literal; a server with standard strings off sees a DELETE.
SMUGGLED = "SELECT 'a\\''; DELETE FROM orders; --'"


@pytest.fixture(params=["scs_off", "gbk", "sjis", "role_scs_off"])
def hostile_db(request, make_db, pg_admin_dsn: str) -> str:
    dsn = make_db("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1), (2);")
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        db = sql.Identifier(dbname)
        if request.param == "scs_off":
            admin.execute(sql.SQL("ALTER DATABASE {} SET standard_conforming_strings = off").format(db))
            admin.execute(sql.SQL("ALTER DATABASE {} SET backslash_quote = on").format(db))
        elif request.param == "role_scs_off":
            user = psycopg.conninfo.conninfo_to_dict(dsn).get("user") or "postgres"
            admin.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET standard_conforming_strings = off").format(
                sql.Identifier(user), db))
        else:
            admin.execute(sql.SQL("ALTER DATABASE {} SET client_encoding = {}").format(
                db, sql.Literal(request.param.upper())))
    return dsn


def run(gateway: Gateway, *texts: str):
    async def go():
        try:
            async with Session(gateway, WRITER, "main") as session:
                return [await session.run(t) for t in texts]
        finally:
            await gateway.close()
    return anyio.run(go)


def test_a_literal_that_hides_a_statement_stays_a_literal(hostile_db: str) -> None:
    with psycopg.connect(hostile_db) as conn:  # the hostile setting is real for a plain client
        encoding = conn.execute("SHOW client_encoding").fetchone()[0]
        scs = conn.execute("SHOW standard_conforming_strings").fetchone()[0]
        assert encoding != "UTF8" or scs == "off"
    gateway = Gateway(parse_config(yaml.safe_dump(yaml.safe_load(CONFIG % hostile_db)), "test"))
    anyio.run(gateway.refresh_catalog, "main")
    [_, smuggled, encoding, scs] = run(gateway, "SELECT 1", SMUGGLED, "SHOW client_encoding",
                                          "SHOW standard_conforming_strings")
    assert smuggled.results[0].rows == [("a\\'; DELETE FROM orders; --",)]
    assert encoding.results[0].rows == [("UTF8",)] and scs.results[0].rows == [("on",)]
    with psycopg.connect(hostile_db) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2


@pytest.mark.parametrize("text", [
    "SET standard_conforming_strings = off", "SET client_encoding = 'GBK'", "SET backslash_quote = on",
    "SELECT set_config('standard_conforming_strings', 'off', false)", "SET NAMES 'SJIS'",
])
def test_changing_how_the_server_reads_text_is_refused(make_db, text: str) -> None:
    dsn = make_db("CREATE TABLE orders (id int)")
    gateway = Gateway(parse_config(yaml.safe_dump(yaml.safe_load(CONFIG % dsn)), "test"))
    with pytest.raises(StatementRefused):
        run(gateway, text)


def test_a_connection_that_reads_text_differently_is_not_used() -> None:
    for params in ({"client_encoding": "GBK", "standard_conforming_strings": "on"},
                   {"client_encoding": "UTF8", "standard_conforming_strings": "off"}):
        conn = SimpleNamespace(info=SimpleNamespace(parameter_status=params.get))
        with pytest.raises(upstream.UpstreamUnavailable) as err:
            upstream.verify_text_semantics(conn)
        assert err.value.code == "upstream_text_semantics"
    upstream.verify_text_semantics(SimpleNamespace(info=SimpleNamespace(
        parameter_status={"client_encoding": "UTF8", "standard_conforming_strings": "on"}.get)))


@pytest.mark.parametrize("text", ["SET client_encoding TO 'UTF8'", "SET NAMES 'utf-8'",
                                  "SET standard_conforming_strings = on", "RESET client_encoding",
                                  "RESET standard_conforming_strings", "RESET ALL"])
def test_setting_them_to_what_is_pinned_is_fine(make_db, text: str) -> None:
    dsn = make_db("CREATE TABLE orders (id int)")
    gateway = Gateway(parse_config(yaml.safe_dump(yaml.safe_load(CONFIG % dsn)), "test"))
    [_, encoding] = run(gateway, text, "SHOW client_encoding")
    assert encoding.results[0].rows == [("UTF8",)]
