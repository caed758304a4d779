"""Two gateway processes share one PostgreSQL approval store.

A psql-style client holds a DDL on gateway A (the wire proxy); a DBA approves it through gateway
B's HTTP API (``pgwarden serve``); LISTEN/NOTIFY wakes A, which runs the held statement and answers
its client. The same request cannot be approved twice, and the agent cannot approve its own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import psycopg
import pytest
import yaml

from pgwarden.engine.dev_issuer import DevIssuer, identity_yaml


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def gateways(tmp_path: Path, make_db):
    target = make_db("CREATE TABLE orders (id int PRIMARY KEY, placed_at date);"
                     "INSERT INTO orders VALUES (1, '2026-11-30');")
    control = make_db("")
    issuer = DevIssuer.init(tmp_path / "issuer")
    identity = yaml.safe_load(identity_yaml(issuer))["identity"]
    proxy_port, http_port = _port(), _port()
    configs = []
    for name in ("a", "b"):
        config = {
            "version": 1,
            "targets": {"main": {"dsn": target}},
            "identity": identity,
            "rules": [
                {"name": "agents", "match": {"groups": ["ai-agents"]}, "target": "main",
                 "approval": {"required_for": ["ddl"], "approvers": ["dba"]}},
                {"name": "dba", "match": {"groups": ["dba"]}, "target": "main",
                 "statements": {"allow": ["read", "write", "ddl"]}},
            ],
            "approvals": {"store": {"postgres": {"dsn": control}}},
            "audit": {"journal_dir": f"journal-{name}"},
            "proxy": {"listen": f"127.0.0.1:{proxy_port}"},
            "serve": {"listen": f"127.0.0.1:{http_port}"},
        }
        path = tmp_path / f"gateway-{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        configs.append(path)
    exe = str(Path(sys.executable).with_name("pgwarden"))
    a = subprocess.Popen([exe, "proxy", "--config", str(configs[0])], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen([exe, "serve", "--config", str(configs[1])], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        _wait_port(proxy_port, a, "gateway A (proxy)")
        _wait_port(http_port, b, "gateway B (serve)")
        yield {"target": target, "proxy_port": proxy_port, "http": f"http://127.0.0.1:{http_port}",
               "agent": issuer.mint("nightly-agent", ["ai-agents"]), "dba": issuer.mint("dana", ["dba"])}
    finally:
        for proc in (a, b):
            proc.terminate()
        for proc in (a, b):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_held_on_one_gateway_approved_through_the_other(gateways) -> None:
    g = gateways
    conninfo = (f"host=127.0.0.1 port={g['proxy_port']} dbname=main user=nightly-agent password={g['agent']} "
                "sslmode=disable")
    outcome: dict = {}

    def held_client() -> None:
        notices: list[str] = []
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
                conn.execute("CREATE INDEX orders_placed_at_idx ON orders (placed_at)")
                outcome["status"] = conn.pgconn.transaction_status
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = repr(exc)
        outcome["notices"] = notices
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=held_client)
    thread.start()
    auth = {"Authorization": f"Bearer {g['dba']}"}
    with httpx2.Client(base_url=g["http"], timeout=30) as http:
        request_id = None
        deadline = time.monotonic() + 30
        while request_id is None and time.monotonic() < deadline:
            listed = http.get("/api/approvals", params={"status": "pending"}, headers=auth).json()
            items = listed.get("approvals", listed) if isinstance(listed, dict) else listed
            request_id = next((r["id"] for r in items if "orders_placed_at_idx" in r["statement"]), None)
            time.sleep(0.2)
        assert request_id, "the held statement never reached the shared store"
        # The agent cannot approve its own request, even through the other gateway.
        own = http.post(f"/api/approvals/{request_id}/approve", json={},
                        headers={"Authorization": f"Bearer {g['agent']}"})
        assert own.status_code == 403, own.text
        approved_at = time.monotonic()
        answer = http.post(f"/api/approvals/{request_id}/approve", json={"comment": "ok"}, headers=auth)
        assert answer.status_code == 200, answer.text
        again = http.post(f"/api/approvals/{request_id}/approve", json={}, headers=auth)
        assert again.status_code == 409 and again.json()["error"]["code"] in ("decision_replayed",
                                                                                "approval_already_decided")
    thread.join(timeout=60)
    assert "error" not in outcome, outcome
    assert any(request_id in n for n in outcome["notices"]), outcome["notices"]
    assert outcome["finished"] - approved_at < 5.0
    with psycopg.connect(g["target"]) as conn:
        assert conn.execute("SELECT to_regclass('public.orders_placed_at_idx')").fetchone()[0] is not None
    print(json.dumps({"approve_to_answer_ms": round((outcome["finished"] - approved_at) * 1000, 1)}))
