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
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Span,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
    _Span,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import schema
from ._records import NOT_READY, NotCanonical, json_value, plain_value, ready_value
from .config import AuditSettings
from .digest import DIGEST_VERSION, ResultDigest
from .journal import Journal, JournalSpanProcessor, JournalUnavailable

__all__ = ["AuditRecorder", "AuditSession", "StatementRecord"]

_log = logging.getLogger(__name__)

Redact = Callable[[str], str]
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
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


_SUMMARY = schema.DB_QUERY_SUMMARY
_COLLECTION = schema.DB_COLLECTION_NAME
_NAMESPACE = schema.DB_NAMESPACE
_OPERATION = schema.DB_OPERATION_NAME


def span_name(attrs: Mapping[str, Any]) -> str:
    """OpenTelemetry's DB span name: summary, else ``operation target``, else target, else the system."""
    get = attrs.get
    summary = get(_SUMMARY)
    if summary:
        return str(summary)
    target = get(_COLLECTION) or get(_NAMESPACE)
    operation = get(_OPERATION)
    if operation and not target and type(operation) is str:
        return operation  # what str() gives: the common name of a statement record
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
        # Once per session rather than per statement (statement_attributes is read only): the head of
        # every statement's attributes, whether it is in the form the journal encodes as it stands
        # (plain_value), and the hex of the session span's ids (the parent of its statements outside an
        # MCP request span).
        self._head: dict[str, Any] = {
            schema.RECORD: schema.RECORD_STATEMENT,
            **self.statement_attributes,
            schema.DB_SYSTEM_NAME: schema.DB_SYSTEM_POSTGRESQL,
        }
        self._head_plain = plain_value(self._head)
        self._hex: tuple[SpanContext, str, str] | None = None

    def _ids_hex(self, ctx: SpanContext) -> tuple[str, str]:
        cached = self._hex
        if cached is None or cached[0] is not ctx:
            cached = self._hex = (ctx, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
        return cached[1], cached[2]

    def end(self, *, error: str | None = None) -> None:
        """End the session span (idempotent); raises :class:`JournalUnavailable` per the failure setting."""
        if self.ended:
            return
        self.ended = True
        if error:
            self.span.set_status(Status(StatusCode.ERROR, self._recorder.redact(error)))
        self._recorder._end(self.span)


_SAFE_INT = 2**53 - 1
_STR_ONLY = frozenset({str})
_UNSET_STATUS: Mapping[str, Any] = {"code": "UNSET", "description": None}  # shared by ready bodies: never changed


def _plain_item(key: Any, value: Any) -> bool:
    return type(key) is str and key.isascii() and plain_value(value)


_TEXTS_KEPT = 512  # statement texts whose digest and redaction the recorder keeps
_TEXT_KEPT_CHARS = 8192

PARAMETER_COUNT = 100  # bound values kept per statement record
PARAMETER_CHARS = 1024  # characters kept per value


class StatementRecord:
    """What the engine reports about one statement while its ``with recorder.statement(...)`` block runs.

    A plain record, not an SDK span: attributes, events and status are collected here and, when the block
    ends, written to the journal as one span record (the same body :func:`~.journal.span_body` gives a
    span) and handed as a real SDK span to the other processors (OTLP, extra ones), if any.
    """

    __slots__ = ("_attrs", "_events", "_hex", "_plain", "_recorder", "_status", "links", "parent", "span_id",
                 "start_ns", "trace_id", "trace_state")

    def __init__(self, recorder: AuditRecorder, parent: SpanContext, links: list[SpanContext],
                 attrs: dict[str, Any], *, plain: bool = False, ids_hex: tuple[str, str] | None = None) -> None:
        self._recorder = recorder
        self.parent = parent
        self.trace_id = parent.trace_id
        self.trace_state = parent.trace_state
        self.span_id = recorder._ids.generate_span_id()
        self.links = links
        self._attrs = attrs
        # ``_plain``: every attribute is known to be its own ready form (``_records.plain_value``, checked
        # where each one is set), so the journal body takes ``_attrs`` as it stands; False: ``ready_value``
        # converts (or refuses) them at the end, as for any record.
        self._plain = plain
        # (trace id, parent span id) in hex: the session's, computed once per session
        self._hex = ids_hex if ids_hex is not None else (format(parent.trace_id, "032x"),
                                                         format(parent.span_id, "016x"))
        self._events: list[tuple[str, int, dict[str, Any]]] = []
        self._status: str | None = None  # the description of an ERROR status
        self.start_ns = time.time_ns()

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attrs

    def set(self, key: str, value: Any) -> None:
        """Set one attribute (redacted unless it is an identifier or a digest)."""
        value = self._recorder._clean(key, value)
        if value is not None:
            self._attrs[key] = value
            if self._plain and not _plain_item(key, value):
                self._plain = False

    def set_many(self, attrs: Mapping[str, Any]) -> None:
        """:meth:`set` for each item."""
        clean = self._recorder._clean
        mine = self._attrs
        plain = self._plain
        for key, value in attrs.items():
            value = clean(key, value)
            if value is not None:
                mine[key] = value
                if plain and not _plain_item(key, value):
                    plain = False
        self._plain = plain

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        self._events.append((name, time.time_ns(), dict(attributes)))

    def decided(self, attrs: Mapping[str, Any]) -> None:
        """The verdict's attributes (``schema.verdict_attributes``): decision, rule, reasons, masked columns…"""
        self.set_many(attrs)

    def decided_verdict(self, verdict: Any) -> None:
        """:meth:`decided` with ``schema.verdict_attributes(verdict, text)`` for the text this record was
        opened with (whose text and digest it already holds): the verdict's own attributes, cleaned once per
        distinct verdict content and reused (a statement of a known shape pays for none of it again)."""
        fields, plain = self._recorder._verdict_entry(verdict)
        self._attrs.update(fields)
        if not plain:
            self._plain = False

    def upstream_text(self, text: str) -> None:
        """The statement as rewritten and run upstream."""
        self.set(schema.UPSTREAM_TEXT, text)

    def approval_requested(self, approval_id: str, approvers: Sequence[str]) -> None:
        self.set(schema.APPROVAL_ID, approval_id)
        self.add_event(
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
        self.add_event(
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
        attrs = self._attrs
        redact = self._recorder.redact
        attrs[schema.RESULT_COLUMNS] = names = self._recorder._column_names(columns)
        try:  # the same text as json.dumps(ensure_ascii=False, separators=(",", ":")) gives, several times faster
            encoded = orjson.dumps(sample).decode()
        except TypeError:
            encoded = json.dumps(sample, ensure_ascii=False, separators=(",", ":"))
        attrs[schema.RESULT_SAMPLE] = text = redact(encoded)
        attrs[schema.RESULT_SAMPLE_TRUNCATED] = truncated = row_count > len(sample)
        attrs[schema.DB_RETURNED_ROWS] = count = int(row_count)
        plain = (type(text) is str and type(truncated) is bool and -_SAFE_INT <= count <= _SAFE_INT
                 and _STR_ONLY.issuperset(map(type, names)))
        if digest is not None:
            if isinstance(digest, ResultDigest):
                attrs[schema.RESULT_SHA256] = hexdigest = digest.hexdigest()
                attrs[schema.RESULT_DIGEST_VERSION] = version = digest.version
                plain = plain and type(hexdigest) is str and plain_value(version)
            else:  # a hex digest computed by result_digest(), of the version it defaults to
                attrs[schema.RESULT_SHA256] = hexdigest = str(digest)
                attrs[schema.RESULT_DIGEST_VERSION] = DIGEST_VERSION
                plain = plain and type(hexdigest) is str
        if not plain:
            self._plain = False

    def parameters(self, values: Sequence[str | None], *, opaque: bool = False, truncated: bool = False) -> None:
        """The values bound to the statement's ``$1 … $n``, in text form (None for NULL): the first
        ``PARAMETER_COUNT``, each cut to ``PARAMETER_CHARS`` characters, redacted. ``opaque``: some are
        ``\\x`` hex of a binary value with no text form here (``replay`` does not re-bind them);
        ``truncated``: the caller already cut some."""
        if not values:
            return
        truncated = truncated or len(values) > PARAMETER_COUNT
        shown: list[str | None] = []
        for value in values[:PARAMETER_COUNT]:
            if value is not None and len(value) > PARAMETER_CHARS:
                value, truncated = value[:PARAMETER_CHARS], True
            shown.append(value)
        try:
            encoded = orjson.dumps(shown).decode()
        except TypeError:
            encoded = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
        self._attrs[schema.QUERY_PARAMETERS] = text = self._recorder.redact(encoded)
        if type(text) is not str:
            self._plain = False
        if truncated:
            self._attrs[schema.QUERY_PARAMETERS_TRUNCATED] = True
        if opaque:
            self._attrs[schema.QUERY_PARAMETERS_OPAQUE] = True

    def error(self, sqlstate: str, message: str) -> None:
        """The statement failed (upstream or in pgwarden): its SQLSTATE and a (redacted) message."""
        self.set(schema.DB_STATUS_CODE, sqlstate)
        self.set(schema.ERROR_TYPE, sqlstate)
        self.set(schema.ERROR_MESSAGE, message)
        self._status = self._recorder.redact(message)

    def _ready_body(self, name: str, end_ns: int, service: str | None) -> dict[str, Any] | None:
        """:meth:`_body` in ``ready_value`` form (``Journal.append(..., ready=True)``), or None outside it.

        The same dict :meth:`_body` gives, but the attributes are ``_attrs`` itself when they are all
        known plain (see ``_plain``), the ids' hex strings the ones computed when the record opened, and
        an UNSET status one shared dict: the journal only encodes it."""
        if type(name) is not str or (service is not None and type(service) is not str):
            return None
        if self._plain:
            attrs = self._attrs
        else:
            attrs = ready_value(self._attrs)
            if attrs is NOT_READY:
                return None
        events = []
        for event_name, stamp, event_attrs in self._events:
            ready = ready_value(event_attrs)
            if ready is NOT_READY or type(event_name) is not str:
                return None
            events.append({"name": event_name, "time_ns": str(stamp), "attributes": ready})
        trace_hex, parent_hex = self._hex
        return {
            "name": name,
            "trace_id": trace_hex,
            "span_id": format(self.span_id, "016x"),
            "parent_span_id": parent_hex,
            "kind": "CLIENT",
            "start_ns": str(self.start_ns),
            "end_ns": str(end_ns),
            "status": _UNSET_STATUS if self._status is None else {"code": "ERROR", "description": self._status},
            "attributes": attrs,
            "events": events,
            "links": [{"trace_id": format(c.trace_id, "032x"), "span_id": format(c.span_id, "016x")}
                      for c in self.links] if self.links else [],
            "service": service,
        }

    def _body(self, name: str, end_ns: int, service: str | None, *, attributes: Any = None,
              events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The journal body, exactly as :func:`~.journal.span_body` gives it for the equivalent SDK span."""
        return {
            "name": name,
            "trace_id": format(self.trace_id, "032x"),
            "span_id": format(self.span_id, "016x"),
            "parent_span_id": format(self.parent.span_id, "016x"),
            "kind": "CLIENT",
            "start_ns": str(self.start_ns),
            "end_ns": str(end_ns),
            "status": {"code": "UNSET", "description": None} if self._status is None
            else {"code": "ERROR", "description": self._status},
            "attributes": json_value(self._attrs) if attributes is None else attributes,
            "events": [{"name": n, "time_ns": str(t), "attributes": json_value(a)} for n, t, a in self._events]
            if events is None else events,
            "links": [{"trace_id": format(c.trace_id, "032x"), "span_id": format(c.span_id, "016x")}
                      for c in self.links],
            "service": service,
        }


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
        self._verdicts: dict[tuple, tuple[dict[str, Any], bool]] = {}
        self._last_verdict: tuple[Any, tuple[dict[str, Any], bool]] | None = None
        # statement text → (schema.query_digest, redact) of it: both pure functions of the text (``redact``
        # must be: the engine's is Detector.redact), and a prepared statement's text comes back each time
        self._texts: dict[str, tuple[str, str]] = {}
        self._columns: dict[tuple[str, ...], list[str]] = {}  # result column names → as recorded
        # Statement records reach the journal directly (end_statement); these get them as SDK spans.
        self._others: SynchronousMultiSpanProcessor | None = None
        others: list[SpanProcessor] = []
        if settings.otlp_enabled:
            from .otlp import otlp_processor

            others.append(otlp_processor(settings))
        others.extend(extra_processors)
        for processor in others:
            self._provider.add_span_processor(processor)
        if others:
            self._others = SynchronousMultiSpanProcessor()
            for processor in others:
                self._others.add_span_processor(processor)
        self._ids = self._provider.id_generator
        self._service = self._provider.resource.attributes.get(schema.SERVICE_NAME)
        tracer = self._provider.get_tracer("pgwarden.audit")
        if not isinstance(tracer, Tracer):
            raise RuntimeError("the audit recorder's tracer provider is disabled")
        self._tracer = tracer

    def _verdict_fields(self, verdict: Any) -> dict[str, Any]:
        return self._verdict_entry(verdict)[0]

    def _verdict_entry(self, verdict: Any) -> tuple[dict[str, Any], bool]:
        """The verdict's cleaned fields, and whether they are plain (``_records.plain_value``)."""
        last = self._last_verdict
        if last is not None and last[0] is verdict:  # verdicts are read only; the last one is held here
            return last[1]
        plans = verdict.plans
        key = (verdict.decision, verdict.policy_version, verdict.rule,
               tuple([(r.code, r.message) for r in verdict.reasons]), verdict.masked_columns,
               tuple([p.command_tag for p in plans]))
        entry = self._verdicts.get(key)
        if entry is None:
            hit: dict[str, Any] = {}
            for name, value in schema.verdict_fields(verdict).items():
                value = self._clean(name, value)
                if value is not None:
                    hit[name] = value
            entry = (hit, plain_value(hit))
            if len(self._verdicts) >= 512:
                self._verdicts.clear()
            self._verdicts[key] = entry
        self._last_verdict = (verdict, entry)
        # Lists inside are shared between records: records only read them (the journal encodes them).
        return entry

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
        for row in (rows if type(rows) is list else list(rows))[: self.settings.sample_rows]:
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

    def _span_id(self) -> int:
        return self._ids.generate_span_id()

    def _column_names(self, columns: Sequence[str]) -> list[str]:
        """The result's column names as recorded (redacted), kept for column lists that come back. The
        list is shared between records: records only read it (the journal encodes it)."""
        if not _STR_ONLY.issuperset(map(type, columns)):
            return [self.redact(str(c)) for c in columns]
        key = tuple(columns)
        names = self._columns.get(key)
        if names is None:
            names = [self.redact(c) for c in key]  # str(c) is c for a str
            if len(self._columns) >= _TEXTS_KEPT:
                self._columns.clear()
            self._columns[key] = names
        return names

    def _statement_text(self, text: str) -> tuple[str, str]:
        """``(schema.query_digest(text), redact(text))``, kept for texts that come back."""
        hit = self._texts.get(text) if type(text) is str else None
        if hit is None:
            hit = (schema.query_digest(text), self.redact(text))
            if type(text) is str and len(text) <= _TEXT_KEPT_CHARS:
                if len(self._texts) >= _TEXTS_KEPT:
                    self._texts.clear()
                self._texts[text] = hit
        return hit

    @contextmanager
    def statement(
        self, session: AuditSession, text_as_sent: str, *, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[StatementRecord]:
        """A statement record; leaving the block ends it and makes its journal record durable.

        Its parent is the *current* span when there is one (the MCP SDK's ``tools/call``; the statement
        then links to its session span), else the session span. Raises :class:`JournalUnavailable` on
        leaving when the record could not be written and ``on_journal_failure`` is ``refuse`` — the engine
        must then not release the result.
        """
        record = self.open_statement(session, text_as_sent, attributes=attributes)
        try:
            yield record
        except BaseException as exc:
            if record._status is None:
                record._attrs[schema.ERROR_TYPE] = error_type = getattr(exc, "code", None) or type(exc).__qualname__
                if not plain_value(error_type):
                    record._plain = False
                record._status = self.redact(str(exc))
            self.end_statement(record)
            raise
        self.end_statement(record)

    def open_statement(
        self, session: AuditSession, text_as_sent: str, *, attributes: Mapping[str, Any] | None = None
    ) -> StatementRecord:
        """:meth:`statement` without the ``with`` block: end it with :meth:`end_statement`."""
        session_ctx = session.span.get_span_context()
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            parent, links = current, ([session_ctx] if current != session_ctx else [])
        else:
            parent, links = session_ctx, []
        attrs = session._head.copy()  # RECORD, the session's attributes, DB_SYSTEM_NAME
        digest, text = self._statement_text(text_as_sent)
        attrs[schema.QUERY_SHA256] = digest
        attrs[schema.DB_QUERY_TEXT] = text
        record = StatementRecord(self, parent, links, attrs, plain=session._head_plain and type(text) is str,
                                 ids_hex=session._ids_hex(parent) if parent is session_ctx else None)
        if attributes:
            record.set_many(attributes)
        return record

    def end_statement(self, record: StatementRecord) -> None:
        """End the record: journal it (raising :class:`JournalUnavailable` per ``on_journal_failure``), then
        hand it to the other processors."""
        continuing = self.settings.on_journal_failure == "continue" and self.journal is not None
        if continuing and not self.journal.healthy:  # type: ignore[union-attr]
            record._attrs[schema.JOURNAL_FAILURE] = "continue"
            record.add_event(schema.EVENT_JOURNAL_FAILURE, {schema.JOURNAL_FAILURE: "continue"})
        end_ns = time.time_ns()
        name = span_name(record._attrs)
        failure: JournalUnavailable | None = None
        if self.journal is not None:
            try:
                ready = record._ready_body(name, end_ns, self._service)
                try:
                    if ready is None:
                        raise NotCanonical("outside the ready form")
                    self.journal.append("span", ready, ready=True)
                except NotCanonical:
                    self.journal.append("span", record._body(name, end_ns, self._service))
            except JournalUnavailable as exc:
                failure = exc
                _log.error("audit journal write failed: %s", exc.message)
            except Exception as exc:  # an unencodable record is a failure too
                failure = JournalUnavailable(f"cannot encode the audit record: {exc!r}")
        if self._others is not None:
            self._export(record, name, end_ns)
        if failure is not None:
            self._journal_failed(failure, continuing, self._context(record),
                                 marked=record._attrs.get(schema.JOURNAL_FAILURE) is not None)

    def _context(self, record: StatementRecord) -> SpanContext:
        return SpanContext(record.trace_id, record.span_id, is_remote=False, trace_flags=_SAMPLED,
                           trace_state=record.trace_state)

    def _export(self, record: StatementRecord, name: str, end_ns: int) -> None:
        """The record as a real SDK span, for the processors other than the journal (OTLP, extra ones)."""
        span = _Span(
            name=name,
            context=self._context(record),
            parent=record.parent,
            resource=self._provider.resource,
            attributes=record._attrs,
            span_processor=self._others,  # type: ignore[arg-type]
            kind=SpanKind.CLIENT,
            links=[Link(c, {schema.SESSION_ID: record._attrs.get(schema.SESSION_ID)}) for c in record.links],
            limits=self._tracer._span_limits,
            instrumentation_scope=self._tracer._instrumentation_scope,
        )
        span.start(start_time=record.start_ns)
        for event_name, stamp, attrs in record._events:
            span.add_event(event_name, attrs, timestamp=stamp)
        if record._status is not None:
            span.set_status(Status(StatusCode.ERROR, record._status))
        span.end(end_time=end_ns)

    def _follow_up(self, ctx: SpanContext, failure: JournalUnavailable) -> None:
        # The record is already sealed: say so in a follow-up span the other processors (OTLP) receive.
        follow = self._tracer.start_span(
            "pgwarden.journal.failure",
            context=trace.set_span_in_context(NonRecordingSpan(ctx), otel_context.Context()),
            attributes={
                schema.RECORD: schema.RECORD_JOURNAL_FAILURE,
                schema.JOURNAL_FAILURE: "continue",
                schema.JOURNAL_FAILURE_SPAN_ID: format(ctx.span_id, "016x"),
                schema.ERROR_MESSAGE: self.redact(failure.message),
            },
        )
        follow.end()
        if self._journal_processor is not None:
            self._journal_processor.take_failure(follow.get_span_context().span_id)

    def _end(self, span: Span) -> None:
        """End a session span (an SDK span, written by the journal processor)."""
        continuing = self.settings.on_journal_failure == "continue" and self.journal is not None
        if continuing and not self.journal.healthy:  # type: ignore[union-attr]
            span.set_attribute(schema.JOURNAL_FAILURE, "continue")
            span.add_event(schema.EVENT_JOURNAL_FAILURE, {schema.JOURNAL_FAILURE: "continue"})
        span.end()
        if self._journal_processor is None:
            return
        failure = self._journal_processor.take_failure(span.get_span_context().span_id)
        if failure is not None:
            self._journal_failed(failure, continuing, span.get_span_context(),
                                 marked=span.attributes.get(schema.JOURNAL_FAILURE) is not None)

    def _journal_failed(self, failure: JournalUnavailable, continuing: bool, ctx: SpanContext, *,
                        marked: bool) -> None:
        """A record's journal write failed: raise (``refuse``), or log it and, unless the record itself says
        so already (``marked``), say so in a follow-up span (``continue``)."""
        if not continuing:
            raise failure
        _log.error("audit journal unavailable, continuing as configured (on_journal_failure=continue): %s",
                   failure.message)
        if not marked:
            self._follow_up(ctx, failure)

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
