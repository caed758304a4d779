"""``pgwarden mcp`` as a real subprocess, driven by the SDK's own client: every tool, approvals, migrations."""

from __future__ import annotations

import subprocess

import anyio
import pytest
from mcp_helpers import PYTHON, Env, dba_broker, journal_records, payload, stdio_client

AGENT = ("agent", ["ai-agents"])


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


@pytest.mark.parametrize("token", [None, "not-a-jwt", "wrong-audience", "wrong-key", "expired"])
def test_refused_at_start_without_a_valid_token(env: Env, token: str | None) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    value = {None: None, "not-a-jwt": "abc.def",
             "wrong-audience": env.token("agent", ["ai-agents"], aud="someone-else"),
             "wrong-key": env.token("agent", ["ai-agents"], key=ed25519.Ed25519PrivateKey.generate()),
             "expired": env.token("agent", ["ai-agents"], exp_in=-3600)}[token]
    proc = subprocess.run([PYTHON, "-m", "pgwarden.cli", "mcp", "--config", str(env.config)],
                          env=env.server_env(value), input=b"", capture_output=True, timeout=60, cwd=env.dir)
    assert proc.returncode == 2
    assert b"PGWARDEN_TOKEN" in proc.stderr and b"refusing to start" in proc.stderr
    assert proc.stdout == b""


def test_every_tool_over_stdio(env: Env) -> None:
    async def go():
        async with stdio_client(env, env.token(*AGENT)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == {"query", "execute", "migrate", "list_tables", "describe_table", "explain",
                                  "my_permissions", "approval_status", "wait_for_approval"}
            for tool in tools.values():
                assert tool.title and tool.description and tool.annotations is not None
                assert tool.input_schema["type"] == "object"
                assert "approval" not in tool.input_schema.get("properties", {})
            assert tools["query"].annotations.read_only_hint is True
            assert tools["execute"].annotations.destructive_hint is True
            assert tools["migrate"].annotations.idempotent_hint is True
            assert tools["query"].output_schema is not None

            out = payload(await c.call_tool("query", {"sql": "SELECT id, card_number FROM customers ORDER BY id",
                                                      "max_rows": 1}))
            assert out["columns"] == [{"name": "id", "type": "int4"},
                                      {"name": "card_number", "type": "text", "masked": True}]
            assert out["rows"] == [["1", "************1111"]] and out["truncated"] is True
            out = payload(await c.call_tool("query", {"sql": "SELECT full_name FROM customers WHERE id = $1",
                                                      "params": [2]}))
            assert out["rows"] == [["Bo Example"]]

            refused = await c.call_tool("query", {"sql": "DELETE FROM orders WHERE id = 1"})
            assert refused.is_error
            err = payload(refused)
            assert err["error"] and err["message"] and "allowed_instead" in err

            refused = payload(await c.call_tool("query", {"sql": "SELECT * FROM secrets"}))
            assert refused["error"] == "table_denied" and refused["reasons"][0]["code"] == "table_denied"

            tables = payload(await c.call_tool("list_tables", {}))
            names = [t["name"] for t in tables["tables"]]
            assert "public.customers" in names and "public.secrets" not in names
            assert not any(n.startswith("billing.") for n in names)
            assert set(next(t for t in tables["tables"] if t["name"] == "public.customers")["masked"]) == {
                "card_number", "email", "ssn"}

            desc = payload(await c.call_tool("describe_table", {"name": "orders"}))
            assert [c_["name"] for c_ in desc["columns"]][:4] == ["id", "customer_id", "amount", "note"]
            assert any(i.get("primary") for i in desc["indexes"])
            assert any(k["kind"] == "foreign key" for k in desc["constraints"])
            assert desc["row_estimate"] == 2
            masked = payload(await c.call_tool("describe_table", {"name": "public.customers"}))
            assert {c_["name"]: c_.get("masked") for c_ in masked["columns"]}["ssn"] == "redact"
            assert (await c.call_tool("describe_table", {"name": "secrets"})).is_error
            assert (await c.call_tool("describe_table", {"name": "billing.invoices"})).is_error

            plan = payload(await c.call_tool("explain", {"sql": "SELECT * FROM orders WHERE id = 1"}))
            assert plan["analyzed"] is False and plan["plan"]
            plan = payload(await c.call_tool("explain", {"sql": "SELECT count(*) FROM orders", "analyze": True}))
            assert any("actual" in line for line in plan["plan"])
            err = payload(await c.call_tool("explain", {"sql": "DELETE FROM orders WHERE id = 1", "analyze": True}))
            assert err["error"] in {"explain_analyze_not_read_only", "statement_class_denied"}

            perms = payload(await c.call_tool("my_permissions", {}))
            assert perms["rule"] == "ai-agents" and perms["statements"] == ["read"]
            assert perms["approval"]["approvers"] == ["dba"]

            err = payload(await c.call_tool("approval_status", {"id": "apr_nope"}))
            assert err["error"] == "approval_not_found"
    run(go)


def test_pending_approval_then_broker_then_wait_for_approval(env: Env) -> None:
    """A client without elicitation: held at once, approved by a DBA through the broker, result by waiting."""
    async def go():
        async with stdio_client(env, env.token(*AGENT)) as c:
            held = payload(await c.call_tool("execute", {"sql": "CREATE INDEX orders_note_idx ON orders (note)"}))
            assert held["status"] == "pending_approval"
            approval = held["approval"]
            assert approval["approvers"] == ["dba"] and "wait_for_approval" in approval["how_to_check"]
            status = payload(await c.call_tool("approval_status", {"id": approval["id"]}))
            assert status["status"] == "pending"
            still = payload(await c.call_tool("wait_for_approval", {"id": approval["id"], "seconds": 0.2}))
            assert still["status"] == "pending_approval"
            broker = await dba_broker(env)
            try:
                from pgwarden.engine.approvals import SelfApprovalForbidden
                with pytest.raises(SelfApprovalForbidden):
                    await broker.approve(approval["id"], "agent", {"dba"})
                async with anyio.create_task_group() as tg:
                    async def approve_soon():
                        await anyio.sleep(0.3)
                        await broker.approve(approval["id"], "dana", {"dba"}, comment="ok")
                    tg.start_soon(approve_soon)
                    done = payload(await c.call_tool("wait_for_approval", {"id": approval["id"], "seconds": 20}))
            finally:
                await broker.close()
            assert done["status"] == "ok" and done["command"] == "CREATE INDEX" and done["approved_by"] == "dana"
            again = payload(await c.call_tool("wait_for_approval", {"id": approval["id"], "seconds": 1}))
            assert again["error"] == "approval_already_used"
    run(go)
    import psycopg
    with psycopg.connect(env.dsn) as conn:
        assert conn.execute("SELECT to_regclass('orders_note_idx')").fetchone()[0] is not None
    records = journal_records(env)
    text = str(records)
    assert "orders_note_idx" in text and "needs_approval" in text


def test_migration_linted_dry_run_approved_applied_and_reapplied(env: Env) -> None:
    script = ("CREATE TABLE audit_log (id bigint PRIMARY KEY, at timestamptz);\n"
              "CREATE INDEX orders_amount_idx ON orders (amount);\n"
              "ALTER TABLE orders ADD COLUMN status text")

    async def go():
        async with stdio_client(env, env.token(*AGENT)) as c:
            dry = payload(await c.call_tool("migrate", {"name": "001_status", "sql": script}))
            assert dry["status"] == "dry_run"
            assert [s["command"] for s in dry["statements"]] == ["CREATE TABLE", "CREATE INDEX", "ALTER TABLE"]
            assert any(f["rule"] == "require-concurrent-index-creation" and f["statement"] == 2
                       for f in dry["findings"])
            assert {"statement": 2, "relation": "public.orders", "mode": "ShareLock", "blocks": "writes"} in dry["locks"]
            assert any(lk["statement"] == 3 and lk["mode"] == "AccessExclusiveLock" for lk in dry["locks"])
            held = payload(await c.call_tool("migrate", {"name": "001_status", "sql": script, "dry_run": False}))
            assert held["status"] == "pending_approval"
            broker = await dba_broker(env)
            try:
                request = await broker.get(held["approval"]["id"])
                assert request.statement == script
                assert request.lint_findings[0] == {"migration": "001_status", "checksum": dry["checksum"]}
                assert any("dry_run" in f for f in request.lint_findings)
                await broker.approve(request.id, "dana", {"dba"})
            finally:
                await broker.close()
            done = payload(await c.call_tool("wait_for_approval", {"id": held["approval"]["id"], "seconds": 5}))
            assert done["status"] == "ok" and done["migration"]["status"] == "applied"
            assert done["migration"]["approved_by"] == "dana"
            again = payload(await c.call_tool("migrate", {"name": "001_status", "sql": script, "dry_run": False}))
            assert again["status"] == "already_applied" and again["approved_by"] == "dana"
            other = payload(await c.call_tool("migrate", {"name": "001_status", "sql": script + "; SELECT 1",
                                                          "dry_run": False}))
            assert other["error"] == "migration_checksum_mismatch"
            denied = payload(await c.call_tool("migrate", {"name": "002", "sql": "DROP TABLE secrets"}))
            assert "error" in denied
    run(go)
    import psycopg
    with psycopg.connect(env.dsn) as conn:
        cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name = 'orders'").fetchall()]
        assert "status" in cols
        rows = conn.execute("SELECT name, approved_by FROM pgwarden_migrations").fetchall()
        assert rows == [("001_status", "dana")]
        assert conn.execute("SELECT count(*) FROM secrets").fetchone()[0] == 1
