"""A session: one principal on one target, turning statement text into screened results.

``authorise`` is the pure part: the verdict for a text, given what this session has seen
(its :class:`~pgwarden.engine.state.SessionState`). ``run`` executes an allowed text
upstream on a pinned connection borrowed from the gateway's pool (held for the session's
life, so prepared statements, cursors and transactions behave as on a direct connection)
and hands back results screened by :class:`~pgwarden.policy.results.ResultScreen`: the
plan confirmed against each RowDescription, then masks and content detectors per value.
Rows are streamed in chunks: the session never holds more than the rows it returns
(``max_rows``) plus one chunk, whatever the size of the result, and never more bytes than
the rule's ``max_result_bytes``. One text gets one deadline, the rule's ``statement_timeout``
(a text of many statements cannot run for many timeouts). The verdict's effects update the
session state whatever the outcome, so the gateway's knowledge of prepared statements and
cursors matches the server's.

Fail closed: a result whose shape disagrees with the plan is withheld whole; errors and
notices raised while a statement reads masked columns lose their text, keeping the SQLSTATE.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import psycopg
from psycopg import pq

from pgwarden.policy.results import (
    ColumnInfo,
    ResultScreen,
    ResultShapeMismatch,
    diagnostic_withheld,
    screen_error_fields,
)
from pgwarden.policy.sql import SessionFacts, without_keys
from pgwarden.policy.verdict import Decision, PinnedSettings, StatementPlan, Verdict

from . import upstream
from .errors import GatewayError, StatementRefused, UpstreamError
from .gateway import Gateway
from .principal import Channel, Principal
from .state import RECONCILE_SQL, SessionState

__all__ = ["GatewayError", "RunResult", "Session", "StatementRefused", "StatementResult", "UpstreamError"]


@dataclass
class StatementResult:
    command_tag: str
    status: str  # PostgreSQL's command status, e.g. "SELECT 2", "UPDATE 1"
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str | None, ...]] = field(default_factory=list)
    truncated: bool = False
    masked_columns: list[str] = field(default_factory=list)
    row_count: int = 0  # rows PostgreSQL produced (may exceed len(rows) when truncated)
    types: list[int] = field(default_factory=list)  # type OID per column

    def as_dict(self) -> dict[str, object]:
        return {"command_tag": self.command_tag, "status": self.status, "columns": self.columns,
                "types": self.types, "rows": [list(r) for r in self.rows], "truncated": self.truncated,
                "masked_columns": self.masked_columns, "row_count": self.row_count}


@dataclass
class RunResult:
    verdict: Verdict
    results: list[StatementResult]
    notices: list[str]
    upstream_text: str = ""
    duration_ms: float = 0.0


class Session:
    def __init__(self, gateway: Gateway, principal: Principal, target: str | None = None,
                 channel: Channel | str = Channel.CLI) -> None:
        self.gateway = gateway
        self.principal = principal
        self.target, self._target = gateway.target(target)
        self.channel = Channel(channel)
        self.rule = gateway.decider.rule_for(principal.subject, principal.groups, self.target)
        self.state = SessionState()
        self._conn: psycopg.AsyncConnection | None = None
        self._pool = None
        self._notices: list[str] = []
        self._scrub = False

    # -- decisions -------------------------------------------------------------------

    @property
    def prepared(self):
        return self.state.prepared

    @property
    def cursors(self):
        return self.state.cursors

    def facts(self) -> SessionFacts:
        return self.state.facts()

    def authorise(self, sql: str) -> Verdict:
        return self.gateway.decider.decide(
            sql, subject=self.principal.subject, groups=self.principal.groups, target=self.target,
            catalog=self.gateway.catalog(self.target), session=self.facts())

    # -- execution -------------------------------------------------------------------

    async def run(self, sql: str, *, parameters: Sequence[str | None] | None = None,
                  param_types: Sequence[int] = ()) -> RunResult:
        """Execute ``sql`` if the policy allows it; results come back screened.

        ``parameters`` (text form, None for NULL) make it one statement with ``$n`` parameters.
        """
        verdict = self.authorise(sql)
        if verdict.decision is not Decision.ALLOW:
            raise StatementRefused(verdict)
        return await self._execute(sql, verdict, parameters=parameters, param_types=param_types)

    async def run_released(self, sql: str, verdict: Verdict, *, parameters: Sequence[str | None] | None = None,
                           param_types: Sequence[int] = ()) -> RunResult:
        """Execute ``sql`` that an approver released (only :class:`~pgwarden.engine.runtime.HeldStatements`
        calls this, after binding and consuming the approval): on a connection of its own, pinned
        like the session's but read-write, opened for this statement and closed after it."""
        if verdict.decision is not Decision.NEEDS_APPROVAL or verdict.settings is None or self.rule is None:
            raise StatementRefused(verdict)
        settings = dataclasses.replace(verdict.settings, read_only=False)
        conn = await upstream.connect(self._target, settings, self.gateway.login(self.rule),
                                      target_name=self.target, application_name=settings.application_name)
        try:
            return await self._execute(sql, verdict, conn=conn, parameters=parameters, param_types=param_types)
        finally:
            await conn.close()

    async def _execute(self, sql: str, verdict: Verdict, *, conn: psycopg.AsyncConnection | None = None,
                       parameters: Sequence[str | None] | None = None, param_types: Sequence[int] = ()) -> RunResult:
        started = time.perf_counter()
        if any(e.copy for e in verdict.effects):
            if len(verdict.plans) != 1:
                raise GatewayError("copy_not_alone", "send COPY as a statement of its own")
            if verdict.effects[0].copy != "stdout":
                raise GatewayError("copy_from_stdin", "COPY FROM STDIN needs the client's data stream; use "
                                   "INSERT, or COPY through the PostgreSQL wire proxy", sqlstate="0A000")
        text = sql
        if conn is None:
            conn = await self._connection(verdict.settings)
        else:
            conn.add_notice_handler(self._on_notice)
        self._notices = []
        self._scrub = any(p.scrub_errors for p in verdict.plans)
        wrap = self._wrap_read_only(verdict, conn)
        if not wrap and self._must_wrap(verdict):
            raise StatementRefused(verdict.read_only_refused(
                "around a text that controls transactions itself"
                if any(p.command_tag in _TXN_TAGS for p in verdict.plans) else "inside an open transaction"))
        results: list[StatementResult] = []
        error: UpstreamError | ResultShapeMismatch | None = None
        timeout_s = (verdict.settings.statement_timeout_ms if verdict.settings else 30_000) / 1000
        try:
            with anyio.fail_after(timeout_s + 0.5):
                if wrap:
                    # the empty SELECT takes the transaction's snapshot, after which PostgreSQL refuses SET
                    # TRANSACTION READ WRITE: the text cannot lift the block it runs in
                    await conn.execute(b"BEGIN READ ONLY; SELECT")
                # Masks substituted inside the statement (policy/_rewrite.py) travel in the verdict's
                # upstream text; it is sent, never shown or recorded.
                params = None if parameters is None else [None if p is None else p.encode() for p in parameters]
                error = await self._stream(conn, verdict.text_for_upstream(text).encode(), verdict, results,
                                           params=params, param_types=param_types)
                if wrap:
                    if error is None and conn.info.transaction_status == pq.TransactionStatus.INTRANS:
                        await conn.execute(b"COMMIT")
                    elif conn.info.transaction_status != pq.TransactionStatus.IDLE:
                        await conn.rollback()
        except TimeoutError:
            await upstream.cancel_and_drain(conn)
            raise GatewayError("text_timeout", f"the text ran longer than the rule's statement_timeout "
                               f"({timeout_s:g} s) and was cancelled; split it or make it cheaper",
                               sqlstate="57014") from None
        except psycopg.OperationalError as exc:
            await self._drop_connection()
            raise upstream.UpstreamUnavailable(
                "upstream_unavailable", f"the connection to target {self.target!r} was lost: "
                f"{upstream.first_line(exc)}; try again") from None
        completed = len(results)
        await self._after(conn, verdict, completed, failed=error is not None)
        if error is not None:
            raise error
        # What ran upstream, as the audit trail may keep it: the rewrite's derived keys withheld.
        ran = without_keys(verdict.text_for_upstream(text))
        return RunResult(verdict, results, list(self._notices), ran, (time.perf_counter() - started) * 1000)

    async def _stream(self, conn: psycopg.AsyncConnection, text: bytes, verdict: Verdict,
                      results: list[StatementResult], *, params: Sequence[bytes | None] | None = None,
                      param_types: Sequence[int] = ()) -> UpstreamError | ResultShapeMismatch | None:
        plans = verdict.plans
        max_rows = verdict.max_rows
        max_bytes = self.rule.max_result_bytes if self.rule is not None else 64 << 20
        screen: ResultScreen | None = None
        rows: list[tuple[str | None, ...]] = []
        produced = 0
        size = 0
        truncated = False
        copy_lines: list[tuple[str | None, ...]] | None = None
        single_read = len(plans) == 1 and verdict.settings is not None and verdict.settings.read_only
        events = upstream.execute(conn, text, params=params, param_types=param_types)
        failure: UpstreamError | None = None
        try:
            async for event in events:
                index = len(results)
                plan = plans[index] if index < len(plans) else None
                if isinstance(event, upstream.ResultStart):
                    columns = [ColumnInfo(f.name, f.type_oid, f.table_oid, f.attnum, f.format) for f in event.fields]
                    screen = ResultScreen.build(plan, columns, detector=self.gateway.detector,
                                                masker_for=self.gateway.masker,
                                                raw_masked=self.gateway.raw_masked(self.principal, self.target))
                    types = [f.type_oid for f in event.fields]
                    rows, produced, size, truncated = [], 0, 0, False
                elif isinstance(event, upstream.Rows):
                    assert screen is not None
                    for raw in event.rows:
                        produced += 1
                        if truncated:
                            continue
                        if (max_rows is not None and len(rows) >= max_rows) or size >= max_bytes:
                            truncated = True
                            if single_read:
                                # A read that is cut needs none of its other rows: stop the server.
                                await events.aclose()
                                await upstream.cancel_and_drain(conn)
                                results.append(self._statement_result(plan, screen, types, rows, truncated,
                                                                      "SELECT", produced))
                                return None
                            continue
                        values = screen.row(raw)
                        size += sum(len(v) for v in values if v is not None)
                        rows.append(tuple(None if v is None else v.decode("utf-8", errors="replace")
                                          for v in values))
                elif isinstance(event, upstream.ResultEnd):
                    assert screen is not None
                    results.append(self._statement_result(plan, screen, types, rows, truncated, event.status,
                                                           produced))
                    screen, rows = None, []
                elif isinstance(event, upstream.CopyOutStart):
                    if event.format != 0:
                        await upstream.cancel_and_drain(conn)
                        return GatewayError("copy_binary", "binary COPY cannot be screened; use text or csv",
                                            sqlstate="0A000")  # type: ignore[return-value]
                    copy_lines, produced, size, truncated = [], 0, 0, False
                elif isinstance(event, upstream.CopyOutData):
                    assert copy_lines is not None
                    produced += 1
                    if (max_rows is not None and len(copy_lines) >= max_rows) or size >= max_bytes:
                        truncated = True
                        continue
                    line = event.data.rstrip(b"\n").decode("utf-8", errors="replace")
                    detector = self.gateway.detector
                    size += len(event.data)
                    copy_lines.append((detector.redact(line) if detector else line,))
                elif isinstance(event, upstream.Command):
                    tag = plan.command_tag if plan else event.status.split(" ")[0]
                    if copy_lines is not None:
                        results.append(StatementResult("COPY", event.status, ["copy"], copy_lines, truncated,
                                                       row_count=produced, types=[25]))
                        copy_lines = None
                    else:
                        results.append(StatementResult(tag, event.status))
                elif isinstance(event, upstream.ServerError):
                    # Nothing after an error runs; read on to the end so the connection is idle again.
                    failure = self._upstream_error(event.diag, self._scrub or any(
                        p.scrub_errors for p in plans[len(results):len(results) + 1]))
        except ResultShapeMismatch as exc:
            await events.aclose()
            await upstream.cancel_and_drain(conn)
            return exc
        finally:
            await events.aclose()
        return failure

    def _statement_result(self, plan: StatementPlan | None, screen: ResultScreen, types: list[int],
                          rows: list, truncated: bool, status: str, produced: int) -> StatementResult:
        tag = plan.command_tag if plan else status.split(" ")[0]
        columns = list(screen.column_names)
        masked = [columns[m.position] for m in (plan.masks if plan else ()) if m.position < len(columns)]
        return StatementResult(tag, status, columns, rows, truncated, masked, produced, types)

    async def _after(self, conn: psycopg.AsyncConnection, verdict: Verdict, completed: int, *,
                     failed: bool) -> None:
        effects = verdict.effects
        if not effects:
            return
        self.state.apply(effects, completed)
        if SessionState.needs_reconcile(effects, failed=failed) and not conn.closed:
            if conn.info.transaction_status == pq.TransactionStatus.INERROR:
                # Only ROLLBACK is possible in an aborted transaction; ask again after it.
                self.state.clear()
            else:
                rows = await (await conn.execute(RECONCILE_SQL)).fetchall()
                prepared = {r[1] for r in rows if r[0] == "p"}
                cursors = {r[1] for r in rows if r[0] == "c"}
                self.state.reconcile(prepared, cursors, effects if failed else ())
        if any(e.schema_changed and e.index < completed for e in effects):
            # DDL changed names the analyser resolves: read the catalog again.
            await self.gateway.refresh_catalog(self.target)

    async def close(self) -> None:
        if self._conn is not None and self._pool is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # the pool discards a broken connection itself
                await self._pool.putconn(conn)
        self._pool = None
        self.state.clear()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def cancel(self) -> None:
        """Cancel what this session is running upstream (a client's cancel request)."""
        if self._conn is not None and not self._conn.closed:
            await self._conn.cancel_safe(timeout=5.0)

    # -- internals -------------------------------------------------------------------

    async def _connection(self, settings: PinnedSettings | None) -> psycopg.AsyncConnection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self.rule is None or settings is None:
            raise GatewayError("no_rule", "no rule grants this principal access", sqlstate="42501")
        # The connection is pinned at the rule's level (read-only unless the rule may write);
        # a read-only text of a writer is wrapped in a READ ONLY transaction on top.
        pinned = dataclasses.replace(settings, read_only=self.rule.read_only())
        self._pool = await self.gateway.upstream.pool(self.target, self._target, pinned,
                                                      self.gateway.login(self.rule))
        try:
            conn = await self._pool.getconn()
        except Exception as exc:
            self._pool = None
            raise upstream.UpstreamUnavailable(
                "upstream_unavailable", f"could not connect to target {self.target!r}: "
                f"{upstream.first_line(exc)}; the target may be down or refusing the gateway's login") from None
        await upstream._set_application_name(conn, settings.application_name)
        conn.add_notice_handler(self._on_notice)
        self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pool is not None:
            await conn.close()
            with contextlib.suppress(Exception):
                await self._pool.putconn(conn)
        self.state.clear()

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diagnostic_withheld({"V": diag.severity_nonlocalized or "", "S": diag.severity or ""}):
            return
        fields = screen_error_fields({"M": diag.message_primary or ""}, scrub=self._scrub,
                                     detector=self.gateway.detector, what="notice")
        self._notices.append(f"{diag.severity or 'NOTICE'}: {fields.get('M', '')}")

    def _wrap_read_only(self, verdict: Verdict, conn: psycopg.AsyncConnection) -> bool:
        # Defence in depth: a text the analysis calls read-only runs in a read-only
        # transaction even when the rule could write — unless it manages transactions
        # itself, or a client transaction is already open. Read-only rules are pinned
        # read-only on the connection already.
        if not verdict.settings or not verdict.settings.read_only or self.rule is None or self.rule.read_only():
            return False
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            return False
        return not any(p.command_tag in _TXN_TAGS for p in verdict.plans)

    def _must_wrap(self, verdict: Verdict) -> bool:
        # A read that calls user code (functions.allow), under a rule that may write, runs only inside the
        # READ ONLY block above; where that cannot be opened it is refused (read_only_required).
        return verdict.read_needs_read_only_block and self.rule is not None and not self.rule.read_only()

    def _upstream_error(self, diag: psycopg.errors.Diagnostic, scrub: bool) -> UpstreamError:
        sqlstate = diag.sqlstate or "XX000"
        if scrub:
            return UpstreamError(sqlstate, f"the statement failed (SQLSTATE {sqlstate}); the error text is "
                                 "withheld because the statement reads masked columns")
        fields = screen_error_fields(
            {k: v for k, v in (("M", diag.message_primary), ("D", diag.message_detail),
                               ("H", diag.message_hint)) if v},
            scrub=False, detector=self.gateway.detector)
        return UpstreamError(sqlstate, fields.get("M", ""), fields.get("D"), fields.get("H"))


_TXN_TAGS = frozenset({"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
                       "PREPARE TRANSACTION", "COMMIT PREPARED", "ROLLBACK PREPARED"})
