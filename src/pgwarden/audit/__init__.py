"""The audit trail: OpenTelemetry spans as the record of who asked for what and what policy decided.

This package records; it never decides, and it depends on nothing of ours but :mod:`pgwarden.errors`.

* ``schema`` — span names and attribute keys (OpenTelemetry conventions, ``pgwarden.*`` otherwise);
* ``config`` — :class:`AuditSettings`, embedded by the engine's configuration under ``audit:``;
* ``recorder`` — :class:`AuditRecorder`: sessions and statements as spans, journaled before the
  statement's ``with`` block returns (:class:`JournalUnavailable` when that is impossible);
* ``digest`` — :class:`ResultDigest`, the streaming digest of a masked result (recomputed at replay);
* ``journal`` — the hash-chained, checkpoint-signed local JSONL journal;
* ``otlp`` — OTLP/HTTP export with sanitised text;
* ``verify``, ``review`` and ``cli`` — ``pgwarden audit verify | sessions | show | replay``.
"""

from .config import AuditSettings
from .context import ensure_tracer_provider
from .digest import ResultDigest, result_digest
from .journal import Journal, JournalUnavailable
from .recorder import AuditRecorder, AuditSession, StatementRecord
from .review import ReplayReport, SessionSummary, SessionTimeline, areplay, replay, sessions, timeline
from .verify import VerifyReport, verify

__all__ = [
    "AuditRecorder",
    "AuditSession",
    "AuditSettings",
    "Journal",
    "JournalUnavailable",
    "ReplayReport",
    "ResultDigest",
    "SessionSummary",
    "SessionTimeline",
    "StatementRecord",
    "VerifyReport",
    "areplay",
    "ensure_tracer_provider",
    "replay",
    "result_digest",
    "sessions",
    "timeline",
    "verify",
]
