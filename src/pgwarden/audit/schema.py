"""Span names and attribute keys of the audit record, and a verdict's statement-span attributes.

One place for the names, so the journal, the exporters, the review commands and
the tests cannot disagree on how a field is spelled. Values are OpenTelemetry
attribute types only (str, bool, int, float and sequences of them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

SESSION_SPAN = "pgwarden.session"
STATEMENT_SPAN = "pgwarden.statement"

# OpenTelemetry semantic conventions
ENDUSER_ID = "enduser.id"
CLIENT_ADDRESS = "client.address"
DB_SYSTEM_NAME = "db.system.name"
DB_NAMESPACE = "db.namespace"
DB_QUERY_TEXT = "db.query.text"
DB_OPERATION_NAME = "db.operation.name"
DB_COLLECTION_NAME = "db.collection.name"
DB_RETURNED_ROWS = "db.response.returned_rows"
DB_STATUS_CODE = "db.response.status_code"

# pgwarden's own
GROUPS = "pgwarden.groups"
CHANNEL = "pgwarden.channel"  # "mcp" | "wire" | "cli"
TARGET = "pgwarden.target"
DECISION = "pgwarden.decision"
RULE = "pgwarden.rule"
REASONS = "pgwarden.reasons"  # "code: message" strings
REASON_CODES = "pgwarden.reason_codes"
MASKED_COLUMNS = "pgwarden.masked_columns"
POLICY_VERSION = "pgwarden.policy_version"
QUERY_SHA256 = "pgwarden.query.sha256"
APPROVAL_ID = "pgwarden.approval.id"
APPROVER = "pgwarden.approval.approver"
APPROVAL_WAIT_MS = "pgwarden.approval.wait_ms"
RESULT_SAMPLE = "pgwarden.result.sample"  # capped, already masked
RESULT_SHA256 = "pgwarden.result.sha256"  # digest of the whole masked result

EVENT_APPROVAL_REQUESTED = "pgwarden.approval.requested"
EVENT_APPROVAL_DECIDED = "pgwarden.approval.decided"


def query_digest(sql: str) -> str:
    """The digest an approval binds to and the audit record carries."""
    return hashlib.sha256(sql.encode()).hexdigest()


def verdict_attributes(verdict, sql: str, *, operations: Sequence[str] = ()) -> Mapping[str, object]:
    """Statement-span attributes describing what policy decided about ``sql``."""
    attrs: dict[str, object] = {
        DB_SYSTEM_NAME: "postgresql",
        DB_QUERY_TEXT: sql,
        QUERY_SHA256: query_digest(sql),
        DECISION: verdict.decision.value,
        POLICY_VERSION: verdict.policy_version,
        REASON_CODES: [r.code for r in verdict.reasons],
        REASONS: [f"{r.code}: {r.message}" for r in verdict.reasons],
        MASKED_COLUMNS: list(verdict.masked_columns),
    }
    if verdict.rule:
        attrs[RULE] = verdict.rule
    tags = list(operations) or [p.command_tag for p in verdict.plans]
    if tags:
        attrs[DB_OPERATION_NAME] = tags[0] if len(tags) == 1 else "BATCH " + " ".join(tags)
    return attrs
