"""Every reason code a verdict can carry, each with the SQLSTATE a wire client is told.

Codes are stable: agents, scripts, dashboards and the audit trail match on them, and
``docs/policy.md`` lists each one (a test keeps the two in step, and another checks that
every code the policy emits is one of these). The SQLSTATE is what the wire proxy puts in
its ErrorResponse, chosen from PostgreSQL's own classes so a client library maps the
refusal to the right exception: ``42501`` insufficient_privilege for what policy forbids,
``42601`` syntax_error, ``54000`` program_limit_exceeded, ``25006`` read_only_sql_transaction,
``0A000`` feature_not_supported, ``55000`` object_not_in_prerequisite_state for approvals.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ReasonCode", "sqlstate_for"]


class ReasonCode(StrEnum):
    def __new__(cls, value: str, sqlstate: str) -> ReasonCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.sqlstate = sqlstate  # type: ignore[attr-defined]
        return member

    # the text itself
    SYNTAX_ERROR = "syntax_error", "42601"
    TOO_COMPLEX = "too_complex", "54001"
    TOO_LARGE = "too_large", "54000"
    NUL_CHARACTER = "nul_character", "22021"
    EMPTY = "empty", "42601"
    NOT_UNDERSTOOD = "not_understood", "0A000"
    UNKNOWN_COLUMNS = "unknown_columns", "42703"
    # who may do what
    NO_RULE = "no_rule", "42501"
    STATEMENT_CLASS_DENIED = "statement_class_denied", "42501"
    MISSING_WHERE = "missing_where", "42501"
    READ_WRITE_TRANSACTION = "read_write_transaction", "25006"
    SCHEMA_DENIED = "schema_denied", "42501"
    TABLE_DENIED = "table_denied", "42501"
    WRITE_NOT_GRANTED = "write_not_granted", "42501"
    SYSTEM_CATALOG_WRITE = "system_catalog_write", "42501"
    CATALOG_DENIED = "catalog_denied", "42501"
    SENSITIVE_CATALOG = "sensitive_catalog", "42501"
    STATISTICS_LEAK = "statistics_leak", "42501"
    FUNCTION_NOT_ALLOWED = "function_not_allowed", "42501"
    FUNCTION_DENIED = "function_denied", "42501"
    STATE_CHANGING_FUNCTION = "state_changing_function", "25006"
    FUNCTION_AMBIGUOUS = "function_ambiguous", "42725"
    NOTIFICATION = "notification", "25006"
    SESSION_LOCK = "session_lock", "42501"
    SERVER_SECRET = "server_secret", "42501"
    TOAST_STORAGE = "toast_storage", "42501"
    SEQUENCE_LEAK = "sequence_leak", "42501"
    CATALOG_TEXT_LEAK = "catalog_text_leak", "42501"
    SERVER_FILE_ACCESS = "server_file_access", "42501"
    SERVER_PROGRAM = "server_program", "42501"
    DYNAMIC_SQL = "dynamic_sql", "42501"
    WHOLE_TABLE_SERIALISER = "whole_table_serialiser", "42501"
    CONFIGURATION_CHANGE = "configuration_change", "42501"
    SESSION_CHANGE = "session_change", "42501"
    SETTING_NOT_ALLOWED = "setting_not_allowed", "42501"
    BACKEND_SIGNAL = "backend_signal", "42501"
    LARGE_OBJECT = "large_object", "42501"
    NETWORK_ACCESS = "network_access", "42501"
    REPLICATION_CONTROL = "replication_control", "42501"
    RAW_STORAGE_ACCESS = "raw_storage_access", "42501"
    # masking
    CATALOG_NEEDED = "catalog_needed", "0A000"
    MASKED_EXPRESSION = "masked_expression", "42501"
    MASKED_PREDICATE = "masked_predicate", "42501"
    MASKED_DATA_LAUNDERING = "masked_data_laundering", "42501"
    MASKED_EXISTENCE_PROBE = "masked_existence_probe", "42501"
    MASKED_RETURNING = "masked_returning", "42501"
    MASKED_NOT_REWRITTEN = "masked_not_rewritten", "42501"
    COPY_MASKED = "copy_masked", "42501"
    COPY_BINARY_MASKED = "copy_binary_masked", "0A000"
    COPY_FORMAT_OPTION = "copy_format_option", "0A000"
    MASK_KEY_UNAVAILABLE = "mask_key_unavailable", "58000"
    REWRITE_INCOMPLETE = "rewrite_incomplete", "0A000"
    REWRITE_FAILED = "rewrite_failed", "0A000"
    # approvals
    APPROVAL_REQUIRED = "approval_required", "55000"
    APPROVAL_NEEDS_SINGLE_STATEMENT = "approval_needs_single_statement", "55000"
    # the doors
    READ_ONLY_REQUIRED = "read_only_required", "55000"


_BY_CODE = {m.value: m for m in ReasonCode}


def sqlstate_for(code: str) -> str:
    """The SQLSTATE for a reason code; ``42501`` (insufficient_privilege) for a code not listed."""
    member = _BY_CODE.get(code)
    return member.sqlstate if member is not None else "42501"  # type: ignore[attr-defined]
