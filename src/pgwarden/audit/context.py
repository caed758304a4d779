"""Trace context for the SDK's own spans, so a statement span can be the child of ``tools/call``.

The MCP SDK opens a span per ``tools/call`` through the *global* OpenTelemetry tracer provider. With
none installed that span is a no-op whose context is invalid, and the recorder (which owns a provider
of its own) can only hang statements under their session span. :func:`ensure_tracer_provider`
installs a plain SDK provider when the application has not set one, so the SDK's spans get real
trace and span ids — and trace context arriving in a request's ``_meta`` is honoured — while the
application keeps any provider (and exporters) it installed itself.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

__all__ = ["ensure_tracer_provider"]


def ensure_tracer_provider() -> TracerProvider | None:
    """Install an SDK tracer provider globally if none is; return the one installed, or None."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    return provider
