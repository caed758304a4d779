"""The statement record's fast path (attributes known plain where they are set, session and verdict parts
prepared once) journals exactly the bytes of the reference encoding (``_body`` + RFC 8785) of the same span."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import rfc8785
from audit_helpers import redact
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from pgwarden.audit import AuditRecorder, AuditSettings, ResultDigest, schema
from pgwarden.audit.recorder import StatementRecord
from pgwarden.audit.verify import verify
from pgwarden.policy.verdict import Decision, Reason, StatementPlan, Verdict


def _reference_line(line: bytes, record: StatementRecord) -> bytes:
    """The line the reference path writes for ``record`` at the seq, prev, name and end the journal used."""
    written = orjson.loads(line)
    body = written["body"]
    reference = record._body(body["name"], int(body["end_ns"]), body["service"])
    core = rfc8785.dumps({"seq": written["seq"], "prev": written["prev"], "kind": "span", "body": reference})
    digest = hashlib.sha256(core).hexdigest()
    return core[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


class _Journalled:
    def __init__(self, directory: Path, **kwargs: Any) -> None:
        self.directory = directory
        settings = AuditSettings(journal_dir=directory, fsync="batch", checkpoint_every=10**6)
        self.recorder = AuditRecorder(settings, **kwargs)
        self.plain: list[bool] = []

    def end(self, record: StatementRecord) -> None:
        """End ``record`` and check that its journal line is the reference encoding of it."""
        self.plain.append(record._plain)
        self.recorder.end_statement(record)
        line = (self.directory / "journal-000001.jsonl").read_bytes().splitlines(keepends=True)[-1]
        assert orjson.loads(line)["kind"] == "span"
        assert line == _reference_line(line, record)

    def close(self) -> None:
        self.recorder.close()
        report = verify(self.directory)
        assert report.ok and report.sealed


def _verdict(decision: Decision = Decision.ALLOW, rule: str | None = "agents", reasons=(), tags=("SELECT",)):
    return Verdict(decision=decision, rule=rule, reasons=tuple(reasons),
                   plans=tuple(StatementPlan(i, t) for i, t in enumerate(tags)), policy_version="v7")


def _statement(recorder: AuditRecorder, session, sql: str, verdict, *, params=None, rows=(("1", None),),
               columns=("id", "note")) -> StatementRecord:
    record = recorder.open_statement(session, sql)
    record.decided_verdict(verdict)
    if params is not None:
        record.parameters(params)
    digest = ResultDigest(list(columns))
    digest.update_many(rows)
    record.result(list(columns), list(rows), len(rows), digest)
    return record


def test_fast_path_records_are_the_reference_bytes(tmp_path: Path) -> None:
    j = _Journalled(tmp_path / "journal", redact=redact)
    r = j.recorder
    sessions = [r.start_session("alice", ["dev"], "wire", "shop", "10.0.0.1", "jwt"),
                r.start_session("zoë ☃", ["équipe"], "mcp", "boutique-é", None, None)]
    verdicts = [
        _verdict(),
        _verdict(reasons=[Reason("masked", "card is masked ✓")], tags=("SELECT", "UPDATE")),
        _verdict(Decision.DENY, None, [Reason("table_denied", "no access to «secrets»")], ()),
        SimpleNamespace(decision=Decision.ALLOW, policy_version="v8", rule="r", reasons=(),
                        masked_columns=("public.t.cärd", "public.t.email"), plans=()),
    ]
    for session in sessions:
        for verdict in verdicts:
            for sql in ("SELECT id, note FROM t WHERE id = $1", "SELECT 'naïve ☕ 4111111111111111'"):
                j.end(_statement(r, session, sql, verdict))  # the same text twice: cached digest and text
                j.end(_statement(r, session, sql, verdict, params=["1", None, "ünï", "x" * 5000],
                                 rows=[["é", None], ["zed.sentinel@example.org", "2"]]))
                record = _statement(r, session, sql, verdict, params=["bad"], rows=[], columns=("ç",))
                record.error("42P01", "relation «t» does not exist for zed.sentinel@example.org")
                j.end(record)
    assert all(j.plain)  # every one of them took the fast path
    for session in sessions:
        session.end()
    j.close()


def test_records_outside_the_fast_path_still_match_and_verify(tmp_path: Path) -> None:
    j = _Journalled(tmp_path / "journal", redact=redact)
    r = j.recorder
    session = r.start_session("alice", [], "wire", "shop")
    verdict = _verdict()

    approval = _statement(r, session, "DELETE FROM t", verdict)
    approval.approval_requested("a1", ["bob", "zoë"])
    approval.approval_decided("a1", "bob", "approved", 12.5)  # a float: the ready form converts it
    j.end(approval)

    odd = r.open_statement(session, "SELECT 1", attributes={"pgwarden.test.ratio": 0.1, "pgwarden.big": 2**60})
    odd.decided_verdict(verdict)
    j.end(odd)

    non_ascii_key = r.open_statement(session, "SELECT 2", attributes={"pgwarden.clé": "v"})
    non_ascii_key.decided_verdict(verdict)
    j.end(non_ascii_key)  # no ready form at all: the reference path

    tuples = r.open_statement(session, "SELECT 3")
    tuples.set_many({schema.DB_NAMESPACE: "shop", "pgwarden.test.tags": ("a", "b")})
    j.end(tuples)

    with pytest.raises(RuntimeError), r.statement(session, "SELECT 4") as failing:
        failing.decided_verdict(verdict)
        raise RuntimeError("boom for zed.sentinel@example.org")
    line = (j.directory / "journal-000001.jsonl").read_bytes().splitlines(keepends=True)[-1]
    assert line == _reference_line(line, failing)

    assert j.plain == [False, False, False, True]
    session.end()
    j.close()


def test_a_statement_under_another_span_and_a_redact_that_returns_a_subclass(tmp_path: Path) -> None:
    class Text(str):
        pass

    def odd_redact(text: str) -> str:
        return Text(redact(text)) if "odd" in text else redact(text)

    j = _Journalled(tmp_path / "journal", redact=odd_redact)
    r = j.recorder
    session = r.start_session("alice", [], "wire", "shop")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("tools/call"):
        linked = _statement(r, session, "SELECT id, note FROM t", _verdict())
        assert linked.links and linked.parent != session.span.get_span_context()
        j.end(linked)
    assert trace.get_current_span().get_span_context().is_valid is False
    j.end(_statement(r, session, "SELECT id, note FROM t", _verdict()))  # the session's ids again
    odd = _statement(r, session, "SELECT 'odd'", _verdict())
    assert not odd._plain  # a str subclass: the ready form refuses it, the reference path writes it
    j.end(odd)
    session.end()
    j.close()
    lines = (j.directory / "journal-000001.jsonl").read_text().splitlines()
    spans = [r["body"] for r in map(json.loads, lines) if r["kind"] == "span"]
    statements = [s for s in spans if s["attributes"].get(schema.RECORD) == schema.RECORD_STATEMENT]
    session_body = next(s for s in spans if s["attributes"].get(schema.RECORD) == schema.RECORD_SESSION)
    assert statements[0]["parent_span_id"] != session_body["span_id"] and statements[0]["links"]
    assert statements[1]["parent_span_id"] == session_body["span_id"]
    assert statements[1]["trace_id"] == session_body["trace_id"]
