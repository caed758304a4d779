"""``pgwarden serve`` as a real subprocess: bearer tokens (401s), RFC 9728 metadata, tools, two principals at once."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from mcp_helpers import Env, http_client, payload

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.mark.parametrize("kind", ["missing", "expired", "wrong-audience", "wrong-signature", "garbage"])
def test_bad_tokens_get_401_with_www_authenticate(env: Env, http_server: str, kind: str) -> None:
    token = {"missing": None, "expired": env.token("agent", ["ai-agents"], exp_in=-3600),
             "wrong-audience": env.token("agent", ["ai-agents"], aud="another-api"),
             "wrong-signature": env.token("agent", ["ai-agents"], key=ed25519.Ed25519PrivateKey.generate()),
             "garbage": "eyJhbGciOiJub25lIn0.e30."}[kind]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = httpx2.post(http_server, json=INIT, headers=headers, timeout=10)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer") and "resource_metadata=" in challenge
    assert "agent" not in response.text


def test_protected_resource_metadata(http_server: str) -> None:
    base = http_server.rsplit("/mcp", 1)[0]
    response = httpx2.get(f"{base}/.well-known/oauth-protected-resource/mcp", timeout=10)
    assert response.status_code == 200
    data = response.json()
    assert data["resource"] == http_server
    assert data["authorization_servers"] == ["https://id.example.test"] or data["authorization_servers"][0].rstrip(
        "/") == "https://id.example.test"


def test_tools_over_http(env: Env, http_server: str) -> None:
    async def go():
        async with http_client(http_server, env.token("agent", ["ai-agents"])) as c:
            out = payload(await c.call_tool("query", {"sql": "SELECT id, ssn FROM customers ORDER BY id"}))
            assert out["rows"] == [["1", "[masked]"], ["2", "[masked]"]]
            perms = payload(await c.call_tool("my_permissions", {}))
            assert perms["subject"] == "agent"
            held = payload(await c.call_tool("execute", {"sql": "CREATE INDEX ON customers (full_name)"}))
            assert held["status"] == "pending_approval"
    anyio.run(go)


def test_concurrent_calls_from_two_principals(env: Env, http_server: str) -> None:
    """agent (secrets denied, masks) and dana (dba: secrets allowed) at once: each gets their own policy."""
    results: dict[str, list] = {"agent": [], "dana": []}

    async def worker(subject: str, groups: list[str]):
        async with http_client(http_server, env.token(subject, groups)) as c:
            async def one():
                r = await c.call_tool("query", {"sql": "SELECT count(*) AS n FROM secrets"})
                results[subject].append(payload(r) if not r.is_error else {"error": payload(r)["error"]})
                p = payload(await c.call_tool("my_permissions", {}))
                results[subject].append(p["rule"])
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(one)

    async def go():
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, "agent", ["ai-agents"])
            tg.start_soon(worker, "dana", ["dba"])
    anyio.run(go)
    assert results["agent"].count({"error": "table_denied"}) == 6 and results["agent"].count("ai-agents") == 6
    assert [r for r in results["dana"] if isinstance(r, dict)] == [{"status": "ok", "command": "SELECT",
                                                                   "row_count": 1, "columns": [{"name": "n",
                                                                   "type": "int8"}], "rows": [["1"]],
                                                                   "truncated": False}] * 6
    assert results["dana"].count("dba") == 6
