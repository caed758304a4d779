"""What each MCP tool does, over the engine, for one principal — no MCP types but results and errors.

:class:`Warden` runs a tool call as the calling principal through a
:class:`~pgwarden.engine.session.Session` (pooled upstream connection, policy, masks), records every
statement it runs as an audit span (a child of the SDK's ``tools/call`` span, under a session span
per MCP session and principal), and turns a held statement into a ``pending_approval`` result at
once. An answer from the human at the client (elicitation) is passed in as ``answer``; it decides
the request through the broker (``approve_as_self`` / ``deny_as_self``), never around it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from psycopg import sql as pgsql

from pgwarden.audit import AuditSession, ResultDigest
from pgwarden.audit.schema import verdict_attributes
from pgwarden.engine.approvals import ApprovalRequest, ApprovalStatus, binding_hash
from pgwarden.engine.approvals.errors import ApprovalNotFound
from pgwarden.engine.errors import GatewayError, StatementRefused
from pgwarden.engine.principal import Channel, Principal
from pgwarden.engine.runtime import ApprovalNotUsable, Runtime
from pgwarden.engine.session import RunResult, Session
from pgwarden.errors import PgwardenError
from pgwarden.policy.verdict import Decision, Verdict

from . import _migrate
from ._results import statement_out, tool_error

__all__ = ["Answer", "Warden", "pending", "status_of"]

log = logging.getLogger("pgwarden.mcp")

Answer = Literal["accept", "decline", "cancel"] | None
Tool = Literal["query", "execute", "explain", "introspect"]
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})


class _NoRecord:
    def __getattr__(self, name: str):
        return lambda *a, **k: None


class Warden:
    def __init__(self, runtime: Runtime, target: str | None = None) -> None:
        self.runtime = runtime
        self.gateway = runtime.gateway
        self.target, _ = self.gateway.target(target)
        self.held = runtime.held()
        self._audit: dict[tuple[str, str], AuditSession] = {}

    # -- plumbing --------------------------------------------------------------------------------

    @asynccontextmanager
    async def session(self, principal: Principal):
        async with Session(self.gateway, principal, self.target, Channel.MCP) as session:
            yield session

    def audit_session(self, principal: Principal, key: str) -> AuditSession | None:
        recorder = self.runtime.recorder
        if recorder is None:
            return None
        found = self._audit.get((principal.subject, key))
        if found is None or found.ended:
            found = recorder.start_session(principal.subject, principal.groups, Channel.MCP.value, self.target,
                                           auth_method=principal.auth_method.value)
            self._audit[(principal.subject, key)] = found
        return found

    def end_sessions(self) -> None:
        for audit in self._audit.values():
            with contextlib.suppress(Exception):
                audit.end()
        self._audit.clear()

    @contextmanager
    def record(self, principal: Principal, key: str, text: str) -> Iterator[Any]:
        audit = self.audit_session(principal, key)
        if audit is None:
            yield _NoRecord()
            return
        with self.runtime.recorder.statement(audit, text) as st:  # type: ignore[union-attr]
            yield st

    def allowed_instead(self, principal: Principal) -> str:
        rule = self.gateway.decider.rule_for(principal.subject, principal.groups, self.target)
        if rule is None:
            return f"no rule grants {principal.subject} access to target {self.target!r}; ask an administrator"
        parts = [f"rule {rule.name!r} runs {', '.join(c.value for c in rule.statements.allow)} statements"]
        if rule.approval.required_for:
            parts.append(f"{', '.join(t.value for t in rule.approval.required_for)} need approval by "
                         f"{', '.join(rule.approval.approvers)}")
        parts.append(f"schemas {rule.schemas.allow}" + (f" except {rule.schemas.deny}" if rule.schemas.deny else ""))
        if rule.tables.deny:
            parts.append(f"tables except {rule.tables.deny}")
        return "; ".join(parts) + ". Call my_permissions for the details, list_tables for what you may read."

    def _raise(self, principal: Principal, exc: PgwardenError):
        raise tool_error(exc, allowed_instead=self.allowed_instead(principal)) from None

    # -- statements ------------------------------------------------------------------------------

    async def run_sql(self, principal: Principal, key: str, sql: str, *, tool: Tool,
                      max_rows: int | None = None, answer: Answer = None) -> dict[str, Any]:
        failure: PgwardenError | None = None
        out: dict[str, Any] = {}
        async with self.session(principal) as session:
            verdict = session.authorise(sql)
            with self.record(principal, key, sql) as st:
                st.decided(verdict_attributes(verdict, sql))
                try:
                    out = await self._run(session, st, sql, verdict, tool, max_rows, answer)
                except PgwardenError as exc:
                    st.error(exc.sqlstate, exc.message)
                    failure = exc
        if failure is not None:
            self._raise(principal, failure)
        return out

    async def _run(self, session: Session, st: Any, sql: str, verdict: Verdict, tool: Tool,
                   max_rows: int | None, answer: Answer) -> dict[str, Any]:
        if (tool in ("query", "explain") and verdict.decision is not Decision.DENY and verdict.settings
                and not verdict.settings.read_only):
            raise GatewayError("not_read_only", "query and explain run read-only statements only; use execute "
                               "for writes and migrate for schema changes", sqlstate="25006")
        if verdict.decision is Decision.DENY:
            raise StatementRefused(verdict)
        if verdict.decision is Decision.NEEDS_APPROVAL:
            request = await self.held.hold(session, sql, verdict)
            st.approval_requested(request.id, list(request.approvers))
            if request.pending and answer is not None:
                request = await self._answer(session.principal, request, answer)
                st.approval_decided(request.id, request.decided_by, request.status.value, _wait_ms(request))
            if request.status is ApprovalStatus.APPROVED:
                result = await self.held.release(session, sql, request)
                return self._result(st, result, max_rows, approved_by=request.decided_by)
            if request.pending:
                return pending(request)
            raise _not_usable(request)
        return self._result(st, await session.run(sql), max_rows)

    async def _answer(self, principal: Principal, request: ApprovalRequest, answer: Answer) -> ApprovalRequest:
        broker = self.held.broker
        if answer == "accept":
            return await broker.approve_as_self(request.id, subject=principal.subject,
                                                comment="approved by the human at the client (elicitation)")
        reason = "declined at the client" if answer == "decline" else "cancelled at the client"
        return await broker.deny_as_self(request.id, subject=principal.subject, reason=reason)

    async def ask_self(self, principal: Principal, sql: str) -> str | None:
        """The question for the human at the client when ``sql`` needs an approval 'self' may give, else None.

        Holds the statement first (the broker returns the same pending request on every round),
        so the question names the request and is worded identically each time it is asked.
        """
        async with self.session(principal) as session:
            verdict = session.authorise(sql)
            if (verdict.decision is not Decision.NEEDS_APPROVAL or verdict.approval is None
                    or "self" not in verdict.approval.approvers):
                return None
            request = await self.held.hold(session, sql, verdict)
            if not request.pending:
                return None
            return self._question(request, f"run this statement on target {self.target!r}", sql)

    @staticmethod
    def _question(request: ApprovalRequest, what: str, sql: str, extra: str = "") -> str:
        reasons = "; ".join(r.message for r in request.reasons)
        return (f"pgwarden: the agent ({request.requester}) asks to {what} (approval {request.id}).\n\n"
                f"{sql}\n\nWhy approval is needed: {reasons}{extra}\n\n"
                "Accept to run it now; decline to refuse it. Your answer is recorded in the audit trail.")

    def _result(self, st: Any, result: RunResult, max_rows: int | None, *,
                approved_by: str | None = None) -> dict[str, Any]:
        st.upstream_text(result.upstream_text)
        shaped = [statement_out(r, max_rows) for r in result.results]
        recorded = next((s for s in shaped if "columns" in s), shaped[-1] if shaped else None)
        if recorded is not None:
            names = [c["name"] for c in recorded.get("columns", [])]
            rows = recorded.get("rows", [])
            digest = ResultDigest(names)
            digest.update_many(rows)
            st.result(names, rows, len(rows), digest)
        out: dict[str, Any] = {"status": "ok"}
        if len(shaped) == 1:
            out.update(shaped[0])
        elif shaped:
            out["statements"] = shaped
        if result.notices:
            out["notices"] = result.notices
        if approved_by:
            out["approved_by"] = approved_by
        return out

    # -- approvals -------------------------------------------------------------------------------

    async def _own_request(self, principal: Principal, request_id: str) -> ApprovalRequest:
        try:
            request = await self.held.broker.get(request_id)
        except ApprovalNotFound as exc:
            self._raise(principal, exc)
        if request.requester != principal.subject:
            # Another principal's request is not even confirmed to exist.
            self._raise(principal, ApprovalNotFound(request_id))
        return request

    async def approval_status(self, principal: Principal, request_id: str) -> dict[str, Any]:
        request = await self._own_request(principal, request_id)
        return status_of(request)

    async def wait_for_approval(self, principal: Principal, key: str, request_id: str,
                                seconds: float) -> dict[str, Any]:
        await self._own_request(principal, request_id)
        request = await self.held.broker.wait(request_id, max(0.0, min(float(seconds), 50.0)))
        if request.pending:
            return pending(request)
        if request.status is not ApprovalStatus.APPROVED:
            self._raise(principal, _not_usable(request))
        migration = _migration_of(request)
        if migration is not None:
            return await self.migrate(principal, key, migration, request.statement, dry_run=False)
        failure: PgwardenError | None = None
        out: dict[str, Any] = {}
        async with self.session(principal) as session:
            verdict = session.authorise(request.statement)
            with self.record(principal, key, request.statement) as st:
                st.decided(verdict_attributes(verdict, request.statement))
                st.approval_decided(request.id, request.decided_by, request.status.value, _wait_ms(request))
                try:
                    result = await self.held.release(session, request.statement, request,
                                                     parameters=request.parameters)
                    out = self._result(st, result, None, approved_by=request.decided_by)
                    out["statement"] = request.statement
                except PgwardenError as exc:
                    st.error(exc.sqlstate, exc.message)
                    failure = exc
        if failure is not None:
            self._raise(principal, failure)
        return out

    # -- migrations ------------------------------------------------------------------------------

    async def migrate(self, principal: Principal, key: str, name: str, script: str, *, dry_run: bool,
                      answer: Answer = None, question_only: bool = False) -> Any:
        failure: PgwardenError | None = None
        out: Any = None
        async with self.session(principal) as session:
            with self.record(principal, key, script) as st:
                try:
                    out = await self._migrate(session, st, name, script, dry_run, answer, question_only)
                except PgwardenError as exc:
                    st.error(exc.sqlstate, exc.message)
                    failure = exc
        if failure is not None:
            if question_only:
                return None
            self._raise(principal, failure)
        return out

    async def _migrate(self, session: Session, st: Any, name: str, script: str, dry_run: bool,
                       answer: Answer, question_only: bool) -> Any:
        if not name.strip():
            raise GatewayError("migration_name_required", "give the migration a stable name, e.g. "
                               "'2026_12_01_add_orders_status'")
        statements = _migrate.split_script(script)
        if not statements:
            raise GatewayError("migration_empty", "the migration holds no statement")
        checksum = _migrate.checksum(script)
        st.set("pgwarden.migration.name", name)
        st.set("pgwarden.migration.checksum", checksum)
        entry = await _migrate.ledger_entry(session, name)
        base = {"name": name, "checksum": checksum}
        if entry is not None:
            if entry.checksum != checksum:
                raise GatewayError("migration_checksum_mismatch", f"migration {name!r} was applied "
                                   f"{entry.applied_at} with another script (checksum {entry.checksum[:12]}); "
                                   "never edit an applied migration: write a new one with a new name",
                                   sqlstate="23505")
            if question_only:
                return None
            return {"status": "already_applied", **base, "statements": [], "findings": [],
                    "applied_at": entry.applied_at, "approved_by": entry.approved_by}
        verdicts = [session.authorise(s) for s in statements]
        described = [_describe(i, s, v) for i, (s, v) in enumerate(zip(statements, verdicts, strict=True), 1)]
        denied = [v for v in verdicts if v.decision is Decision.DENY]
        if denied:
            refused = StatementRefused(denied[0])
            refused.message = (f"statement {verdicts.index(denied[0]) + 1} of the migration is refused: "
                               f"{refused.message}")
            raise refused
        needs = [v for v in verdicts if v.decision is Decision.NEEDS_APPROVAL]
        if question_only and (not needs or any("self" not in (v.approval.approvers if v.approval else ())
                                               for v in needs)):
            return None
        findings = await _migrate.lint(script, statements)
        trace = await _migrate.dry_run(session, statements, verdicts)
        out = {**base, "statements": described, "findings": findings, "locks": trace.locks}
        if trace.error:
            out["dry_run_error"] = trace.error
        if dry_run:
            return {"status": "dry_run", **out}
        if trace.error:
            raise GatewayError("migration_dry_run_failed", f"statement {trace.error['statement']} fails: "
                               f"{trace.error['message']}; fix it and call migrate with dry_run=true again",
                               sqlstate=trace.error["sqlstate"])
        approved_by: str | None = f"policy:{verdicts[0].rule}"
        if needs:
            request = await self._hold_migration(session, name, script, checksum, needs, findings, trace)
            st.approval_requested(request.id, list(request.approvers))
            if question_only:
                if not request.pending:
                    return None
                return self._question(request, f"apply migration {name!r} on target {self.target!r}", script,
                                      _findings_text(findings, trace))
            if request.pending and answer is not None:
                request = await self._answer(session.principal, request, answer)
            if request.pending:
                return {"status": "pending_approval", **out, "approval": pending(request)["approval"]}
            if request.status is not ApprovalStatus.APPROVED:
                raise _not_usable(request)
            st.approval_decided(request.id, request.decided_by, request.status.value, _wait_ms(request))
            await self._consume(session, request, script, statements)
            approved_by = request.decided_by
        elif question_only:
            return None
        done, entry = await _migrate.apply(session, name, checksum, statements, verdicts, approved_by)
        for item, status in zip(out["statements"], done, strict=False):
            item["status"] = status["status"]
        return {"status": "applied", **out, "applied_at": entry.applied_at, "approved_by": entry.approved_by}

    async def _hold_migration(self, session: Session, name: str, script: str, checksum: str,
                              needs: list[Verdict], findings: list[dict], trace: Any) -> ApprovalRequest:
        first = needs[0]
        assert first.approval is not None
        role = first.settings.role if first.settings else None
        return await self.held.broker.request(
            requester=session.principal, target=session.target, role=role, statement=script,
            policy_version=first.policy_version, reasons=[r for v in needs for r in v.reasons],
            lint_findings=[{"migration": name, "checksum": checksum}, *findings, {"dry_run": trace.summary()}],
            channel=Channel.MCP.value, requirement=first.approval)

    async def _consume(self, session: Session, request: ApprovalRequest, script: str, statements: list[str]) -> None:
        # HeldStatements.release runs one statement; a migration is several, run in one transaction with its
        # ledger row. The same checks: decided again just now (done by the caller), bound, consumed once.
        verdicts = [session.authorise(s) for s in statements]
        needs = [v for v in verdicts if v.decision is Decision.NEEDS_APPROVAL]
        if not needs:
            return
        role = needs[0].settings.role if needs[0].settings else None
        binding = binding_hash(script, (), session.target, role, session.principal.subject, needs[0].policy_version)
        if binding != request.binding:
            raise ApprovalNotUsable("approval_binding_mismatch", f"request {request.id} approved another script, "
                                    "principal, target, role or policy version; this one needs its own approval")
        if not await self.held.broker.consume(request.id, binding):
            raise ApprovalNotUsable("approval_already_used", f"the approval of request {request.id} was already "
                                    "used; ask again")

    # -- introspection ---------------------------------------------------------------------------

    def _visible(self, session: Session) -> list[tuple[Any, Verdict]]:
        catalog = self.gateway.catalog(self.target)
        out = []
        for (schema, _), rel in sorted(catalog.relations.items()):
            if schema in _SYSTEM_SCHEMAS or rel.kind not in ("r", "v", "m", "p", "f"):
                continue
            verdict = session.authorise(_select_star(rel.schema, rel.name))
            if verdict.decision is not Decision.DENY:
                out.append((rel, verdict))
        return out

    async def list_tables(self, principal: Principal) -> dict[str, Any]:
        async with self.session(principal) as session:
            tables = []
            for rel, verdict in self._visible(session):
                masked = sorted({m.column_name for p in verdict.plans for m in p.masks})
                item: dict[str, Any] = {"name": f"{rel.schema}.{rel.name}", "kind": _KINDS.get(rel.kind, rel.kind),
                                        "columns": len(rel.columns)}
                if masked:
                    item["masked"] = masked
                if verdict.decision is Decision.NEEDS_APPROVAL:
                    item["read_needs_approval"] = True
                tables.append(item)
        return {"target": self.target, "tables": tables}

    async def describe_table(self, principal: Principal, key: str, name: str) -> dict[str, Any]:
        catalog = self.gateway.catalog(self.target)
        schema, _, table = name.rpartition(".")
        rel = catalog.resolve_relation(schema.strip('"') or None, table.strip('"'))
        sql_text = _select_star(rel.schema, rel.name) if rel else f"SELECT * FROM {name}"
        async with self.session(principal) as session:
            verdict = session.authorise(sql_text)
            if rel is None or verdict.decision is Decision.DENY or rel.schema in _SYSTEM_SCHEMAS:
                if verdict.decision is Decision.DENY:
                    self._raise(principal, StatementRefused(verdict))
                self._raise(principal, GatewayError("unknown_table", f"no table or view {name!r} you may see; "
                                                    "call list_tables"))
            masks = {m.column_name: m for p in verdict.plans for m in p.masks}
            columns = []
            for col in rel.columns:
                item: dict[str, Any] = {"name": col.name, "type": col.type_name or "?"}
                if col.name in masks:
                    mask = masks[col.name]
                    item["masked"] = "redacted" if mask.whole else mask.strategy
                columns.append(item)
            out: dict[str, Any] = {"name": f"{rel.schema}.{rel.name}", "kind": _KINDS.get(rel.kind, rel.kind),
                                   "columns": columns}
            if verdict.decision is Decision.NEEDS_APPROVAL:
                out["read_needs_approval"] = True
            if rel.oid:
                oid = int(rel.oid)
                indexes = await self._catalog_rows(session, principal, key, (
                    "SELECT i.relname, pg_get_indexdef(i.oid), x.indisprimary, x.indisunique FROM pg_index x "
                    f"JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = {oid} ORDER BY 1"))
                if indexes is not None:
                    out["indexes"] = [{"name": r[0], "definition": r[1], **({"primary": True} if r[2] == "t" else {}),
                                       **({"unique": True} if r[3] == "t" else {})} for r in indexes]
                keys = await self._catalog_rows(session, principal, key, (
                    "SELECT conname, contype::text, pg_get_constraintdef(oid) FROM pg_constraint "
                    f"WHERE conrelid = {oid} ORDER BY 1"))
                if keys is not None:
                    out["constraints"] = [{"name": r[0], "kind": _CONSTRAINTS.get(r[1] or "", r[1]),
                                           "definition": r[2]} for r in keys]
                estimate = await self._catalog_rows(session, principal, key,
                                                    f"SELECT reltuples::bigint FROM pg_class WHERE oid = {oid}")
                if estimate:
                    value = int(estimate[0][0] or 0)
                    out["row_estimate"] = max(value, 0) if value >= 0 else None
            return out

    async def _catalog_rows(self, session: Session, principal: Principal, key: str,
                            sql: str) -> list[tuple] | None:
        # Run as the principal: the policy decides and masks these catalog reads like any other.
        verdict = session.authorise(sql)
        with self.record(principal, key, sql) as st:
            st.decided(verdict_attributes(verdict, sql))
            if verdict.decision is not Decision.ALLOW:
                return None
            try:
                result = await session.run(sql)
            except PgwardenError as exc:
                st.error(exc.sqlstate, exc.message)
                return None
            self._result(st, result, None)
        return result.results[-1].rows if result.results else []

    async def explain(self, principal: Principal, key: str, sql: str, analyze: bool) -> dict[str, Any]:
        async with self.session(principal) as session:
            verdict = session.authorise(sql)
        if verdict.decision is Decision.DENY:
            with self.record(principal, key, sql) as st:
                st.decided(verdict_attributes(verdict, sql))
                st.error(StatementRefused(verdict).sqlstate, "refused")
            self._raise(principal, StatementRefused(verdict))
        if analyze and not (verdict.settings and verdict.settings.read_only):
            self._raise(principal, GatewayError(
                "explain_analyze_not_read_only", "EXPLAIN ANALYZE runs the statement: only read-only statements "
                "may be analysed; call explain with analyze=false", sqlstate="25006"))
        text = f"EXPLAIN (ANALYZE {'true' if analyze else 'false'}, FORMAT TEXT) {sql.strip().rstrip(';')}"
        out = await self.run_sql(principal, key, text, tool="explain")
        return {"plan": [r[0] or "" for r in out.get("rows", [])], "analyzed": analyze}

    def permissions(self, principal: Principal) -> dict[str, Any]:
        rule = self.gateway.decider.rule_for(principal.subject, principal.groups, self.target)
        out: dict[str, Any] = {"subject": principal.subject, "groups": sorted(principal.groups), "target": self.target}
        if rule is None:
            out["rule"] = None
            out["summary"] = self.allowed_instead(principal)
            return out
        masks = [m for m in self.gateway.policy.masking.columns if not principal.groups.intersection(m.unless_groups)]
        out.update({
            "rule": rule.name,
            "statements": [c.value for c in rule.statements.allow],
            "approval": {"required_for": [t.value for t in rule.approval.required_for],
                         "approvers": list(rule.approval.approvers),
                         "you_can_approve_in_client": "self" in rule.approval.approvers,
                         "timeout_s": rule.approval.timeout // 1000} if rule.approval.required_for else None,
            "schemas": {"allow": rule.schemas.allow, "deny": rule.schemas.deny},
            "tables": {"allow": rule.tables.allow, "deny": rule.tables.deny},
            "writes": {k: [w.value for w in v] for k, v in rule.writes.items()} if rule.writes else None,
            "require_where": rule.require_where,
            "max_rows": rule.max_rows,
            "statement_timeout_ms": rule.statement_timeout,
            "lock_timeout_ms": rule.lock_timeout,
            "catalog_access": rule.catalog_access,
            "masked_columns": [{"column": m.column, "strategy": m.strategy.value} for m in masks],
            "summary": self.allowed_instead(principal),
        })
        return out


_KINDS = {"r": "table", "v": "view", "m": "materialized view", "p": "partitioned table", "f": "foreign table"}
_CONSTRAINTS = {"p": "primary key", "f": "foreign key", "u": "unique", "c": "check", "x": "exclusion",
                "t": "trigger"}


def _select_star(schema: str, name: str) -> str:
    return "SELECT * FROM " + pgsql.Identifier(schema, name).as_string(None)


def _describe(index: int, statement: str, verdict: Verdict) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "command": verdict.plans[0].command_tag if verdict.plans else "?",
                            "decision": verdict.decision.value, "sql": statement}
    if verdict.reasons:
        item["reasons"] = [f"{r.code}: {r.message}" for r in verdict.reasons]
    return item


def _findings_text(findings: list[dict], trace: Any) -> str:
    lines = [f"\n\nLint findings ({len(findings)}):"]
    lines += [f"- statement {f.get('statement', '?')}: [{f['rule']}] {f['message']}" for f in findings[:12]]
    lines.append("Dry run (rolled back): " + ", ".join(
        f"{s['index']}: {s['status']}" for s in trace.statements))
    lines += [f"- statement {lk['statement']} locks {lk['relation']} {lk['mode']} (blocks {lk['blocks']})"
              for lk in sorted(trace.locks, key=lambda x: (x["statement"], x["relation"], x["mode"]))[:12]]
    return "\n".join(lines)


def _migration_of(request: ApprovalRequest) -> str | None:
    if request.lint_findings and "migration" in request.lint_findings[0]:
        return str(request.lint_findings[0]["migration"])
    return None


def _wait_ms(request: ApprovalRequest) -> float:
    if request.decided_at is None:
        return 0.0
    return max((request.decided_at - request.created).total_seconds() * 1000, 0.0)


def _not_usable(request: ApprovalRequest) -> ApprovalNotUsable:
    status = request.status.value
    why = f": {request.comment}" if request.comment else ""
    if request.status is ApprovalStatus.USED:
        return ApprovalNotUsable("approval_already_used", f"request {request.id} was approved and its statement "
                                 "already ran; send the statement again to ask anew")
    return ApprovalNotUsable(f"approval_{status}", f"request {request.id} was {status}{why}; the statement did "
                             "not run. Change it or ask an approver before sending it again")


def status_of(request: ApprovalRequest) -> dict[str, Any]:
    out = {"id": request.id, "status": request.status.value, "approvers": list(request.approvers),
           "statement": request.statement, "created": request.created.isoformat(),
           "expires": request.expires.isoformat(), "decided_by": request.decided_by,
           "decided_at": request.decided_at.isoformat() if request.decided_at else None,
           "comment": request.comment}
    if request.pending:
        out["next"] = f"call wait_for_approval(id={request.id!r}, seconds=50) to wait for it"
    elif request.status is ApprovalStatus.APPROVED:
        out["next"] = f"call wait_for_approval(id={request.id!r}) to run it and get its result"
    return out


def pending(request: ApprovalRequest) -> dict[str, Any]:
    approvers = [a if a != "self" else "you (the human at this client)" for a in request.approvers]
    return {"status": "pending_approval", "approval": {
        "id": request.id, "status": request.status.value, "approvers": approvers,
        "expires": request.expires.isoformat(),
        "how_to_check": (f"nothing ran yet. Call wait_for_approval(id={request.id!r}, seconds=50) to wait (repeat "
                         f"while it is pending); it runs the statement once approved and returns its result. "
                         f"approval_status(id={request.id!r}) checks without waiting. A member of "
                         f"{', '.join(a for a in request.approvers if a != 'self') or 'the approvers'} approves "
                         f"with: pgwarden approvals approve {request.id}"),
        "reasons": [f"{r.code}: {r.message}" for r in request.reasons]}}
