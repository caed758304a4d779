"""The mission's story, played against a running ``pgwarden demo``.

An offboarded contractor's nightly migration agent keeps running. With pgwarden it holds no
database password (its token is its identity), reads customer data with card numbers and e-mails
masked, tries a DDL that waits until a DBA approves it from the CLI, tries something forbidden
and is refused with a reason — and the security team reviews, replays and verifies exactly what it
saw. Once through psql (the wire proxy), once through MCP (the SDK's client over HTTP):

    pgwarden demo --ready-file /tmp/demo.json &
    python examples/nightly-migration/story.py --ready /tmp/demo.json --door psql
    python examples/nightly-migration/story.py --ready /tmp/demo.json --door mcp

Each step prints what happened; the script exits non-zero at the first step that does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RAW_CARDS = ("4111111111111111", "5500005555555559", "340000000000009", "6011000000000004")
RAW_EMAILS = ("ada@example.org", "grace@navy.example")


class StoryFailed(Exception):
    pass


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise StoryFailed(what)
    print(f"   ok: {what}", flush=True)


def pgwarden(*args: str, token: str | None = None, check_rc: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("pgwarden") or str(Path(sys.executable).with_name("pgwarden"))
    env = dict(os.environ)
    if token is not None:
        env["PGWARDEN_TOKEN"] = token
    out = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)
    if check_rc and out.returncode != 0:
        raise StoryFailed(f"pgwarden {' '.join(args[:2])} exited {out.returncode}: {out.stderr.strip()}")
    return out


def approve_pending(ready: dict, statement_part: str, timeout: float = 30.0) -> str:
    """As the DBA, find the pending request for the statement and approve it from the CLI."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(pgwarden("approvals", "list", "--config", ready["config"], "--json",
                                     token=ready["dba_token"]).stdout)
        items = listed if isinstance(listed, list) else listed.get("approvals", [])
        for item in items:
            if item.get("status") == "pending" and statement_part in item.get("statement", ""):
                pgwarden("approvals", "approve", item["id"], "--config", ready["config"],
                         "--comment", "reviewed: index build on a small table", token=ready["dba_token"])
                return item["id"]
        time.sleep(0.3)
    raise StoryFailed(f"no pending approval request for {statement_part!r} appeared")


def security_review(ready: dict, channel: str) -> None:
    step("the security team reviews the session")
    sessions = json.loads(pgwarden("audit", "sessions", "--config", ready["config"], "--json").stdout)
    rows = sessions if isinstance(sessions, list) else sessions.get("sessions", [])
    mine = [s for s in rows if s.get("subject") == "nightly-migration-agent" and s.get("channel") == channel]
    check(bool(mine), f"the agent's {channel} sessions are in the journal ({len(mine)})")
    shown = ""
    for session in mine:
        timeline = pgwarden("audit", "show", session["id"], "--config", ready["config"]).stdout
        shown += timeline
        if "secrets" in timeline:
            print("\n".join("   | " + line for line in timeline.splitlines()[:24]))
    check("secrets" in shown and "table_denied" in shown, "the refused statement is on a timeline, with its reason")
    check("approval" in shown, "the held DDL is on a timeline, with its approval")
    check(not any(card in shown for card in RAW_CARDS), "no timeline holds a raw card number")
    for session in mine:
        replay = pgwarden("audit", "replay", session["id"], "--config", ready["config"], check_rc=False)
        check(replay.returncode == 0, f"replay of {session['id'][:8]} steps through exactly what the agent saw")
    verify = pgwarden("audit", "verify", "--config", ready["config"], check_rc=False)
    print("   | " + verify.stdout.strip().replace("\n", "\n   | "))
    check(verify.returncode == 0, "the journal's hash chain and signed checkpoints verify")


# -- through psql ----------------------------------------------------------------------------------


def psql_story(ready: dict, psql: str) -> None:
    conninfo = (f"host={ready['proxy_host']} port={ready['proxy_port']} dbname=main "
                "user=nightly-migration-agent sslmode=disable")
    env = dict(os.environ, PGPASSWORD=ready["agent_token"], PGCONNECT_TIMEOUT="10")

    def run(sql: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([psql, conninfo, "-X", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                              text=True, env=env, timeout=kw.get("timeout", 60))

    step("the agent connects with its token (no database password) and reads customers")
    out = run("SELECT id, full_name, email, card_number FROM customers ORDER BY id")
    print("   | " + out.stdout.strip().replace("\n", "\n   | "))
    check(out.returncode == 0, "psql reads through the wire proxy")
    check("************1111" in out.stdout and not any(c in out.stdout for c in RAW_CARDS),
          "card numbers arrive masked (last 4 kept)")
    check(not any(e in out.stdout for e in RAW_EMAILS), "e-mails arrive as keyed hashes")

    step("the agent's migration adds an index: held until a DBA approves")
    index = f"orders_placed_at_{int(time.time() * 1000) % 10**8}"
    held = subprocess.Popen([psql, conninfo, "-X", "-v", "ON_ERROR_STOP=1", "-c",
                             f"CREATE INDEX {index} ON orders (placed_at)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    request = approve_pending(ready, index)
    print(f"   DBA dana approved {request} from the CLI")
    stdout, stderr = held.communicate(timeout=60)
    print("   | " + (stderr.strip() or stdout.strip()).replace("\n", "\n   | "))
    check(held.returncode == 0 and "CREATE INDEX" in stdout, "the held DDL ran once approved")
    check(request in stderr, "psql was told the request id while it waited")

    step("the agent tries something it must not do")
    out = run("SELECT * FROM secrets")
    print("   | " + out.stderr.strip().replace("\n", "\n   | "))
    check(out.returncode != 0 and "pgwarden:" in out.stderr, "refused, with the reason and what is allowed")
    out = run("DELETE FROM orders WHERE id = 1")
    check(out.returncode != 0, "writes are refused to a read-only rule")

    security_review(ready, "wire")


# -- through MCP -----------------------------------------------------------------------------------


async def mcp_story(ready: dict) -> None:
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    def payload(result) -> dict:
        content = result.structured_content if getattr(result, "structured_content", None) else None
        if content is None:
            text = "".join(getattr(c, "text", "") for c in result.content)
            try:
                content = json.loads(re.sub(r"^Error executing tool \w+: ", "", text))
            except ValueError:
                content = {"text": text}
        return content

    headers = {"Authorization": f"Bearer {ready['agent_token']}"}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http,
                Client(streamable_http_client(f"{ready['http']}/mcp", http_client=http)) as client):
        step("the agent connects over MCP with its token and reads customers")
        result = await client.call_tool("query", {"sql": "SELECT id, full_name, email, card_number FROM "
                                                          "customers ORDER BY id"})
        body = payload(result)
        print(f"   | {json.dumps(body)[:400]}")
        text = json.dumps(body)
        check(not result.is_error and "************1111" in text, "card numbers arrive masked")
        check(not any(c in text for c in RAW_CARDS + RAW_EMAILS), "no raw card number or e-mail")
        masked = [c["name"] for c in body.get("columns", []) if c.get("masked")]
        check({"email", "card_number"} <= set(masked), "the columns say which values are masked")

        step("the migration adds an index: pending until a DBA approves, no call left hanging")
        index = f"orders_amount_{int(time.time() * 1000) % 10**8}"
        result = await client.call_tool("execute", {"sql": f"CREATE INDEX {index} ON orders (amount)"})
        body = payload(result)
        print(f"   | {json.dumps(body)[:400]}")
        check(body.get("status") == "pending_approval", "the statement is held and the call returns at once")
        request = approve_pending(ready, index)
        print(f"   DBA dana approved {request} from the CLI")
        result = await client.call_tool("wait_for_approval", {"id": request, "seconds": 30})
        body = payload(result)
        print(f"   | {json.dumps(body)[:300]}")
        check(not result.is_error and "CREATE INDEX" in json.dumps(body), "wait_for_approval returns its result")

        step("the agent tries something it must not do")
        result = await client.call_tool("query", {"sql": "SELECT * FROM secrets"})
        body = payload(result)
        print(f"   | {json.dumps(body)[:300]}")
        check(result.is_error and "table_denied" in json.dumps(body), "refused with a reason code and sentence")
    security_review(ready, "mcp")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ready", required=True, help="the JSON file `pgwarden demo --ready-file` wrote")
    ap.add_argument("--door", choices=["psql", "mcp"], required=True)
    ap.add_argument("--psql", default=shutil.which("psql") or "psql", help="the psql binary")
    args = ap.parse_args(argv)
    ready = json.loads(Path(args.ready).read_text())
    try:
        if args.door == "psql":
            psql_story(ready, args.psql)
        else:
            asyncio.run(mcp_story(ready))
    except StoryFailed as exc:
        print(f"\nSTORY FAILED: {exc}", flush=True)
        return 1
    print("\nthe story holds.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
