"""Tool calls that run SQL leave statement spans in the journal, under a session span of the MCP session."""

from __future__ import annotations

import anyio
from mcp_helpers import Env, journal_records, payload, stdio_client


def test_statement_spans_with_verdict_and_masked_sample(env: Env) -> None:
    async def go():
        async with stdio_client(env, env.token("agent", ["ai-agents"])) as c:
            assert payload(await c.call_tool("query", {"sql": "SELECT id, card_number FROM customers"}))["rows"]
            assert (await c.call_tool("query", {"sql": "SELECT * FROM secrets"})).is_error
    anyio.run(go)
    spans = [r.get("body", r) for r in journal_records(env)]
    text = [str(s) for s in spans]
    ran = [t for t in text if "SELECT id, card_number FROM customers" in t and "pgwarden.decision" in t]
    assert ran and "allow" in ran[-1] and "************1111" in ran[-1]
    assert "4111111111111111" not in "".join(text)
    refused = [t for t in text if "SELECT * FROM secrets" in t and "pgwarden.decision" in t]
    assert refused and "deny" in refused[-1] and "table_denied" in refused[-1]
    assert any("pgwarden.session" in t or "'mcp'" in t for t in text)
