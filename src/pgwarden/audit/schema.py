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
DB_QUERY_SUMMARY = "db.query.summary"
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"
DB_SYSTEM_POSTGRESQL = "postgresql"

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
RESULT_DIGEST_VERSION = "pgwarden.result.digest_version"  # its encoding (audit/digest.py); absent: 1
# The values bound to $1 … $n (wire door, extended protocol; held statements): a JSON array of their text
# forms or null, each capped, redacted like the sample
QUERY_PARAMETERS = "pgwarden.query.parameters"
QUERY_PARAMETERS_TRUNCATED = "pgwarden.query.parameters_truncated"  # a value or the list was capped
QUERY_PARAMETERS_OPAQUE = "pgwarden.query.parameters_opaque"  # some are hex of a binary value (not replayable)

RECORD = "pgwarden.record"  # "session" | "statement" | "journal_failure": what a span is, whatever its name
SESSION_ID = "pgwarden.session.id"  # on the session span and on each of its statements
AUTH_METHOD = "pgwarden.auth_method"
UPSTREAM_TEXT = "pgwarden.upstream.text"  # the statement as rewritten and run upstream (redacted)
ERROR_MESSAGE = "pgwarden.error.message"  # redacted
APPROVERS = "pgwarden.approval.approvers"
APPROVAL_DECISION = "pgwarden.approval.decision"
RESULT_COLUMNS = "pgwarden.result.columns"
RESULT_SAMPLE_TRUNCATED = "pgwarden.result.sample_truncated"  # more rows than the sample holds
JOURNAL_FAILURE = "pgwarden.journal.failure"  # "continue": the journal was down and policy said go on
JOURNAL_FAILURE_SPAN_ID = "pgwarden.journal.failed_span_id"

RECORD_SESSION = "session"
RECORD_STATEMENT = "statement"
RECORD_JOURNAL_FAILURE = "journal_failure"

EVENT_APPROVAL_REQUESTED = "pgwarden.approval.requested"
EVENT_APPROVAL_DECIDED = "pgwarden.approval.decided"
EVENT_JOURNAL_FAILURE = "pgwarden.journal.failure"

# What each span always carries once recorded (tests hold the recorder to it); statement spans add
# the optional ones when the engine reports them (rule, approval, result, error…).
SESSION_ATTRIBUTES = (RECORD, SESSION_ID, ENDUSER_ID, GROUPS, CHANNEL, TARGET, CLIENT_ADDRESS, AUTH_METHOD)
STATEMENT_ATTRIBUTES = (
    RECORD, SESSION_ID, ENDUSER_ID, CHANNEL, TARGET, DB_SYSTEM_NAME, DB_QUERY_TEXT, QUERY_SHA256,
    DECISION, POLICY_VERSION, REASONS, REASON_CODES, MASKED_COLUMNS,
)
STATEMENT_OPTIONAL_ATTRIBUTES = (
    DB_NAMESPACE, DB_OPERATION_NAME, DB_COLLECTION_NAME, DB_QUERY_SUMMARY, DB_RETURNED_ROWS, DB_STATUS_CODE,
    ERROR_TYPE, ERROR_MESSAGE, RULE, UPSTREAM_TEXT, APPROVAL_ID, APPROVER, APPROVAL_DECISION, APPROVAL_WAIT_MS,
    RESULT_COLUMNS, RESULT_SAMPLE, RESULT_SAMPLE_TRUNCATED, RESULT_SHA256, RESULT_DIGEST_VERSION,
    JOURNAL_FAILURE, QUERY_PARAMETERS, QUERY_PARAMETERS_TRUNCATED, QUERY_PARAMETERS_OPAQUE,
)
# Attribute values that are identifiers or digests, never free text: the only strings not passed through
# the engine's redact function (a detector for keys could otherwise eat a hex digest).
STRUCTURAL_ATTRIBUTES = frozenset({
    RECORD, SESSION_ID, DB_SYSTEM_NAME, DB_STATUS_CODE, ERROR_TYPE, QUERY_SHA256, RESULT_SHA256,
    RESULT_DIGEST_VERSION, DECISION, RULE, POLICY_VERSION, REASON_CODES, CHANNEL, AUTH_METHOD, APPROVAL_ID, APPROVAL_DECISION,
    JOURNAL_FAILURE, JOURNAL_FAILURE_SPAN_ID, MASKED_COLUMNS, DB_OPERATION_NAME,
})


def query_digest(sql: str) -> str:
    """The digest an approval binds to and the audit record carries."""
    return hashlib.sha256(sql.encode()).hexdigest()


def verdict_attributes(verdict, sql: str, *, operations: Sequence[str] = ()) -> Mapping[str, object]:
    """Statement-span attributes describing what policy decided about ``sql``."""
    return {DB_SYSTEM_NAME: "postgresql", DB_QUERY_TEXT: sql, QUERY_SHA256: query_digest(sql),
            **verdict_fields(verdict, operations=operations)}


def verdict_fields(verdict, *, operations: Sequence[str] = ()) -> dict[str, object]:
    """The part of :func:`verdict_attributes` that depends on the verdict alone (not on the text)."""
    attrs: dict[str, object] = {
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
