"""OTLP/HTTP (protobuf) export of the audit spans, behind a batch processor.

:func:`otlp_processor` builds ``BatchSpanProcessor(ExportFilter(OTLPSpanExporter(...)))``. The batch
processor only queues on the statement's thread; a collector that is down delays export (the SDK retries
with backoff, then drops the batch once its queue is full) and never blocks or fails a statement. The
journal, not OTLP, is the record that gates a result.

:class:`ExportFilter` rewrites what leaves the host: with ``otlp_text="sanitised"`` statement texts are
replaced by ``pglast.parser.normalize`` (every literal a ``$n`` placeholder; a text that does not parse is
dropped rather than sent raw), and the result sample is dropped unless ``otlp_sample`` is true.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from pglast import parser

from pgwarden.errors import ConfigurationError

from . import schema
from .config import AuditSettings

__all__ = ["ExportFilter", "otlp_processor", "sanitise"]

_log = logging.getLogger(__name__)
_TEXT_KEYS = (schema.DB_QUERY_TEXT, schema.UPSTREAM_TEXT)
_SAMPLE_KEYS = (schema.RESULT_SAMPLE,)


def sanitise(sql: str) -> str | None:
    """``sql`` with every literal replaced by a placeholder, or None when it does not parse."""
    try:
        return parser.normalize(sql)
    except Exception:  # pglast raises ParseError, and others on odd input: never send the raw text
        return None


class ExportFilter(SpanExporter):
    """Rewrites span attributes before handing the spans to another exporter."""

    def __init__(self, inner: SpanExporter, *, text: str = "sanitised", sample: bool = False) -> None:
        self.inner = inner
        self._sanitise = text == "sanitised"
        self._drop = () if sample else _SAMPLE_KEYS

    def _attributes(self, attrs):
        out = dict(attrs or {})
        for key in self._drop:
            out.pop(key, None)
        if self._sanitise:
            for key in _TEXT_KEYS:
                if key in out:
                    clean = sanitise(str(out[key]))
                    if clean is None:
                        out.pop(key)
                    else:
                        out[key] = clean
        return out

    def rewrite(self, span: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=span.name,
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes=self._attributes(span.attributes),
            events=[Event(e.name, self._attributes(e.attributes), e.timestamp) for e in span.events],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.rewrite(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _headers(settings: AuditSettings) -> dict[str, str] | None:
    if not settings.otlp_headers_env:
        return None
    raw = os.environ.get(settings.otlp_headers_env)
    if raw is None:
        raise ConfigurationError(
            "otlp_headers_missing",
            f"audit.otlp_headers_env names {settings.otlp_headers_env}, which is not set",
            hint=f"export {settings.otlp_headers_env}='name=value,…' or remove audit.otlp_headers_env",
        )
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigurationError(
                "otlp_headers_invalid", f"{settings.otlp_headers_env} must hold 'name=value' pairs separated by ','"
            )
        headers[name.strip()] = value.strip()
    return headers


class _BoundedShutdown(BatchSpanProcessor):
    """A batch processor whose shutdown waits a bounded time for a collector that may be down."""

    def __init__(self, exporter: SpanExporter, *, shutdown_timeout_ms: int, **kwargs) -> None:
        super().__init__(exporter, **kwargs)
        self._shutdown_timeout_ms = shutdown_timeout_ms

    def shutdown(self) -> None:
        self._batch_processor.shutdown(timeout_millis=self._shutdown_timeout_ms)


def otlp_processor(settings: AuditSettings, *, exporter: SpanExporter | None = None) -> BatchSpanProcessor:
    """The OTLP span processor for ``settings`` (endpoint from settings, else the standard env vars)."""
    inner = exporter or OTLPSpanExporter(
        endpoint=settings.otlp_endpoint, headers=_headers(settings), timeout=settings.otlp_timeout_s
    )
    return _BoundedShutdown(
        ExportFilter(inner, text=settings.otlp_text, sample=settings.otlp_sample),
        shutdown_timeout_ms=int(settings.otlp_timeout_s * 1000),
        schedule_delay_millis=500,
    )
