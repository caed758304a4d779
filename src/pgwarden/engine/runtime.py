"""The running engine behind both doors: one place that turns a configuration into live parts.

A :class:`Runtime` holds the :class:`~pgwarden.engine.gateway.Gateway` (decisions, catalogs,
pools), the :class:`~pgwarden.engine.identity.TokenVerifier`, the approval broker and the audit
recorder, started and stopped together, so the MCP server, the wire proxy and the CLI build
exactly the same engine from the same file. :class:`HeldStatements` is the approval flow both
doors share: hold a statement the policy wants a human for, and run it once approved — decided
again at that moment, bound to the exact text, parameters, principal, target, role and policy
version, consumed once, and executed on a connection of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgwarden.audit import AuditRecorder
from pgwarden.errors import PolicyRefusal
from pgwarden.policy.sql import analyse
from pgwarden.policy.verdict import Decision, Verdict

from .approvals import ApprovalBroker, ApprovalRequest, ApprovalStatus, ApprovalStoreUnavailable, binding_hash
from .approvals.config import build_broker
from .config import GatewayConfig
from .errors import GatewayError, StatementRefused
from .gateway import Gateway
from .identity import TokenVerifier
from .session import RunResult, Session

__all__ = ["ApprovalNotUsable", "HeldStatements", "Runtime"]

log = logging.getLogger("pgwarden.runtime")


@dataclass
class Runtime:
    config: GatewayConfig
    gateway: Gateway
    verifier: TokenVerifier | None
    broker: ApprovalBroker | None
    recorder: AuditRecorder | None
    _started: list = field(default_factory=list, repr=False)

    @classmethod
    async def start(cls, config: GatewayConfig, *, identity: bool = True, approvals: bool = True,
                    audit: bool = True, load_catalogs: bool = True, span_processors: Sequence = ()) -> Runtime:
        """Build and start every part the configuration asks for.

        ``identity``: a door that verifies tokens needs ``identity`` configured (refused otherwise).
        ``span_processors`` see every audit span too (the demo's per-statement log line).
        Catalogs are read from each reachable target; an unreachable one keeps the builtin
        catalog (statements that need the real one are refused with a reason saying so).
        """
        gateway = Gateway(config)
        gateway.check_mask_keys()
        verifier = None
        if identity:
            if config.identity is None:
                raise GatewayError("identity_required", "this command verifies tokens: add an 'identity' section "
                                   "to the configuration (see docs/configuration.md)", sqlstate="F0000")
            verifier = TokenVerifier.from_config(config)
        base = config.base_dir or Path.cwd()
        broker = build_broker(config.approvals, base) if approvals else None
        recorder = None
        if audit:
            settings = config.audit
            if not settings.journal_dir.is_absolute():
                settings = settings.model_copy(update={"journal_dir": base / settings.journal_dir})
            redact = gateway.detector.redact if gateway.detector is not None else None
            recorder = AuditRecorder(settings, redact=redact, extra_processors=tuple(span_processors))
        runtime = cls(config, gateway, verifier, broker, recorder)
        if broker is not None:
            try:
                await broker.start()
                runtime._started.append(broker)
            except ApprovalStoreUnavailable as exc:
                # Fail closed for held statements only: everything else keeps working.
                log.warning("approval store unavailable at start (%s); statements that need approval "
                            "will be refused until it is back", exc.message)
        if load_catalogs:
            for name in config.targets:
                try:
                    await gateway.refresh_catalog(name)
                except GatewayError as exc:
                    log.warning("target %s: %s", name, exc.message)
        return runtime

    def held(self) -> HeldStatements:
        return HeldStatements(self)

    async def close(self) -> None:
        for part in reversed(self._started):
            with contextlib.suppress(Exception):
                await part.close()
        self._started.clear()
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                self.recorder.close()
        await self.gateway.close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ApprovalNotUsable(PolicyRefusal):
    """An approval exists but cannot release this statement (changed, used, expired, denied)."""

    sqlstate = "55000"


def _scope(session: Session, sql: str, verdict: Verdict) -> list[tuple[str, str]]:
    """What a window granted on this request covers: the relations and accesses of the statement, its
    command tags and what asked for approval (``ddl``, ``destructive``, ``no_where``…). A later statement is
    covered only if all of its pairs are, so a window granted on ``ALTER TABLE t ADD COLUMN`` (tag ALTER
    TABLE, trigger ddl) never covers ``DROP TABLE t`` or ``ALTER TABLE t DROP COLUMN`` (destructive)."""
    analysis = analyse(sql, session.gateway.catalog(session.target), session.facts())
    pairs = {(rel.qualified, rel.access.value) for st in analysis.statements for rel in st.relations}
    if not pairs:
        return []  # touches no table a window could be limited to: single use
    pairs |= {("pgwarden:statement", p.command_tag) for p in verdict.plans}
    if verdict.approval is not None:
        pairs |= {("pgwarden:trigger", t) for t in verdict.approval.triggers}
    return sorted(pairs)


class HeldStatements:
    """Hold, wait for and release statements that need a human (both doors use this)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def broker(self) -> ApprovalBroker:
        if self.runtime.broker is None:
            raise ApprovalStoreUnavailable("approval_store_unavailable",
                                           "approvals are not configured on this gateway")
        return self.runtime.broker

    async def hold(self, session: Session, sql: str, verdict: Verdict, *, parameters: Sequence[str | None] = (),
                   lint_findings: Sequence[dict] = ()) -> ApprovalRequest:
        """Create (or find) the approval request for ``sql``; the store being down refuses it."""
        if verdict.decision is not Decision.NEEDS_APPROVAL or verdict.approval is None:
            raise StatementRefused(verdict)
        return await self.broker.request(
            requester=session.principal, target=session.target, role=verdict.settings.role if verdict.settings
            else None, statement=sql, parameters=parameters, policy_version=verdict.policy_version,
            reasons=verdict.reasons, lint_findings=lint_findings, channel=session.channel.value,
            requirement=verdict.approval, scope=_scope(session, sql, verdict))

    async def release(self, session: Session, sql: str, request: ApprovalRequest, *,
                      parameters: Sequence[str | None] | None = None, param_types: Sequence[int] = ()) -> RunResult:
        """Run ``sql`` under the approval ``request``: decided again, bound, consumed once.

        ``parameters`` are the statement's ``$n`` values in text form (the wire proxy's extended
        protocol), bound into the approval with the text; None or empty: a text without parameters.
        """
        parameters = list(parameters) if parameters else None
        if request.status is not ApprovalStatus.APPROVED:
            raise ApprovalNotUsable("approval_not_approved", f"request {request.id} is {request.status.value}"
                                    + (f": {request.comment}" if request.comment else ""))
        verdict = session.authorise(sql)
        if verdict.decision is Decision.ALLOW:
            # the policy no longer needs a human for it
            return await session.run(sql, parameters=parameters, param_types=param_types)
        if verdict.decision is not Decision.NEEDS_APPROVAL:
            raise StatementRefused(verdict)
        role = verdict.settings.role if verdict.settings else None
        binding = binding_hash(sql, tuple(parameters or ()), session.target, role, session.principal.subject,
                               verdict.policy_version)
        if binding != request.binding:
            raise ApprovalNotUsable(
                "approval_binding_mismatch", f"request {request.id} approved another statement, principal, "
                "target, role or policy version; this statement needs an approval of its own")
        if not await self.broker.consume(request.id, binding):
            raise ApprovalNotUsable("approval_already_used",
                                    f"the approval of request {request.id} was already used; ask again")
        return await session.run_released(sql, verdict, parameters=parameters, param_types=param_types)
