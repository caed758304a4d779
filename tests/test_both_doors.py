"""One engine, two doors: the same statement gets the same verdict, mask and audit record.

Each case runs through the wire proxy (psycopg, the JWT as the password) and through the MCP
``query`` tool (the SDK's client over streamable HTTP) against one running ``pgwarden demo``; the
outcomes (refused with which reason, or the rows as text) must be equal, no raw card number may
reach either door, and each door's statement record in the journal carries the same decision,
rule and masked columns.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx2
import psycopg
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from psycopg.types.string import TextLoader

from support.demo import demo_process
from support.wire import journal_records

RAW = ("4111111111111111", "5500005555555559", "ada@example.org", "078-05-1120")
CASES = [
    "SELECT id, full_name, email, card_number, ssn FROM customers ORDER BY id",
    "SELECT lower(email) AS e, right(card_number, 6) AS tail FROM customers ORDER BY id",
    "SELECT c.full_name, sum(o.amount) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM customers WHERE card_number LIKE '4%'",
    "SELECT row_to_json(c) FROM customers c ORDER BY id",
    "SELECT * FROM secrets",
    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'customers'",
    "SELECT pg_read_file('/etc/passwd')",
    "WITH d AS (DELETE FROM orders RETURNING id) SELECT count(*) FROM d",
    "SELECT g FROM generate_series(1, 5000) g",  # cut at the rule's max_rows through either door
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with demo_process(tmp_path_factory.mktemp("doors")) as (ready, _):
        yield ready


def _wire(ready: dict, sql: str) -> tuple:
    conninfo = (f"host={ready['proxy_host']} port={ready['proxy_port']} dbname=main "
                f"user=nightly-migration-agent password={ready['agent_token']} sslmode=disable")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in ("json", "jsonb"):  # compare text as the MCP tool returns it, not parsed JSON
            conn.adapters.register_loader(name, TextLoader)
        try:
            cur = conn.execute(sql.encode())
            return ("rows", [[None if v is None else str(v) for v in row] for row in cur.fetchall()])
        except psycopg.Error as exc:
            code = re.match(r"pgwarden: ", exc.diag.message_primary or "")
            return ("refused" if code else "error", exc.diag.sqlstate)


async def _mcp_all(ready: dict, texts: list[str]) -> list[tuple]:
    headers = {"Authorization": f"Bearer {ready['agent_token']}"}
    out = []
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http,
                Client(streamable_http_client(f"{ready['http']}/mcp", http_client=http)) as client):
        for sql in texts:
            result = await client.call_tool("query", {"sql": sql})
            text = "".join(getattr(c, "text", "") for c in result.content)
            if result.is_error:
                body = json.loads(re.sub(r"^Error executing tool \w+: ", "", text))
                out.append(("refused", body.get("sqlstate")))
            else:
                body = result.structured_content or json.loads(text)
                out.append(("rows", [[None if v is None else str(v) for v in row] for row in body["rows"]]))
    return out


def test_the_same_statement_gets_the_same_outcome_through_both_doors(demo) -> None:
    mcp = asyncio.run(_mcp_all(demo, CASES))
    for sql, via_mcp in zip(CASES, mcp, strict=True):
        via_wire = _wire(demo, sql)
        assert via_wire == via_mcp, (sql, via_wire, via_mcp)
        assert not any(raw in repr(via_wire) + repr(via_mcp) for raw in RAW), sql


def test_both_doors_leave_the_same_audit_record(demo) -> None:
    sql = "SELECT id, card_number FROM customers WHERE id = 2"
    _wire(demo, sql)
    asyncio.run(_mcp_all(demo, [sql]))
    journal = Path(json.loads(Path(demo["ready_file"]).read_text())["config"]).parent / "journal"
    records = journal_records(journal)
    spans = [r["body"]["attributes"] for r in records if r["kind"] == "span"
             and r["body"]["attributes"].get("pgwarden.record") == "statement"
             and r["body"]["attributes"].get("db.query.text") == sql]
    by_channel = {a["pgwarden.channel"]: a for a in spans}
    assert set(by_channel) == {"wire", "mcp"}, [a.get("pgwarden.channel") for a in spans]
    keys = ("pgwarden.decision", "pgwarden.rule", "pgwarden.masked_columns", "pgwarden.policy_version",
            "pgwarden.result.sha256", "db.response.returned_rows")
    assert {k: by_channel["wire"].get(k) for k in keys} == {k: by_channel["mcp"].get(k) for k in keys}
    assert by_channel["wire"]["pgwarden.decision"] == "allow"
    assert "public.customers.card_number" in by_channel["wire"]["pgwarden.masked_columns"]


def test_an_mcp_statement_is_the_child_of_the_sdks_tools_call_span_and_a_wire_one_of_its_session(demo) -> None:
    sql = "SELECT id FROM orders WHERE id = 3"
    _wire(demo, sql)
    asyncio.run(_mcp_all(demo, [sql]))
    journal = Path(json.loads(Path(demo["ready_file"]).read_text())["config"]).parent / "journal"
    spans = [json.loads(line)["body"] for f in sorted(journal.glob("journal-*.jsonl"))
             for line in f.read_text().splitlines() if json.loads(line)["kind"] == "span"]
    by_id = {s["span_id"]: s for s in spans}
    statements = {s["attributes"]["pgwarden.channel"]: s for s in spans
                  if s["attributes"].get("pgwarden.record") == "statement"
                  and s["attributes"].get("db.query.text") == sql}
    mcp, wire = statements["mcp"], statements["wire"]
    # MCP: the parent is the SDK's tools/call span (not journaled by us, so not one of our spans),
    # and the statement links to its session span.
    assert mcp["parent_span_id"] and mcp["parent_span_id"] not in by_id
    links = mcp.get("links") or []
    assert links, "a statement under tools/call links to its session span"
    assert all(link["span_id"] != mcp["parent_span_id"] for link in links)  # the parent is not the session
    # wire: a root span per connection, the statement its child.
    parent = by_id.get(wire["parent_span_id"])
    assert parent is None or parent["attributes"].get("pgwarden.record") == "session"
    assert wire["trace_id"] != mcp["trace_id"]
