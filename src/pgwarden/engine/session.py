"""A session: one principal on one target, turning statement text into masked results.

``authorise`` is the pure part: the verdict for a text, given what this session
has seen (prepared statements, open cursors). ``run`` executes an allowed text
upstream over psycopg and hands back results that are already masked: the mask
plan's strategies on its columns, then the content detectors over every value
and over error and notice text. Values are fetched in PostgreSQL's text form
(every type loads as ``str``), the same form the wire proxy masks, so the two
doors mask identically.

Fail closed: if a result's shape disagrees with the plan (more columns than
the analysis predicted, a column whose table/attribute origin contradicts the
plan), the whole result is withheld rather than released unmasked. Errors
raised by statements that touch masked columns lose their text, keeping only
the SQLSTATE, because PostgreSQL quotes values in errors (``card::int``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.types.string import TextLoader

from pgwarden.policy.analyser import NO_SESSION, SessionFacts, analyse
from pgwarden.policy.analysis import StatementAnalysis, StatementClass
from pgwarden.policy.verdict import Decision, StatementPlan, Verdict

from .gateway import Gateway, GatewayError
from .identity import Principal

_TEXT_ONLY = AdaptersMap()
_TEXT_ONLY.register_loader(0, TextLoader)  # every OID falls back to this: values arrive as text


class StatementRefused(GatewayError):
    """The policy denied the text, or it needs approval that has not been given."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        code = "approval_required" if verdict.decision is Decision.NEEDS_APPROVAL else (
            verdict.reasons[0].code if verdict.reasons else "denied")
        super().__init__(code, "; ".join(r.message for r in verdict.reasons) or "refused by policy")


class UpstreamError(GatewayError):
    """PostgreSQL raised an error; its text is already masked or withheld."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__("upstream_error", message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


@dataclass
class StatementResult:
    command_tag: str
    status: str  # PostgreSQL's command status, e.g. "SELECT 2", "UPDATE 1"
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str | None, ...]] = field(default_factory=list)
    truncated: bool = False
    masked_columns: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    verdict: Verdict
    results: list[StatementResult]
    notices: list[str]


class Session:
    def __init__(self, gateway: Gateway, principal: Principal, target: str | None = None,
                 channel: str = "mcp") -> None:
        self.gateway = gateway
        self.principal = principal
        self.target, _ = gateway.target(target)
        self.channel = channel
        self.rule = gateway.decider.rule_for(principal.subject, principal.groups, self.target)
        self.prepared: dict[str, StatementAnalysis] = {}
        self.cursors: dict[str, StatementAnalysis] = {}
        self._conn: psycopg.AsyncConnection | None = None
        self._notices: list[str] = []
        self._scrub = False

    # -- decisions -------------------------------------------------------------------

    def facts(self) -> SessionFacts:
        if not self.prepared and not self.cursors:
            return NO_SESSION
        return SessionFacts(prepared=dict(self.prepared), cursors=dict(self.cursors))

    def authorise(self, sql: str) -> Verdict:
        return self.gateway.decider.decide(
            sql, subject=self.principal.subject, groups=self.principal.groups, target=self.target,
            catalog=self.gateway.catalog(self.target), session=self.facts())

    # -- execution -------------------------------------------------------------------

    async def run(self, sql: str, *, verdict: Verdict | None = None) -> RunResult:
        """Execute ``sql`` if the policy allows it; results come back masked."""
        verdict = verdict or self.authorise(sql)
        if verdict.decision is not Decision.ALLOW:
            raise StatementRefused(verdict)
        self._scrub = any(p.scrub_errors for p in verdict.plans)
        if any(p.command_tag == "COPY" for p in verdict.plans):
            if len(verdict.plans) != 1:
                raise GatewayError("copy_not_alone", "send COPY as a statement of its own")
            return await self._copy_out(sql, verdict)
        conn = await self._connection()
        self._notices = []
        results: list[StatementResult] = []
        scrub = self._scrub
        wrap = self._wrap_read_only(verdict, conn)
        try:
            async with conn.cursor() as cur:
                if wrap:
                    await cur.execute(b"BEGIN READ ONLY")
                await cur.execute(sql.encode())
                index = 0
                while True:
                    plan = verdict.plans[index] if index < len(verdict.plans) else None
                    results.append(await self._result(cur, plan, verdict.max_rows))
                    index += 1
                    if not cur.nextset():
                        break
                if wrap:
                    await cur.execute(b"COMMIT")
        except psycopg.Error as exc:
            if wrap and not conn.closed:
                await conn.rollback()
            raise self._upstream_error(exc, scrub) from None
        # Only texts that may change the schema or the session's names need a second look;
        # plain reads (the hot path) do not pay for it.
        if (not (verdict.settings and verdict.settings.read_only)
                or any(p.command_tag in _NAMING_TAGS for p in verdict.plans)) and self._remember(sql):
            # DDL changed names the analyser resolves: read the catalog again.
            await self.gateway.arefresh_catalog(self.target)
        return RunResult(verdict, results, list(self._notices))

    async def _copy_out(self, sql: str, verdict: Verdict) -> RunResult:
        """COPY … TO STDOUT: the rows as PostgreSQL formats them, one line each, through the detectors.

        The policy refuses COPY of masked columns, so only detectors apply here. COPY FROM
        STDIN needs the client's data stream, which only the wire proxy carries.
        """
        [statement] = analyse(sql, self.gateway.catalog(self.target)).statements
        if statement.copy_target != "stdout":
            raise GatewayError("copy_from_stdin", "COPY FROM STDIN needs the client's data stream; use INSERT, "
                               "or COPY through the PostgreSQL wire proxy")
        conn = await self._connection()
        self._notices = []
        detector = self.gateway.detector
        lines: list[tuple[str | None, ...]] = []
        limit = verdict.max_rows
        truncated = False
        try:
            async with conn.cursor() as cur, cur.copy(sql.encode()) as copy:
                buffer = b""
                async for block in copy:
                    buffer += bytes(block)
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        if limit is not None and len(lines) >= limit:
                            truncated = True
                            continue
                        text = raw.decode(errors="replace")
                        lines.append((detector.redact(text) if detector else text,))
                status = cur.statusmessage or "COPY"
        except psycopg.Error as exc:
            scrub = any(p.scrub_errors for p in verdict.plans)
            raise self._upstream_error(exc, scrub) from None
        result = StatementResult("COPY", status, ["copy"], lines, truncated)
        return RunResult(verdict, [result], list(self._notices))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            if self.rule is None:
                raise GatewayError("no_rule", "no rule grants this principal access")
            conninfo = self.gateway.conninfo(
                self.target, rule=self.rule, application_name=f"pgwarden:{self.principal.subject}")
            try:
                self._conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, context=_TEXT_ONLY)
            except psycopg.Error as exc:
                raise GatewayError("upstream_unavailable", f"could not connect to target {self.target!r}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
            self._conn.add_notice_handler(self._on_notice)
        return self._conn

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if self._scrub:  # notices quote values just as errors do
            self._notices.append(f"{diag.severity or 'NOTICE'}: notice text withheld because the statement "
                                 "reads masked columns")
            return
        text = f"{diag.severity or 'NOTICE'}: {diag.message_primary or ''}"
        detector = self.gateway.detector
        self._notices.append(detector.redact(text) if detector else text)

    def _wrap_read_only(self, verdict: Verdict, conn: psycopg.AsyncConnection) -> bool:
        # Defence in depth: a text the analysis calls read-only runs in a read-only
        # transaction even when the rule could write — unless it manages
        # transactions itself, or a client transaction is already open.
        if not verdict.settings or not verdict.settings.read_only:
            return False
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        return not any(p.command_tag in _TXN_TAGS for p in verdict.plans)

    async def _result(self, cur: psycopg.AsyncCursor, plan: StatementPlan | None, max_rows: int | None
                      ) -> StatementResult:
        status = cur.statusmessage or ""
        tag = plan.command_tag if plan else status.split(" ")[0]
        if cur.description is None:
            return StatementResult(tag, status)
        detector = self.gateway.detector
        # Names come from the query or the catalog, not from rows; the detectors look anyway.
        columns = [detector.redact(d.name) if detector else d.name for d in cur.description]
        limit = max_rows
        rows = await (cur.fetchmany(limit + 1) if limit is not None else cur.fetchall())
        truncated = limit is not None and len(rows) > limit
        if truncated:
            rows = rows[:limit]
        maskers = self._column_maskers(plan, cur, len(columns))
        out = []
        for row in rows:
            values = []
            for i, value in enumerate(row):
                masker = maskers[i]
                if masker is not None:
                    value = masker(value)
                elif detector is not None and value is not None:
                    value = detector.redact(value)
                values.append(value)
            out.append(tuple(values))
        masked = [columns[m.position] for m in (plan.masks if plan else ()) if m.position < len(columns)]
        return StatementResult(tag, status, columns, out, truncated, masked)

    def _column_maskers(self, plan: StatementPlan | None, cur: psycopg.AsyncCursor, width: int) -> list:
        maskers: list = [None] * width
        if plan is None:
            raise GatewayError("result_shape_mismatch", "PostgreSQL returned more results than the analysis "
                               "predicted; the result is withheld")
        if plan.width is not None and plan.width != width:
            raise GatewayError("result_shape_mismatch", f"PostgreSQL returned {width} columns where the analysis "
                               f"predicted {plan.width}; the result is withheld")
        res = cur.pgresult
        for action in plan.masks:
            if action.position >= width:
                raise GatewayError("result_shape_mismatch", "a masked column is missing from the result; "
                                   "the result is withheld")
            if action.origin is not None and res is not None:
                origin = (res.ftable(action.position), res.ftablecol(action.position))
                if origin[0] and origin != action.origin:
                    raise GatewayError("result_shape_mismatch", f"column {action.position + 1} does not come "
                                       "from the column the policy expected; the result is withheld")
            maskers[action.position] = self.gateway.masker(action)
        return maskers

    def _upstream_error(self, exc: psycopg.Error, scrub: bool) -> UpstreamError:
        diag = exc.diag
        sqlstate = diag.sqlstate or "XX000"
        if scrub:
            return UpstreamError(sqlstate, f"the statement failed (SQLSTATE {sqlstate}); the error text is "
                                 "withheld because the statement reads masked columns")
        detector = self.gateway.detector
        def clean(t):
            return (detector.redact(t) if (detector and t) else t)
        return UpstreamError(sqlstate, clean(diag.message_primary or str(exc)) or "", clean(diag.message_detail),
                             clean(diag.message_hint))

    def _remember(self, sql: str) -> bool:
        """Keep what PREPARE / DECLARE created; True when the text changed the schema."""
        analysis = analyse(sql, self.gateway.catalog(self.target), self.facts())
        for st in analysis.statements:
            if st.prepared_name:
                self.prepared[st.prepared_name] = st
            elif st.cursor_name and st.node == "DeclareCursorStmt":
                self.cursors[st.cursor_name] = st
            elif st.node == "DeallocateStmt":
                name = st.extras.get("name")
                self.prepared.clear() if name is None else self.prepared.pop(str(name), None)
            elif st.node == "ClosePortalStmt":
                name = st.extras.get("name")
                self.cursors.clear() if name is None else self.cursors.pop(str(name), None)
        return any(StatementClass.DDL in st.classes for st in analysis.statements)


_NAMING_TAGS = frozenset({"PREPARE", "DECLARE CURSOR", "DEALLOCATE", "CLOSE CURSOR"})
_TXN_TAGS = frozenset({"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
                       "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED"})
