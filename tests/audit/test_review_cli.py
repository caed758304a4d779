"""Review, replay and the ``audit`` CLI, over a journal written by the real recorder."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from audit_helpers import COLUMNS, ROWS, lines, run_statement

from pgwarden.audit import (
    AuditRecorder,
    AuditSettings,
    ResultDigest,
    replay,
    result_digest,
    schema,
    sessions,
    timeline,
)
from pgwarden.audit.cli import main, register


@pytest.fixture
def journal(tmp_path: Path) -> tuple[Path, str, str]:
    settings = AuditSettings(journal_dir=tmp_path / "j", checkpoint_every=4)
    recorder = AuditRecorder(settings)
    alice = recorder.start_session("alice", ["dev"], "wire", "shop", "10.0.0.1", "jwt")
    run_statement(recorder, alice)
    with recorder.statement(alice, "DELETE FROM orders") as st:
        st.decided({schema.DECISION: "needs_approval", schema.REASONS: ["approval: deletes need a human"],
                    schema.DB_OPERATION_NAME: "DELETE", schema.DB_COLLECTION_NAME: "public.orders"})
        st.approval_requested("apr-9", ["carol", "dave"])
        st.approval_decided("apr-9", "carol", "approved", 812.0)
        st.set(schema.DB_RETURNED_ROWS, 0)
    with recorder.statement(alice, "SELECT card::int FROM customers") as st:
        st.decided({schema.DECISION: "allow"})
        st.error("22P02", "invalid input syntax for type integer")
    alice.end()
    bob = recorder.start_session("bob", [], "mcp", "shop")
    run_statement(recorder, bob, "DROP TABLE customers", decision="deny")
    # bob's session is still open when we read
    recorder.journal.sync()
    return settings.journal_dir, alice.id, bob.id


def test_sessions_and_filters(journal) -> None:
    d, alice, bob = journal
    found = {s.id: s for s in sessions(d)}
    assert set(found) == {alice, bob}
    assert found[alice].statements == 3 and not found[alice].open and found[alice].end
    assert found[alice].decisions == {"allow": 2, "needs_approval": 1}
    assert found[bob].open and found[bob].subject == "bob" and found[bob].channel == "mcp"
    assert [s.id for s in sessions(d, subject="bob")] == [bob]
    assert [s.id for s in sessions(d, decision="deny")] == [bob]
    assert sessions(d, since="2999-01-01T00:00:00") == [found[bob]]  # open sessions always count


def test_timeline_shows_what_happened_in_order(journal) -> None:
    d, alice, _ = journal
    line = timeline(d, alice[:8])
    assert [s.text for s in line.steps] == [
        "SELECT id, email, card FROM customers", "DELETE FROM orders", "SELECT card::int FROM customers"]
    first, second, third = line.steps
    assert first.upstream_text.endswith("LIMIT 1001") and first.row_count == 3
    assert first.digest == result_digest(COLUMNS, ROWS) and first.sample == ROWS
    assert first.masked_columns == ["public.customers.card"] and first.rule == "ai-agents"
    [approval] = second.approvals
    assert (approval.id, approval.approvers, approval.approver, approval.decision, approval.wait_ms) == (
        "apr-9", ["carol", "dave"], "carol", "approved", 812.0)
    assert approval.requested_at and approval.decided_at
    assert (third.status, third.sqlstate) == ("error", "22P02")
    assert first.duration_ms >= 0 and first.where == "journal-000001.jsonl:2"  # after the start's checkpoint


def test_replay_matches_and_names_differing_rows(journal) -> None:
    d, alice, _ = journal
    line = timeline(d, alice)
    same = replay(line, lambda text: (COLUMNS, ROWS))
    assert [s.status for s in same.steps] == ["match", "skipped", "skipped"] and same.ok
    changed = [ROWS[0], ["2", "b***@example.org", "************4242"], ROWS[2], ["4", None, None]]

    async def runner(text: str):
        await asyncio.sleep(0)
        return COLUMNS, changed

    report = replay(line, runner)
    step = report.steps[0]
    assert not report.ok and step.status == "differs"
    assert step.fresh_digest == result_digest(COLUMNS, changed) != step.recorded_digest
    assert "row count: recorded 3, now 4" in step.differences
    assert any(d.startswith("row 2: email: None → 'b***@example.org'") for d in step.differences)
    assert replay(line).steps[0].status == "recorded"


def test_digest_encoding_is_unambiguous() -> None:
    assert result_digest(["a"], [[None]]) != result_digest(["a"], [[""]]) != result_digest(["a"], [["NULL"]])
    assert result_digest(["a", "b"], [["x", "y"]]) != result_digest(["a"], [["x", "y"]])
    assert result_digest(["a"], [["ab"], ["c"]]) != result_digest(["a"], [["a"], ["bc"]])
    assert result_digest(["a"], []) != result_digest(["a"], [[]])
    streaming = ResultDigest(["a"])
    streaming.update(["1"])
    assert streaming.hexdigest() == result_digest(["a"], [["1"]])
    streaming.update(["2"])
    assert streaming.hexdigest() == result_digest(["a"], [["1"], ["2"]])
    with pytest.raises(TypeError):
        result_digest(["a"], [[1]])
    # the documented encoding, built by hand, so it cannot drift unnoticed (replay compares with old journals)
    import hashlib

    by_hand = (b"pgwarden.result.v1\n" + b"C" + (1).to_bytes(4, "big") + b"S" + (2).to_bytes(8, "big") + b"id"
               + b"R" + (1).to_bytes(4, "big") + b"S" + (1).to_bytes(8, "big") + b"1"
               + b"R" + (1).to_bytes(4, "big") + b"N"
               + b"E" + (2).to_bytes(8, "big"))
    assert result_digest(["id"], [["1"], [None]], version=1) == hashlib.sha256(by_hand).hexdigest()
    # version 2 (what new records use): each row is the DataRow message PostgreSQL sends in text format
    by_hand = (b"pgwarden.result.v2\n" + b"C" + (1).to_bytes(4, "big") + b"S" + (2).to_bytes(8, "big") + b"id"
               + b"D" + (11).to_bytes(4, "big") + (1).to_bytes(2, "big") + (1).to_bytes(4, "big") + b"1"
               + b"D" + (10).to_bytes(4, "big") + (1).to_bytes(2, "big") + b"\xff\xff\xff\xff"
               + b"E" + (2).to_bytes(8, "big"))
    assert result_digest(["id"], [["1"], [None]]) == hashlib.sha256(by_hand).hexdigest()
    with pytest.raises(ValueError, match="unknown result digest version"):
        ResultDigest(["id"], version=3)


def _cli(*argv: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "pgwarden.audit.cli", *argv], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout + out.stderr


def test_cli_sessions_show_verify_json(journal) -> None:
    d, alice, bob = journal
    rc, out = _cli("audit", "sessions", "--journal", str(d), "--json")
    assert rc == 0 and {s["id"] for s in json.loads(out)} == {alice, bob}
    rc, out = _cli("audit", "sessions", "--journal", str(d))
    assert rc == 0 and "SESSION" in out and alice[:12] in out
    rc, out = _cli("audit", "show", alice, "--journal", str(d), "--json")
    assert rc == 0 and [s["decision"] for s in json.loads(out)["statements"]] == ["allow", "needs_approval", "allow"]
    rc, out = _cli("audit", "show", alice, "--journal", str(d))
    assert rc == 0 and "approval:  apr-9" in out and "DELETE FROM orders" in out
    rc, out = _cli("audit", "verify", "--journal", str(d), "--json")
    report = json.loads(out)
    assert rc == 0 and report["ok"] and not report["sealed"]  # the recorder is still open
    assert report["first_bad"] is None


def test_cli_verify_fails_with_exit_1_naming_the_line(journal) -> None:
    d, *_ = journal
    text = lines(d)
    text[1] = text[1].replace("alice", "mallory")  # line 1 is the start's opened checkpoint
    (d / "journal-000001.jsonl").write_text("".join(text))
    rc, out = _cli("verify", "--journal", str(d), "--json")
    assert rc == 1 and json.loads(out)["first_bad"]["where"] == "journal-000001.jsonl:2"
    rc, out = _cli("verify", "--journal", str(d))
    assert rc == 1 and "FAILED at journal-000001.jsonl:2" in out and "changed" in out


def test_cli_exit_codes_for_usage_and_cannot_run(journal, tmp_path: Path) -> None:
    d, alice, _ = journal
    assert _cli("sessions", "--journal", str(tmp_path / "nowhere"))[0] == 3
    assert _cli("show", "zzzz", "--journal", str(d))[0] == 2
    assert _cli("replay", alice, "--journal", str(d), "--against", "postgresql://x")[0] == 2
    assert _cli("sessions", "--config", "pgwarden.yaml")[0] == 2
    assert _cli("frobnicate")[0] == 2
    assert main(["replay", alice, "--journal", str(d)]) == 0


def test_register_with_hooks_for_config_and_replay(journal) -> None:
    d, alice, _ = journal
    parser = argparse.ArgumentParser()
    seen: dict[str, str] = {}

    def resolve(args):
        seen["config"] = args.config
        return AuditSettings(journal_dir=d)

    def factory(args):
        seen["dsn"] = args.against
        return lambda text: (COLUMNS, ROWS[:2])

    register(parser.add_subparsers(), resolve_settings=resolve, replay_runner_factory=factory)
    args = parser.parse_args(["audit", "replay", alice, "--config", "pgwarden.yaml", "--against", "postgresql://sb", "--json"])
    out = io.StringIO()
    assert args.func(args, out) == 1
    report = json.loads(out.getvalue())
    assert seen == {"config": "pgwarden.yaml", "dsn": "postgresql://sb"}
    assert report["steps"][0]["status"] == "differs" and "row 3: recorded" in report["steps"][0]["differences"][1]
