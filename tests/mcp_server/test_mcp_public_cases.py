"""The public bypass cases through both MCP transports: no sentinel anywhere the client receives, no write lands."""

from __future__ import annotations

import anyio
import pytest
from mcp_helpers import SENTINELS, Env, db_state, everything, http_client, payload, stdio_client

from support.cases import load_public_cases

CASES = load_public_cases().cases


@pytest.mark.parametrize("door", ["stdio", "http"])
def test_public_cases(env: Env, request: pytest.FixtureRequest, door: str) -> None:
    token = env.token("agent", ["ai-agents"])
    before = db_state(env.dsn)
    seen: list[tuple[str, str, bool, dict]] = []

    async def go():
        client = (stdio_client(env, token) if door == "stdio"
                  else http_client(request.getfixturevalue("http_server"), token))
        async with client as c:
            for case in CASES:
                for tool in ("query", "execute"):
                    result = await c.call_tool(tool, {"sql": case.sql})
                    seen.append((case.sql, tool, result.is_error, payload(result)))
                    dump = everything(result)
                    for sentinel in SENTINELS:
                        assert sentinel not in dump, (case.sql, tool, sentinel)
                if case.expect == "deny":
                    for tool in ("query", "execute"):
                        r = await c.call_tool(tool, {"sql": case.sql})
                        out = payload(r)
                        assert r.is_error or out.get("status") == "pending_approval", (case.sql, tool, out)
                explain = await c.call_tool("explain", {"sql": case.sql, "analyze": True})
                assert not any(s in everything(explain) for s in SENTINELS), case.sql
    anyio.run(go)
    assert db_state(env.dsn) == before
    allowed = [s for s in seen if s[1] == "query" and not s[2]]
    legit = [c.sql for c in CASES if c.expect == "allow"]
    assert all(any(a[0] == sql for a in allowed) for sql in legit)
