"""The recorder end to end: spans reach a real OTLP/HTTP receiver and the journal, with the promised names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from audit_helpers import (
    CARD,
    EMAIL,
    PASSWORD,
    ROWS,
    Receiver,
    otlp_attributes,
    records,
    redact,
    run_statement,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pgwarden.audit import AuditRecorder, AuditSettings, JournalUnavailable, result_digest, schema
from pgwarden.errors import PgwardenError


def _spans(directory: Path) -> list[dict]:
    return [r["body"] for r in records(directory) if r["kind"] == "span"]


def test_spans_reach_otlp_and_journal_with_every_promised_attribute(settings, receiver: Receiver) -> None:
    settings = settings.model_copy(update={"otlp_enabled": True, "otlp_endpoint": receiver.endpoint,
                                           "otlp_text": "full", "otlp_sample": True})
    recorder = AuditRecorder(settings, redact=redact, service_name="pgwarden-test")
    session = recorder.start_session("alice", ["dev", "agents"], "wire", "shop", "10.0.0.7", "jwt")
    run_statement(recorder, session)
    session.end()
    recorder.close()

    journal = _spans(settings.journal_dir)
    statement = next(s for s in journal if s["attributes"][schema.RECORD] == schema.RECORD_STATEMENT)
    session_span = next(s for s in journal if s["attributes"][schema.RECORD] == schema.RECORD_SESSION)
    promised = {*schema.STATEMENT_ATTRIBUTES, schema.DB_NAMESPACE, schema.DB_OPERATION_NAME,
                schema.DB_COLLECTION_NAME, schema.DB_RETURNED_ROWS, schema.RULE, schema.UPSTREAM_TEXT,
                schema.RESULT_COLUMNS, schema.RESULT_SAMPLE, schema.RESULT_SHA256}
    assert promised <= statement["attributes"].keys()
    assert set(schema.SESSION_ATTRIBUTES) <= session_span["attributes"].keys()
    assert statement["name"] == "SELECT public.customers"
    assert statement["kind"] == "CLIENT"
    assert statement["parent_span_id"] == session_span["span_id"]
    assert statement["trace_id"] == session_span["trace_id"]
    a = statement["attributes"]
    assert a[schema.DB_SYSTEM_NAME] == "postgresql"
    assert a[schema.DB_RETURNED_ROWS] == 3
    assert a[schema.RESULT_SHA256] == result_digest(["id", "email", "card"], ROWS)
    assert json.loads(a[schema.RESULT_SAMPLE])[1] == ["2", None, "************4242"]
    assert a[schema.SESSION_ID] == session.id == session_span["attributes"][schema.SESSION_ID]
    assert session_span["attributes"][schema.GROUPS] == ["agents", "dev"]

    assert receiver.arrived.wait(5)
    exported = {s.name: s for s in receiver.spans()}
    assert set(exported) == {"SELECT public.customers", schema.SESSION_SPAN}
    got = otlp_attributes(exported["SELECT public.customers"])
    assert promised <= got.keys()
    assert got[schema.DB_QUERY_TEXT] == a[schema.DB_QUERY_TEXT]
    assert got[schema.RESULT_SHA256] == a[schema.RESULT_SHA256]
    assert set(schema.SESSION_ATTRIBUTES) <= otlp_attributes(exported[schema.SESSION_SPAN]).keys()
    resource = {kv.key: kv.value.string_value for kv in receiver.requests[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "pgwarden-test"


def test_otlp_sanitises_text_and_drops_the_sample_by_default(settings, receiver: Receiver) -> None:
    settings = settings.model_copy(update={"otlp_enabled": True, "otlp_endpoint": receiver.endpoint})
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "mcp", "shop")
    run_statement(recorder, session, "SELECT id FROM customers WHERE name = 'Ada' AND id = 42")
    session.end()
    recorder.close()
    statement = next(s for s in receiver.spans() if s.name != schema.SESSION_SPAN)
    got = otlp_attributes(statement)
    assert got[schema.DB_QUERY_TEXT] == "SELECT id FROM customers WHERE name = $1 AND id = $2"
    assert "Ada" not in got[schema.UPSTREAM_TEXT]
    assert schema.RESULT_SAMPLE not in got
    # the journal keeps the full (redacted) text and the sample
    journal = next(s for s in _spans(settings.journal_dir) if s["attributes"][schema.RECORD] == "statement")
    assert "'Ada'" in journal["attributes"][schema.DB_QUERY_TEXT]
    assert schema.RESULT_SAMPLE in journal["attributes"]


def test_a_collector_that_is_down_never_blocks_a_statement(settings) -> None:
    settings = settings.model_copy(update={"otlp_enabled": True, "otlp_endpoint": "http://127.0.0.1:9/v1/traces",
                                           "otlp_timeout_s": 1, "fsync": "batch"})
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "wire", "shop")
    started = time.perf_counter()
    for _ in range(20):
        run_statement(recorder, session)
    elapsed = time.perf_counter() - started
    session.end()
    t0 = time.perf_counter()
    recorder.close()
    assert elapsed < 1.0
    assert time.perf_counter() - t0 < 5
    assert len(_spans(settings.journal_dir)) == 21


def test_statement_is_a_child_of_the_current_span_from_another_tracer(settings) -> None:
    other = TracerProvider()  # the MCP SDK's, say: not ours, not the global one
    memory = InMemorySpanExporter()
    other.add_span_processor(SimpleSpanProcessor(memory))
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "mcp", "shop")
    with other.get_tracer("mcp").start_as_current_span("tools/call query") as tool_span:
        run_statement(recorder, session)
    session.end()
    recorder.close()
    statement = next(s for s in _spans(settings.journal_dir) if s["attributes"][schema.RECORD] == "statement")
    ctx = tool_span.get_span_context()
    assert statement["trace_id"] == format(ctx.trace_id, "032x")
    assert statement["parent_span_id"] == format(ctx.span_id, "016x")
    # still tied to its session, by attribute and by a link
    assert statement["attributes"][schema.SESSION_ID] == session.id
    assert statement["links"] == [{"trace_id": format(session.span.get_span_context().trace_id, "032x"),
                                   "span_id": format(session.span.get_span_context().span_id, "016x")}]


def test_an_mcp_session_may_itself_be_a_child_of_the_tool_call(settings) -> None:
    other = TracerProvider()
    recorder = AuditRecorder(settings)
    with other.get_tracer("mcp").start_as_current_span("tools/call query") as tool_span:
        from opentelemetry import context

        session = recorder.start_session("alice", [], "mcp", "shop", parent_context=context.get_current())
        run_statement(recorder, session)
        session.end()
    recorder.close()
    spans = {s["attributes"][schema.RECORD]: s for s in _spans(settings.journal_dir)}
    assert spans["session"]["parent_span_id"] == format(tool_span.get_span_context().span_id, "016x")
    assert spans["statement"]["parent_span_id"] == format(tool_span.get_span_context().span_id, "016x")


def test_an_unsampled_parent_does_not_lose_the_audit_record(settings) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    other = TracerProvider(sampler=ALWAYS_OFF)
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "mcp", "shop")
    with other.get_tracer("mcp").start_as_current_span("tools/call query"):
        run_statement(recorder, session)
    recorder.close()
    assert any(s["attributes"][schema.RECORD] == "statement" for s in _spans(settings.journal_dir))


def test_no_sentinel_reaches_the_journal_or_otlp(settings, receiver: Receiver) -> None:
    settings = settings.model_copy(update={"otlp_enabled": True, "otlp_endpoint": receiver.endpoint,
                                           "otlp_text": "full", "otlp_sample": True})
    recorder = AuditRecorder(settings, redact=redact)
    session = recorder.start_session(EMAIL, ["dev"], "wire", "shop", "127.0.0.1", "jwt")
    text = f"SELECT * FROM customers WHERE card = '{CARD}' OR email = '{EMAIL}' -- {PASSWORD}"
    leaky_rows = [["1", EMAIL, CARD], ["2", f"x{CARD}y and {EMAIL}", None]]
    with recorder.statement(session, text) as st:
        st.decided({schema.DECISION: "allow", schema.REASONS: [f"masked: {CARD} looks like a card"],
                    schema.DB_QUERY_TEXT: text})
        st.upstream_text(text)
        st.approval_requested("apr-1", [EMAIL])
        st.approval_decided("apr-1", EMAIL, "approved", 1234.5)
        st.result(["id", "email", "card"], leaky_rows, 2, result_digest(["id", "email", "card"], leaky_rows))
    with pytest.raises(RuntimeError), recorder.statement(session, text) as st:
        st.error("22P02", f'invalid input syntax for type integer: "{CARD}"')
        raise RuntimeError(f"upstream said {CARD}")
    session.end(error=f"client {EMAIL} went away")
    recorder.close()
    assert receiver.arrived.wait(5)
    blobs = [p.read_bytes() for p in settings.journal_dir.glob("journal-*.jsonl")] + receiver.raw
    for blob in blobs:
        for sentinel in (CARD, EMAIL, PASSWORD):
            assert sentinel.encode() not in blob
    assert any(b"[redacted]" in blob for blob in blobs)


def test_refuses_with_journal_unavailable_when_the_directory_cannot_exist(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    recorder = AuditRecorder(AuditSettings(journal_dir=blocker / "journal"))
    session = recorder.start_session("alice", [], "wire", "shop")
    with pytest.raises(JournalUnavailable) as caught, recorder.statement(session, "SELECT 1") as st:
        st.decided({schema.DECISION: "allow"})
    assert caught.value.code == "journal_unavailable"
    assert isinstance(caught.value, PgwardenError)
    assert caught.value.as_dict()["sqlstate"] == "58030"
    with pytest.raises(JournalUnavailable):
        recorder.check_journal()
    recorder.close()


def test_refuses_when_the_disk_is_full(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    (directory / "journal-000001.jsonl").symlink_to("/dev/full")
    recorder = AuditRecorder(AuditSettings(journal_dir=directory))
    session = recorder.start_session("alice", [], "wire", "shop")
    with pytest.raises(JournalUnavailable, match="No space left"), recorder.statement(session, "SELECT 1"):
        pass
    recorder.close()


def test_continue_records_the_choice(tmp_path: Path, caplog) -> None:
    directory = tmp_path / "journal"
    memory = InMemorySpanExporter()
    recorder = AuditRecorder(AuditSettings(journal_dir=directory, on_journal_failure="continue"),
                             extra_processors=[SimpleSpanProcessor(memory)])
    # the disk fills up after the journal opened (its start checkpoint written): its file now writes to
    # /dev/full, which fails every write with ENOSPC
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, recorder.journal._fd)
    os.close(full)
    session = recorder.start_session("alice", [], "wire", "shop")
    with recorder.statement(session, "SELECT 1") as st:  # first failure: found while the span ends
        st.decided({schema.DECISION: "allow"})
    with recorder.statement(session, "SELECT 2") as st:  # journal known to be down: on the span itself
        st.decided({schema.DECISION: "allow"})
    recorder.close()
    spans = memory.get_finished_spans()
    failure = [s for s in spans if s.attributes.get(schema.RECORD) == schema.RECORD_JOURNAL_FAILURE]
    assert len(failure) == 1 and failure[0].attributes[schema.JOURNAL_FAILURE] == "continue"
    first = next(s for s in spans if s.attributes.get(schema.DB_QUERY_TEXT) == "SELECT 1")
    assert failure[0].attributes[schema.JOURNAL_FAILURE_SPAN_ID] == format(first.context.span_id, "016x")
    second = next(s for s in spans if s.attributes.get(schema.DB_QUERY_TEXT) == "SELECT 2")
    assert second.attributes[schema.JOURNAL_FAILURE] == "continue"
    assert [e.name for e in second.events] == [schema.EVENT_JOURNAL_FAILURE]
    assert "on_journal_failure=continue" in caplog.text


def test_the_record_is_written_before_the_block_returns(settings) -> None:
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "wire", "shop")
    run_statement(recorder, session)
    assert [s["attributes"][schema.RECORD] for s in _spans(settings.journal_dir)] == ["statement"]
    recorder.close()


def test_span_name_follows_the_db_conventions(settings) -> None:
    recorder = AuditRecorder(settings)
    session = recorder.start_session("alice", [], "wire", "shop")
    with recorder.statement(session, "SELECT 1") as st:
        st.set(schema.DB_QUERY_SUMMARY, "SELECT orders")
    with recorder.statement(session, "BEGIN") as st:
        st.decided({schema.DB_OPERATION_NAME: "BEGIN"})
    with recorder.statement(session, "SELECT 1") as st:
        st.set(schema.DB_NAMESPACE, "shop")
    with recorder.statement(session, "garbage"):
        pass
    recorder.close()
    names = [s["name"] for s in _spans(settings.journal_dir)]
    assert names == ["SELECT orders", "BEGIN", "shop", "postgresql"]


def test_global_tracer_provider_is_left_alone(settings) -> None:
    before = trace.get_tracer_provider()
    AuditRecorder(settings).close()
    assert trace.get_tracer_provider() is before


def test_otel_sdk_disabled_does_not_disable_the_audit(settings, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    recorder = AuditRecorder(settings)
    run_statement(recorder, recorder.start_session("alice", [], "wire", "shop"))
    recorder.close()
    assert len(_spans(settings.journal_dir)) == 1
