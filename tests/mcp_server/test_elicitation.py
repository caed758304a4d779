"""Self-approval in the client: elicitation accepted, declined and cancelled, every answer through the broker."""

from __future__ import annotations

import anyio
import psycopg
import pytest
from mcp_helpers import Env, dba_broker, payload, stdio_client
from mcp_types import ElicitResult

DEV = ("dev", ["developers"])


def answering(action: str, asked: list[str]):
    async def callback(context, params) -> ElicitResult:
        asked.append(params.message)
        if action == "accept":
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action=action)
    return callback


def exists(dsn: str, order_id: int) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM orders WHERE id = %s", (order_id,)).fetchone()[0] == 1


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
def test_self_approval_by_elicitation(env: Env, action: str) -> None:
    order_id = {"accept": 901, "decline": 902, "cancel": 903}[action]
    asked: list[str] = []

    async def go():
        async with stdio_client(env, env.token(*DEV), elicitation_callback=answering(action, asked)) as c:
            ins = payload(await c.call_tool("execute", {"sql": "INSERT INTO orders VALUES ($1, 1, 5, 'e')",
                                                        "params": [order_id]}))
            assert ins["status"] == "ok" and ins["row_count"] == 1 and not asked  # no approval needed
            result = await c.call_tool("execute", {"sql": "DELETE FROM orders WHERE id = $1", "params": [order_id]})
            return result

    result = anyio.run(go)
    assert len(asked) == 1 and f"DELETE FROM orders WHERE id = {order_id}" in asked[0] and "apr_" in asked[0]
    request_id = asked[0].split("(approval ")[1].split(")")[0]
    if action == "accept":
        out = payload(result)
        assert not result.is_error and out["status"] == "ok" and out["row_count"] == 1
        assert out["approved_by"] == "self:dev"
        assert not exists(env.dsn, order_id)
    else:
        assert result.is_error
        err = payload(result)
        assert err["error"] == "approval_denied" and ("declined" in err["message"] or "cancelled" in err["message"])
        assert exists(env.dsn, order_id)

    async def check():
        broker = await dba_broker(env)
        try:
            return await broker.get(request_id)
        finally:
            await broker.close()
    request = anyio.run(check)
    assert request.decided_by == "self:dev"
    assert request.status.value == ("used" if action == "accept" else "denied")


def test_client_without_elicitation_gets_pending(env: Env) -> None:
    async def go():
        async with stdio_client(env, env.token(*DEV)) as c:
            await c.call_tool("execute", {"sql": "INSERT INTO orders VALUES (904, 1, 5, 'e')"})
            return payload(await c.call_tool("execute", {"sql": "DELETE FROM orders WHERE id = 904"}))
    out = anyio.run(go)
    assert out["status"] == "pending_approval"
    assert "you (the human at this client)" in out["approval"]["approvers"]
    assert exists(env.dsn, 904)
