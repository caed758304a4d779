"""``pgwarden audit`` through a subprocess over a journal written by a real recorder; replay through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from console_support import write_config, write_journal
from test_approvals_cli import pgwarden

from pgwarden.audit import AuditRecorder, AuditSettings, result_digest, schema
from pgwarden.engine.dev_issuer import DevIssuer


def test_sessions_show_verify_over_a_real_journal(tmp_path: Path) -> None:
    config = write_config(tmp_path, DevIssuer.init(tmp_path / "dev"), journal="audit/journal")
    sid = write_journal(tmp_path / "audit" / "journal")  # journal_dir is relative to the config's folder

    listed = pgwarden("audit", "sessions", "--config", str(config), "--json")
    assert listed.returncode == 0, listed.stderr
    sessions = json.loads(listed.stdout)
    assert [s["id"] for s in sessions] == [sid] and sessions[0]["subject"] == "agent-7"
    table = pgwarden("audit", "sessions", "--config", str(config), "--decision", "deny")
    assert table.returncode == 0 and sid[:12] in table.stdout

    shown = pgwarden("audit", "show", sid[:8], "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "approved by alice" in shown.stdout and "************1111" in shown.stdout

    ok = pgwarden("audit", "verify", "--config", str(config))
    assert ok.returncode == 0 and "journal OK" in ok.stdout
    journal = next((tmp_path / "audit" / "journal").glob("journal-*.jsonl"))
    lines = journal.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace("agent-7", "agent-8")
    journal.write_text("".join(lines))
    bad = pgwarden("audit", "verify", "--config", str(config))
    assert bad.returncode == 1 and "FAILED" in bad.stdout

    missing = pgwarden("audit", "show", "nosuchsession", "--config", str(config))
    assert missing.returncode == 2
    no_config = pgwarden("audit", "sessions", "--config", str(tmp_path / "nope.yaml"))
    assert no_config.returncode == 2


def _record_reads(journal_dir: Path) -> str:
    recorder = AuditRecorder(AuditSettings(journal_dir=journal_dir))
    try:
        session = recorder.start_session("agent-7", ["ai-agents"], "wire", "main", auth_method="jwt")
        rows = [["1", "alpha"], ["2", "beta"]]
        for text, decision in [("SELECT id, name FROM items ORDER BY id", "allow"),
                               ("DELETE FROM items WHERE id = 1", "allow")]:
            with recorder.statement(session, text) as st:
                st.decided({schema.DECISION: decision, schema.RULE: "ai-agents"})
                st.result(["id", "name"], rows, len(rows), result_digest(["id", "name"], rows))
        session.end()
        return session.id
    finally:
        recorder.close()


def test_replay_against_a_sandbox_through_the_engine(tmp_path: Path, make_db) -> None:
    sandbox = make_db("CREATE TABLE items (id int PRIMARY KEY, name text);"
                      "INSERT INTO items VALUES (1, 'alpha'), (2, 'beta');")
    config = write_config(tmp_path, DevIssuer.init(tmp_path / "dev"), target_dsn=sandbox)
    sid = _record_reads(tmp_path / "journal")

    same = pgwarden("audit", "replay", sid, "--config", str(config), "--against", sandbox, "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    steps = json.loads(same.stdout)["steps"]
    assert [s["status"] for s in steps] == ["match", "skipped"]  # the DELETE is never re-run
    with psycopg.connect(sandbox, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (2,)
        conn.execute("UPDATE items SET name = 'BETA' WHERE id = 2")

    changed = pgwarden("audit", "replay", sid, "--config", str(config), "--against", sandbox)
    assert changed.returncode == 1
    assert "DIFFERS" in changed.stdout and "row 2" in changed.stdout and "'BETA'" in changed.stdout
