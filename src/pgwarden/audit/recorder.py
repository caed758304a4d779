"""The recorder: sessions and statements as OpenTelemetry spans, journaled before a result is released.

:class:`AuditRecorder` owns a ``TracerProvider`` of its own (the global one belongs to the application, and
an ``OTEL_SDK_DISABLED`` or sampling setting meant for telemetry must not switch the audit trail off): it
samples everything, lifts the SDK's attribute limits, and feeds the journal synchronously and OTLP in a
background batch. Statement spans honour the *current* OpenTelemetry context — a statement run inside the
MCP SDK's ``tools/call`` span becomes its child — and otherwise hang under their session span; either way
they carry the session id and, when the parent is not the session span, a link to it.

Everything textual that is recorded (statement as sent, upstream text, reasons, error messages, sample
values, any string attribute the engine passes that is not an identifier or digest) goes through the
``redact`` function the engine supplies (its content detectors) before it touches a span.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanLimits, SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from . import schema
from .config import AuditSettings
from .digest import ResultDigest
from .journal import Journal, JournalSpanProcessor, JournalUnavailable

__all__ = ["AuditRecorder", "AuditSession", "StatementRecord"]

_log = logging.getLogger(__name__)

Redact = Callable[[str], str]
_NO_LIMITS = SpanLimits(
    max_attributes=SpanLimits.UNSET,
    max_span_attributes=SpanLimits.UNSET,
    max_event_attributes=SpanLimits.UNSET,
    max_events=SpanLimits.UNSET,
    max_links=SpanLimits.UNSET,
    max_attribute_length=SpanLimits.UNSET,
    max_span_attribute_length=SpanLimits.UNSET,
)


def _identity(text: str) -> str:
    return text


def span_name(attrs: Mapping[str, Any]) -> str:
    """OpenTelemetry's DB span name: summary, else ``operation target``, else target, else the system."""
    summary = attrs.get(schema.DB_QUERY_SUMMARY)
    if summary:
        return str(summary)
    target = attrs.get(schema.DB_COLLECTION_NAME) or attrs.get(schema.DB_NAMESPACE)
    operation = attrs.get(schema.DB_OPERATION_NAME)
    if operation and target:
        return f"{operation} {target}"
    if operation:
        return str(operation)
    return str(target) if target else schema.DB_SYSTEM_POSTGRESQL


class AuditSession:
    """One session span: a wire connection, or an MCP tool call (or MCP session) as the engine chooses."""

    def __init__(self, recorder: AuditRecorder, span: Span, session_id: str, attrs: Mapping[str, Any]) -> None:
        self._recorder = recorder
        self.span = span
        self.id = session_id
        # What each statement span repeats, so a statement is self-describing even if the session span
        # never reaches the journal (a crash, a session that is still open).
        self.statement_attributes = {
            schema.SESSION_ID: session_id,
            schema.ENDUSER_ID: attrs[schema.ENDUSER_ID],
            schema.CHANNEL: attrs[schema.CHANNEL],
            schema.TARGET: attrs[schema.TARGET],
        }
        self.ended = False

    def end(self, *, error: str | None = None) -> None:
        """End the session span (idempotent); raises :class:`JournalUnavailable` per the failure setting."""
        if self.ended:
            return
        self.ended = True
        if error:
            self.span.set_status(Status(StatusCode.ERROR, self._recorder.redact(error)))
        self._recorder._end(self.span)


class StatementRecord:
    """What the engine reports about one statement while its ``with recorder.statement(...)`` block runs."""

    def __init__(self, recorder: AuditRecorder, span: Span) -> None:
        self._recorder = recorder
        self.span = span
        self._attrs: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        """Set one attribute (redacted unless it is an identifier or a digest)."""
        value = self._recorder._clean(key, value)
        if value is not None:
            self._attrs[key] = value
            self.span.set_attribute(key, value)

    def set_many(self, attrs: Mapping[str, Any]) -> None:
        """:meth:`set` for each item, handed to the span in one call."""
        clean = self._recorder._clean
        cleaned: dict[str, Any] = {}
        for key, value in attrs.items():
            value = clean(key, value)
            if value is not None:
                cleaned[key] = value
        if cleaned:
            self._attrs.update(cleaned)
            self.span.set_attributes(cleaned)

    def decided(self, attrs: Mapping[str, Any]) -> None:
        """The verdict's attributes (``schema.verdict_attributes``): decision, rule, reasons, masked columns…"""
        self.set_many(attrs)

    def upstream_text(self, text: str) -> None:
        """The statement as rewritten and run upstream."""
        self.set(schema.UPSTREAM_TEXT, text)

    def approval_requested(self, approval_id: str, approvers: Sequence[str]) -> None:
        self.set(schema.APPROVAL_ID, approval_id)
        self.span.add_event(
            schema.EVENT_APPROVAL_REQUESTED,
            {schema.APPROVAL_ID: approval_id, schema.APPROVERS: [self._recorder.redact(a) for a in approvers]},
        )

    def approval_decided(self, approval_id: str, approver: str | None, decision: str, wait_ms: float) -> None:
        approver_text = self._recorder.redact(approver) if approver else ""
        self.set(schema.APPROVAL_ID, approval_id)
        if approver_text:
            self.set(schema.APPROVER, approver_text)
        self.set(schema.APPROVAL_DECISION, decision)
        self.set(schema.APPROVAL_WAIT_MS, float(wait_ms))
        self.span.add_event(
            schema.EVENT_APPROVAL_DECIDED,
            {
                schema.APPROVAL_ID: approval_id,
                schema.APPROVER: approver_text,
                schema.APPROVAL_DECISION: decision,
                schema.APPROVAL_WAIT_MS: float(wait_ms),
            },
        )

    def result(
        self,
        columns: Sequence[str],
        sample_rows: Sequence[Sequence[str | None]],
        row_count: int,
        digest: ResultDigest | str | None,
    ) -> None:
        """The (already masked) result the client received: a capped sample, the row count and the digest."""
        sample = self._recorder.sample(sample_rows)
        attrs: dict[str, Any] = {
            schema.RESULT_COLUMNS: [str(c) for c in columns],
            schema.RESULT_SAMPLE: json.dumps(sample, ensure_ascii=False, separators=(",", ":")),
            schema.RESULT_SAMPLE_TRUNCATED: row_count > len(sample),
            schema.DB_RETURNED_ROWS: int(row_count),
        }
        if digest is not None:
            attrs[schema.RESULT_SHA256] = digest.hexdigest() if isinstance(digest, ResultDigest) else str(digest)
        self.set_many(attrs)

    def error(self, sqlstate: str, message: str) -> None:
        """The statement failed (upstream or in pgwarden): its SQLSTATE and a (redacted) message."""
        self.set(schema.DB_STATUS_CODE, sqlstate)
        self.set(schema.ERROR_TYPE, sqlstate)
        self.set(schema.ERROR_MESSAGE, message)
        self.span.set_status(Status(StatusCode.ERROR, self._recorder.redact(message)))

    def _finish(self) -> None:
        self.span.update_name(span_name(self._attrs))


class AuditRecorder:
    """Sessions and statements as spans, written to the journal (and OTLP) per :class:`AuditSettings`."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        redact: Redact | None = None,
        service_name: str = "pgwarden",
        extra_processors: Sequence[SpanProcessor] = (),
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.redact: Redact = redact or _identity
        self._provider = TracerProvider(
            resource=Resource.create({schema.SERVICE_NAME: service_name}), sampler=ALWAYS_ON, span_limits=_NO_LIMITS
        )
        # The audit trail is not optional telemetry: OTEL_SDK_DISABLED must not turn it into a no-op.
        self._provider._disabled = False
        self.journal: Journal | None = None
        self._journal_processor: JournalSpanProcessor | None = None
        if settings.journal_enabled:
            self.journal = journal or Journal.from_settings(settings)
            self._journal_processor = JournalSpanProcessor(self.journal)
            self._provider.add_span_processor(self._journal_processor)
            try:
                self.journal.open()
            except JournalUnavailable as exc:
                # Not fatal here: each statement refuses (or records the choice) until the journal is back.
                _log.error("audit journal unavailable at start: %s", exc.message)
        if settings.otlp_enabled:
            from .otlp import otlp_processor

            self._provider.add_span_processor(otlp_processor(settings))
        for processor in extra_processors:
            self._provider.add_span_processor(processor)
        tracer = self._provider.get_tracer("pgwarden.audit")
        if not isinstance(tracer, Tracer):
            raise RuntimeError("the audit recorder's tracer provider is disabled")
        self._tracer = tracer

    # -- redaction and samples ---------------------------------------------------------------------

    def _clean(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        if key in schema.STRUCTURAL_ATTRIBUTES:
            return list(value) if isinstance(value, tuple | list | frozenset | set) else value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, tuple | list | frozenset | set):
            return [self.redact(v) if isinstance(v, str) else v for v in value]
        return value

    def sample_value(self, value: str | None) -> str | None:
        """A sample value as recorded: redacted, then cut to ``sample_value_max_length`` (replay does the same)."""
        if value is None:
            return None
        text = self.redact(str(value))
        limit = self.settings.sample_value_max_length
        return text if len(text) <= limit else text[:limit] + "…"

    def sample(self, rows: Sequence[Sequence[str | None]]) -> list[list[str | None]]:
        """:meth:`sample_value` of each value of the first ``sample_rows`` rows."""
        redact = self.redact
        limit = self.settings.sample_value_max_length
        out: list[list[str | None]] = []
        for row in list(rows)[: self.settings.sample_rows]:
            values: list[str | None] = []
            for value in row:
                if value is None:
                    values.append(None)
                    continue
                text = redact(str(value))
                values.append(text if len(text) <= limit else text[:limit] + "…")
            out.append(values)
        return out

    # -- sessions and statements -------------------------------------------------------------------

    def start_session(
        self,
        subject: str,
        groups: Sequence[str] | frozenset[str],
        channel: str,
        target: str,
        client_address: str | None = None,
        auth_method: str | None = None,
        parent_context: otel_context.Context | None = None,
        *,
        session_id: str | None = None,
    ) -> AuditSession:
        """Start a session span (a root span unless ``parent_context`` is given)."""
        sid = session_id or uuid.uuid4().hex
        attrs: dict[str, Any] = {
            schema.RECORD: schema.RECORD_SESSION,
            schema.SESSION_ID: sid,
            schema.ENDUSER_ID: self.redact(str(subject)),
            schema.GROUPS: sorted(self.redact(str(g)) for g in groups),
            schema.CHANNEL: str(channel),
            schema.TARGET: self.redact(str(target)),
            schema.CLIENT_ADDRESS: str(client_address or ""),
            schema.AUTH_METHOD: str(auth_method or ""),
        }
        # An explicit empty Context makes a root span even if the caller runs inside some other span.
        ctx = parent_context if parent_context is not None else otel_context.Context()
        span = self._tracer.start_span(schema.SESSION_SPAN, context=ctx, kind=SpanKind.SERVER, attributes=attrs)
        return AuditSession(self, span, sid, attrs)

    @contextmanager
    def statement(
        self, session: AuditSession, text_as_sent: str, *, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[StatementRecord]:
        """A statement span; leaving the block ends it and makes its journal record durable.

        Raises :class:`JournalUnavailable` on leaving when the record could not be written and
        ``on_journal_failure`` is ``refuse`` — the engine must then not release the result.
        """
        current = trace.get_current_span()
        if current.get_span_context().is_valid:
            parent_ctx = otel_context.get_current()
        else:
            parent_ctx = trace.set_span_in_context(session.span, otel_context.Context())
        links = []
        if current.get_span_context().is_valid and current.get_span_context() != session.span.get_span_context():
            links.append(Link(session.span.get_span_context(), {schema.SESSION_ID: session.id}))
        attrs: dict[str, Any] = {
            schema.RECORD: schema.RECORD_STATEMENT,
            **session.statement_attributes,
            schema.DB_SYSTEM_NAME: schema.DB_SYSTEM_POSTGRESQL,
            schema.QUERY_SHA256: schema.query_digest(text_as_sent),
        }
        # The statement text and the caller's attributes, cleaned as StatementRecord.set would, go in with
        # the span's start (one attribute update instead of one per key).
        clean = self._clean
        given: dict[str, Any] = {}
        for key, value in ((schema.DB_QUERY_TEXT, text_as_sent), *(attributes or {}).items()):
            value = clean(key, value)
            if value is not None:
                given[key] = value
        attrs.update(given)
        span = self._tracer.start_span(
            schema.DB_SYSTEM_POSTGRESQL, context=parent_ctx, kind=SpanKind.CLIENT, attributes=attrs, links=links
        )
        record = StatementRecord(self, span)
        record._attrs.update(given)
        try:
            yield record
        except BaseException as exc:
            if span.status.status_code != StatusCode.ERROR:
                span.set_attribute(schema.ERROR_TYPE, getattr(exc, "code", None) or type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, self.redact(str(exc))))
            record._finish()
            self._end(span)
            raise
        record._finish()
        self._end(span)

    def _end(self, span: Span) -> None:
        continuing = self.settings.on_journal_failure == "continue" and self.journal is not None
        if continuing and not self.journal.healthy:
            span.set_attribute(schema.JOURNAL_FAILURE, "continue")
            span.add_event(schema.EVENT_JOURNAL_FAILURE, {schema.JOURNAL_FAILURE: "continue"})
        span.end()
        if self._journal_processor is None:
            return
        failure = self._journal_processor.take_failure(span.get_span_context().span_id)
        if failure is None:
            return
        if not continuing:
            raise failure
        _log.error("audit journal unavailable, continuing as configured (on_journal_failure=continue): %s",
                   failure.message)
        if span.attributes.get(schema.JOURNAL_FAILURE) is None:
            # The span is already sealed: say so in a follow-up span the other processors (OTLP) receive.
            follow = self._tracer.start_span(
                "pgwarden.journal.failure",
                context=trace.set_span_in_context(span, otel_context.Context()),
                attributes={
                    schema.RECORD: schema.RECORD_JOURNAL_FAILURE,
                    schema.JOURNAL_FAILURE: "continue",
                    schema.JOURNAL_FAILURE_SPAN_ID: format(span.get_span_context().span_id, "016x"),
                    schema.ERROR_MESSAGE: self.redact(failure.message),
                },
            )
            follow.end()
            self._journal_processor.take_failure(follow.get_span_context().span_id)

    # -- lifecycle ---------------------------------------------------------------------------------

    def check_journal(self) -> None:
        """Raise :class:`JournalUnavailable` unless the journal is open and writable (for start-up checks)."""
        if self.journal is not None:
            self.journal.open()
            if not self.journal.healthy:
                raise JournalUnavailable(f"the journal in {self.journal.directory} failed its last write")

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        return self._provider.force_flush(timeout_millis)

    def close(self) -> None:
        """Flush OTLP (bounded), seal the journal with a close checkpoint."""
        self._provider.shutdown()

    def __enter__(self) -> AuditRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
