"""What tools hand back: compact results, pending approvals, and tool errors an agent can act on.

Results are columnar (``columns`` once, ``rows`` as arrays): a model pays for every repeated key.
Errors are tool errors whose text is one JSON object — the stable ``code``, the sentence, every
policy reason, and ``allowed_instead`` (what this principal may do) — so an agent can change course
instead of probing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict

from pgwarden.engine.errors import StatementRefused
from pgwarden.engine.session import StatementResult
from pgwarden.errors import PgwardenError

__all__ = ["ApprovalOut", "Column", "ExplainOut", "MigrationOut", "QueryOut", "compact", "refusal",
           "statement_out", "tool_error", "type_name"]

_TYPES = {16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 23: "int4", 25: "text",
          26: "oid", 114: "json", 700: "float4", 701: "float8", 1042: "bpchar", 1043: "varchar",
          1082: "date", 1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval",
          1700: "numeric", 2950: "uuid", 3802: "jsonb", 1009: "text[]", 1007: "int4[]", 1016: "int8[]",
          705: "unknown", 2249: "record", 3220: "pg_lsn", 869: "inet", 650: "cidr", 1560: "bit",
          1562: "varbit", 2277: "anyarray", 194: "pg_node_tree", 1034: "aclitem[]", 28: "xid",
          1700_0: "numeric"}


def type_name(oid: int) -> str:
    return _TYPES.get(oid, f"oid:{oid}")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Out):
    name: str
    type: str
    masked: bool = False


class ApprovalOut(_Out):
    """A statement held for a human: nothing ran yet."""

    id: str
    status: str
    approvers: list[str]
    expires: str | None = None
    how_to_check: str
    reasons: list[str] = []


class StatementOut(_Out):
    command: str
    columns: list[Column] | None = None
    rows: list[list[str | None]] | None = None
    row_count: int
    truncated: bool | None = None


class QueryOut(_Out):
    """``status: ok`` with the (masked) result, or ``status: pending_approval`` with ``approval``."""

    status: Literal["ok", "pending_approval"]
    command: str | None = None
    columns: list[Column] | None = None
    rows: list[list[str | None]] | None = None
    row_count: int | None = None
    truncated: bool | None = None
    statements: list[StatementOut] | None = None  # only when the text held several statements
    notices: list[str] | None = None
    approval: ApprovalOut | None = None
    approved_by: str | None = None
    statement: str | None = None  # the statement an approval released (wait_for_approval)
    migration: dict[str, Any] | None = None  # a migration an approval released (wait_for_approval)


class ExplainOut(_Out):
    plan: list[str]
    analyzed: bool


class MigrationOut(_Out):
    status: Literal["dry_run", "pending_approval", "applied", "already_applied"]
    name: str
    checksum: str
    statements: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    locks: list[dict[str, Any]] | None = None
    approval: ApprovalOut | None = None
    applied_at: str | None = None
    approved_by: str | None = None


def compact(payload: dict[str, Any]) -> CallToolResult:
    """A tool result whose structured content and text are the same compact JSON (no nulls)."""
    data = _drop_none(payload)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def statement_out(result: StatementResult, max_rows: int | None = None) -> dict[str, Any]:
    masked = set(result.masked_columns)
    rows = [list(r) for r in result.rows]
    truncated = result.truncated
    if max_rows is not None and len(rows) > max_rows:
        rows, truncated = rows[:max_rows], True
    out: dict[str, Any] = {"command": result.command_tag, "row_count": result.row_count or len(rows)}
    if result.columns:
        out["columns"] = [{"name": n, "type": type_name(t), **({"masked": True} if n in masked else {})}
                          for n, t in zip(result.columns, result.types or [0] * len(result.columns), strict=False)]
        out["rows"] = rows
        out["truncated"] = truncated
    elif result.status:
        out["row_count"] = _affected(result.status)
    return out


def _affected(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def refusal(code: str, message: str, *, allowed_instead: str | None = None,
            reasons: Sequence[dict[str, Any]] = (), sqlstate: str | None = None) -> ToolError:
    body: dict[str, Any] = {"error": code, "message": message}
    if sqlstate:
        body["sqlstate"] = sqlstate
    if reasons:
        body["reasons"] = list(reasons)
    if allowed_instead:
        body["allowed_instead"] = allowed_instead
    return ToolError(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def tool_error(exc: PgwardenError, *, allowed_instead: str | None = None) -> ToolError:
    """A pgwarden error as a tool error: code, sentence, reasons, and what is allowed instead."""
    reasons: list[dict[str, Any]] = []
    if isinstance(exc, StatementRefused):
        reasons = [{"code": r.code, "message": r.message} for r in exc.verdict.reasons]
    message = exc.message
    if exc.hint:
        message = f"{message} (hint: {exc.hint})"
    detail = getattr(exc, "detail", None)
    if detail:
        message = f"{message} — {detail}"
    return refusal(exc.code, message, allowed_instead=allowed_instead, reasons=reasons, sqlstate=exc.sqlstate)
