"""``pgwarden approvals`` end to end through a subprocess, against a SQLite store and a PostgreSQL one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from console_support import AGENT, get_request, hold, write_config

from pgwarden.engine.dev_issuer import DevIssuer


def pgwarden(*args: str, token: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "PGWARDEN_TOKEN"}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "pgwarden.cli", *args] + (["--token", token] if token else [])
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=60)


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, DevIssuer]:
    issuer = DevIssuer.init(tmp_path / "dev")
    store = None
    if request.param == "postgres":
        dsn = request.getfixturevalue("fresh_db")
        store = f'postgres: {{dsn: "{dsn}"}}'
    return write_config(tmp_path, issuer, store=store), issuer


def test_list_show_approve_refusals(setup) -> None:
    config, issuer = setup
    req = hold(config, "ALTER TABLE public.orders ADD COLUMN note text")
    alice = issuer.mint("alice", ["dba"])
    c = str(config)

    listed = pgwarden("approvals", "list", "--config", c, token=alice)
    assert listed.returncode == 0, listed.stderr
    assert req.id in listed.stdout and "ALTER TABLE" in listed.stdout and alice not in listed.stdout

    shown = pgwarden("approvals", "show", req.id, "--config", c, env={"PGWARDEN_TOKEN": alice})
    assert shown.returncode == 4 and "DDL waits for a DBA" in shown.stdout  # 4: still pending

    too_long = pgwarden("approvals", "approve", req.id, "--window", "2h", "--config", c, token=alice)
    assert too_long.returncode == 1 and "error [window_too_long]" in too_long.stderr
    bad = pgwarden("approvals", "approve", req.id, "--window", "soon", "--config", c, token=alice)
    assert bad.returncode == 2 and "window_invalid" in bad.stderr
    own = pgwarden("approvals", "approve", req.id, "--config", c, token=issuer.mint(AGENT.subject, ["dba"]))
    assert own.returncode == 1 and "self_approval_forbidden" in own.stderr
    outsider = pgwarden("approvals", "approve", req.id, "--config", c, token=issuer.mint("mallory", ["sales"]))
    assert outsider.returncode == 1 and "approver_not_allowed" in outsider.stderr and "dba" in outsider.stderr
    assert get_request(config, req.id).pending  # nothing changed

    done = pgwarden("approvals", "approve", req.id, "--window", "30min", "--comment", "nightly", "--json",
                    "--config", c, token=alice)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "approved" and data["decided_by"] == "alice" and data["window"] is not None
    replayed = pgwarden("approvals", "approve", req.id, "--config", c, "--json", token=alice)
    assert replayed.returncode == 1 and json.loads(replayed.stdout)["error"]["code"] == "decision_replayed"
    other = pgwarden("approvals", "deny", req.id, "--reason", "no", "--config", c,
                     token=issuer.mint("bob", ["dba"]))
    assert other.returncode == 1 and "approval_already_decided" in other.stderr
    assert pgwarden("approvals", "show", req.id, "--config", c, token=alice).returncode == 0
    assert get_request(config, req.id).comment == "nightly"


def test_deny_and_bad_input(setup) -> None:
    config, issuer = setup
    c = str(config)
    req = hold(config, "DROP TABLE public.customers")
    bob = issuer.mint("bob", ["dba"])
    denied = pgwarden("approvals", "deny", req.id, "--reason", "backup first", "--config", c, token=bob)
    assert denied.returncode == 0 and "denied" in denied.stdout
    assert get_request(config, req.id).comment == "backup first"

    unknown = pgwarden("approvals", "show", "apr_nope", "--config", c, token=bob)
    assert unknown.returncode == 2 and "approval_not_found" in unknown.stderr
    missing = pgwarden("approvals", "list", "--config", c)
    assert missing.returncode == 2 and "token_missing" in missing.stderr
    expired = pgwarden("approvals", "list", "--config", c, token=issuer.mint("bob", ["dba"], ttl_s=60,
                                                                             now=time.time() - 3600))
    assert expired.returncode == 1 and "token_expired" in expired.stderr
    audience = pgwarden("approvals", "list", "--config", c, token=issuer.mint("bob", ["dba"], audience="x"))
    assert audience.returncode == 1 and "wrong_audience" in audience.stderr
    forged = bob[:-4] + ("AAAA" if not bob.endswith("AAAA") else "BBBB")
    assert "bad_signature" in pgwarden("approvals", "list", "--config", c, token=forged).stderr
    no_reason = pgwarden("approvals", "deny", req.id, "--config", c, token=bob)
    assert no_reason.returncode == 2  # argparse: --reason is required
    bad_config = pgwarden("approvals", "list", "--config", str(config.parent / "missing.yaml"), token=bob)
    assert bad_config.returncode == 2


def test_store_down_exits_3(tmp_path: Path) -> None:
    issuer = DevIssuer.init(tmp_path / "dev")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = write_config(tmp_path, issuer, store=f"sqlite: {{path: {blocker}/approvals.db}}")
    result = pgwarden("approvals", "list", "--config", str(config), token=issuer.mint("alice", ["dba"]))
    assert result.returncode == 3 and "approval_store_unavailable" in result.stderr
