"""``pgwarden audit sessions | show | replay``: the journal read back as sessions and timelines.

Review reads; it does not verify (``verify`` does) and it skips lines that are not records. A session is
known from its session span, or — while it is still open, or if the gateway died — from the session id
its statement spans carry (then ``end`` is None and ``open`` is True).

:func:`replay` steps through what the client saw. Given a runner (the engine's re-runs read statements on
a sandbox database through the same masking and returns ``(columns, rows)`` of text, or None to skip a
statement), it recomputes each result's digest (:mod:`pgwarden.audit.digest`) and, where it differs, names
the differing rows by comparing the fresh rows with the recorded sample (values passed through the same
``sample_value`` function the recorder used) and the row counts.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import schema
from ._records import file_number, ns_to_iso
from .digest import ResultDigest
from .verify import parse_line

__all__ = [
    "Approval",
    "JournalDamaged",
    "ReplayReport",
    "ReplayStep",
    "SessionSummary",
    "SessionTimeline",
    "StatementStep",
    "areplay",
    "read_spans",
    "replay",
    "sessions",
    "timeline",
]

Rows = Sequence[Sequence[str | None]]
RunResult = tuple[Sequence[str], Rows] | None
# run(text) or run(text, parameters) for a statement recorded with bound values
Runner = Callable[..., "RunResult | Awaitable[RunResult]"]


@dataclass(frozen=True)
class SpanRecord:
    seq: int
    file: str
    line: int
    body: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return self.body.get("attributes") or {}


class JournalDamaged(ValueError):
    """A line of the journal is not a record as the gateway writes it: review refuses to go on."""


def read_spans(directory: str | Path) -> Iterator[SpanRecord]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no journal directory at {directory}")
    for path in sorted(p for p in directory.iterdir() if file_number(p.name) is not None):
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # torn tail
                try:
                    record = parse_line(raw[:-1])
                except ValueError as exc:
                    # never skipped quietly: a line review cannot read is one it would hide from the reviewer
                    raise JournalDamaged(f"{path.name}:{number} is not a journal record ({exc}); run "
                                         "pgwarden audit verify") from None
                if isinstance(record, dict) and record.get("kind") == "span" and isinstance(record.get("body"), dict):
                    yield SpanRecord(int(record.get("seq", 0)), path.name, number, record["body"])


@dataclass
class SessionSummary:
    id: str
    subject: str
    channel: str
    target: str
    groups: list[str] = field(default_factory=list)
    client_address: str = ""
    auth_method: str = ""
    start: str | None = None
    end: str | None = None
    open: bool = True
    statements: int = 0
    decisions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Approval:
    id: str
    requested_at: str | None = None
    approvers: list[str] = field(default_factory=list)
    decided_at: str | None = None
    approver: str | None = None
    decision: str | None = None
    wait_ms: float | None = None


@dataclass
class StatementStep:
    index: int
    seq: int
    where: str
    span_id: str
    start: str | None
    duration_ms: float
    text: str
    upstream_text: str | None
    parameters: list[str | None] | None  # the values bound to $1 … $n, when the client bound any
    parameters_truncated: bool
    parameters_opaque: bool  # some values are hex of a binary value with no text form (not re-bound)
    operation: str | None
    collection: str | None
    decision: str | None
    rule: str | None
    reasons: list[str]
    masked_columns: list[str]
    approvals: list[Approval]
    columns: list[str] | None
    sample: list[list[str | None]] | None
    sample_truncated: bool
    row_count: int | None
    digest: str | None
    digest_version: int  # the encoding of ``digest`` (pgwarden.audit.digest)
    status: str  # "ok" | "error"
    sqlstate: str | None
    error: str | None
    journal_failure: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SessionTimeline:
    session: SessionSummary
    steps: list[StatementStep]

    def as_dict(self) -> dict[str, Any]:
        return {"session": self.session.as_dict(), "statements": [s.as_dict() for s in self.steps]}


def _step(index: int, rec: SpanRecord) -> StatementStep:
    a = rec.attributes
    approvals: dict[str, Approval] = {}
    for event in rec.body.get("events") or []:
        ea = event.get("attributes") or {}
        aid = str(ea.get(schema.APPROVAL_ID, ""))
        if event.get("name") == schema.EVENT_APPROVAL_REQUESTED:
            approvals.setdefault(aid, Approval(aid)).requested_at = ns_to_iso(event.get("time_ns"))
            approvals[aid].approvers = list(ea.get(schema.APPROVERS) or [])
        elif event.get("name") == schema.EVENT_APPROVAL_DECIDED:
            approval = approvals.setdefault(aid, Approval(aid))
            approval.decided_at = ns_to_iso(event.get("time_ns"))
            approval.approver = ea.get(schema.APPROVER) or None
            approval.decision = ea.get(schema.APPROVAL_DECISION)
            approval.wait_ms = ea.get(schema.APPROVAL_WAIT_MS)
    sample = a.get(schema.RESULT_SAMPLE)
    status = rec.body.get("status") or {}
    start, end = int(rec.body.get("start_ns") or 0), int(rec.body.get("end_ns") or 0)
    return StatementStep(
        index=index,
        seq=rec.seq,
        where=f"{rec.file}:{rec.line}",
        span_id=str(rec.body.get("span_id")),
        start=ns_to_iso(start) if start else None,
        duration_ms=round((end - start) / 1e6, 3) if start and end else 0.0,
        text=str(a.get(schema.DB_QUERY_TEXT, "")),
        upstream_text=a.get(schema.UPSTREAM_TEXT),
        parameters=_json_list(a.get(schema.QUERY_PARAMETERS)),
        parameters_truncated=bool(a.get(schema.QUERY_PARAMETERS_TRUNCATED, False)),
        parameters_opaque=bool(a.get(schema.QUERY_PARAMETERS_OPAQUE, False)),
        operation=a.get(schema.DB_OPERATION_NAME),
        collection=a.get(schema.DB_COLLECTION_NAME),
        decision=a.get(schema.DECISION),
        rule=a.get(schema.RULE),
        reasons=list(a.get(schema.REASONS) or []),
        masked_columns=list(a.get(schema.MASKED_COLUMNS) or []),
        approvals=list(approvals.values()),
        columns=list(a[schema.RESULT_COLUMNS]) if schema.RESULT_COLUMNS in a else None,
        sample=json.loads(sample) if isinstance(sample, str) else None,
        sample_truncated=bool(a.get(schema.RESULT_SAMPLE_TRUNCATED, False)),
        row_count=a.get(schema.DB_RETURNED_ROWS),
        digest=a.get(schema.RESULT_SHA256),
        digest_version=int(a.get(schema.RESULT_DIGEST_VERSION, 1)),
        status="error" if status.get("code") == "ERROR" else "ok",
        sqlstate=a.get(schema.DB_STATUS_CODE),
        error=a.get(schema.ERROR_MESSAGE) or (status.get("description") if status.get("code") == "ERROR" else None),
        journal_failure=a.get(schema.JOURNAL_FAILURE),
    )


def _json_list(value: Any) -> list[Any] | None:
    """A JSON-array attribute (parameters), or None when absent or not a JSON array (a redactor may have
    rewritten it)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return [value]
    return parsed if isinstance(parsed, list) else [value]


def _collect(directory: str | Path) -> tuple[dict[str, SessionSummary], dict[str, list[SpanRecord]]]:
    summaries: dict[str, SessionSummary] = {}
    statements: dict[str, list[SpanRecord]] = {}
    for rec in read_spans(directory):
        a = rec.attributes
        sid = a.get(schema.SESSION_ID)
        if not sid:
            continue
        summary = summaries.get(sid)
        if summary is None:
            summary = summaries[sid] = SessionSummary(
                id=sid,
                subject=str(a.get(schema.ENDUSER_ID, "")),
                channel=str(a.get(schema.CHANNEL, "")),
                target=str(a.get(schema.TARGET, "")),
            )
        if a.get(schema.RECORD) == schema.RECORD_SESSION:
            summary.groups = list(a.get(schema.GROUPS) or [])
            summary.client_address = str(a.get(schema.CLIENT_ADDRESS, ""))
            summary.auth_method = str(a.get(schema.AUTH_METHOD, ""))
            summary.start = ns_to_iso(rec.body.get("start_ns"))
            summary.end = ns_to_iso(rec.body.get("end_ns"))
            summary.open = False
        elif a.get(schema.RECORD) == schema.RECORD_STATEMENT:
            statements.setdefault(sid, []).append(rec)
            summary.statements += 1
            decision = str(a.get(schema.DECISION) or "undecided")
            summary.decisions[decision] = summary.decisions.get(decision, 0) + 1
            started = ns_to_iso(rec.body.get("start_ns"))
            if summary.open and (summary.start is None or (started and started < summary.start)):
                summary.start = started
    return summaries, statements


def _parse_since(since: datetime | str | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, str):
        since = datetime.fromisoformat(since.replace("Z", "+00:00"))
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sessions(
    directory: str | Path,
    *,
    since: datetime | str | None = None,
    subject: str | None = None,
    decision: str | None = None,
) -> list[SessionSummary]:
    """Sessions in start order; ``since`` keeps those still running or ended at/after it (naive = UTC)."""
    cutoff = _parse_since(since)
    out = []
    for summary in _collect(directory)[0].values():
        if subject is not None and summary.subject != subject:
            continue
        if decision is not None and not summary.decisions.get(decision):
            continue
        if cutoff is not None and (summary.end or summary.start or "") < cutoff and not summary.open:
            continue
        out.append(summary)
    return sorted(out, key=lambda s: s.start or "")


def timeline(directory: str | Path, session_id: str) -> SessionTimeline:
    """The statements of one session in order; ``session_id`` may be a unique prefix."""
    summaries, statements = _collect(directory)
    matches = [sid for sid in summaries if sid == session_id] or [sid for sid in summaries if sid.startswith(session_id)]
    if len(matches) != 1:
        raise LookupError(
            f"no session {session_id!r} in the journal" if not matches
            else f"{session_id!r} matches {len(matches)} sessions: give more of the id"
        )
    sid = matches[0]
    records = sorted(statements.get(sid, []), key=lambda r: (int(r.body.get("start_ns") or 0), r.seq))
    return SessionTimeline(summaries[sid], [_step(i, r) for i, r in enumerate(records, start=1)])


# -- replay -------------------------------------------------------------------------------------------


@dataclass
class ReplayStep:
    index: int
    text: str
    status: str  # "recorded" (no runner) | "match" | "differs" | "skipped" | "error"
    reason: str = ""
    recorded_digest: str | None = None
    fresh_digest: str | None = None
    recorded_rows: int | None = None
    fresh_rows: int | None = None
    differences: list[str] = field(default_factory=list)
    step: StatementStep | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["step"] = self.step.as_dict() if self.step else None
        return out


@dataclass
class ReplayReport:
    session: SessionSummary
    steps: list[ReplayStep]

    @property
    def ok(self) -> bool:
        return all(s.status in ("recorded", "match", "skipped") for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "session": self.session.as_dict(), "steps": [s.as_dict() for s in self.steps]}


def _default_sample_value(limit: int = 256) -> Callable[[str | None], str | None]:
    def cut(value: str | None) -> str | None:
        return value if value is None or len(value) <= limit else value[:limit] + "…"

    return cut


def _differences(
    step: StatementStep,
    columns: Sequence[str],
    rows: Rows,
    sample_value: Callable[[str | None], str | None],
) -> list[str]:
    out: list[str] = []
    if step.columns is not None and list(columns) != step.columns:
        out.append(f"columns: recorded {step.columns}, now {list(columns)}")
    if step.row_count is not None and len(rows) != step.row_count:
        out.append(f"row count: recorded {step.row_count}, now {len(rows)}")
    names = list(columns)
    for i, recorded in enumerate(step.sample or [], start=1):
        if i > len(rows):
            out.append(f"row {i}: recorded {recorded}, now missing")
            continue
        fresh = [sample_value(v) for v in rows[i - 1]]
        if fresh != recorded:
            cells = [
                f"{names[j] if j < len(names) else j}: {recorded[j] if j < len(recorded) else None!r} → "
                f"{fresh[j] if j < len(fresh) else None!r}"
                for j in range(max(len(fresh), len(recorded)))
                if (recorded[j] if j < len(recorded) else None) != (fresh[j] if j < len(fresh) else None)
            ]
            out.append(f"row {i}: " + ", ".join(cells))
    sampled = len(step.sample or [])
    if not out:
        out.append(
            f"rows beyond the recorded sample of {sampled} differ (sampled rows, columns and count match)"
            if sampled else "the rows differ (no sample was recorded to name them)"
        )
    return out


async def areplay(
    session: SessionTimeline,
    run: Runner | None = None,
    *,
    sample_value: Callable[[str | None], str | None] | None = None,
) -> ReplayReport:
    """Replay ``session``; ``run(text)`` — ``run(text, parameters)`` for a statement recorded with bound
    values — returns ``(columns, rows)`` (or an awaitable of it) or None to skip."""
    cut = sample_value or _default_sample_value()
    steps: list[ReplayStep] = []
    for step in session.steps:
        out = ReplayStep(step.index, step.text, "recorded", recorded_digest=step.digest,
                         recorded_rows=step.row_count, step=step)
        steps.append(out)
        if run is None:
            continue
        if step.decision != "allow" or step.status != "ok" or step.digest is None:
            out.status = "skipped"
            out.reason = (
                f"decision was {step.decision}" if step.decision != "allow"
                else "the statement failed" if step.status != "ok" else "no result digest was recorded"
            )
            continue
        if step.parameters is not None and (step.parameters_truncated or step.parameters_opaque):
            out.status = "skipped"
            out.reason = ("its recorded parameters were truncated" if step.parameters_truncated
                          else "some of its parameters were binary values recorded as hex")
            continue
        try:
            result = run(step.text) if step.parameters is None else run(step.text, step.parameters)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            out.status, out.reason = "error", f"{type(exc).__name__}: {exc}"
            continue
        if result is None:
            out.status, out.reason = "skipped", "the runner does not replay this statement"
            continue
        columns, rows = result
        rows = [list(r) for r in rows]
        try:
            digest = ResultDigest(list(columns), step.digest_version)
            digest.update_many(rows)
        except (TypeError, ValueError) as exc:
            out.status, out.reason = "error", str(exc)
            continue
        out.fresh_digest, out.fresh_rows = digest.hexdigest(), len(rows)
        if out.fresh_digest == step.digest:
            out.status = "match"
        else:
            out.status = "differs"
            out.differences = _differences(step, columns, rows, cut)
    return ReplayReport(session.session, steps)


def replay(
    session: SessionTimeline,
    run: Runner | None = None,
    *,
    sample_value: Callable[[str | None], str | None] | None = None,
) -> ReplayReport:
    """:func:`areplay` for synchronous callers (not from inside a running event loop)."""
    return asyncio.run(areplay(session, run, sample_value=sample_value))


def decision_counts(steps: Sequence[StatementStep]) -> dict[str, int]:
    return dict(Counter(s.decision or "undecided" for s in steps))
