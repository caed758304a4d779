"""The engine's typed errors; each a :class:`pgwarden.errors.PgwardenError` with a stable code.

``StatementRefused`` carries the verdict (a wire client gets the first reason's SQLSTATE and
sentence, an MCP client all reasons); ``UpstreamError`` is PostgreSQL's own error, its text
already screened; ``GatewayError`` is anything else the engine refuses to do.
"""

from __future__ import annotations

from pgwarden.errors import PgwardenError, PolicyRefusal
from pgwarden.policy.reasons import sqlstate_for
from pgwarden.policy.verdict import Decision, Verdict

__all__ = ["GatewayError", "StatementRefused", "UpstreamError"]


class GatewayError(PgwardenError):
    """The engine cannot do what was asked; ``code`` says why and ``message`` what to do."""


class StatementRefused(PolicyRefusal):
    """The policy denied the text, or it needs an approval that has not been given."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        if verdict.decision is Decision.NEEDS_APPROVAL:
            code = "approval_required"
        else:
            code = verdict.reasons[0].code if verdict.reasons else "denied"
        super().__init__(code, "; ".join(r.message for r in verdict.reasons) or "refused by policy",
                         sqlstate=sqlstate_for(code))


class UpstreamError(PgwardenError):
    """PostgreSQL raised an error; its text is already screened (masked values never quoted)."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__("upstream_error", message, sqlstate=sqlstate, hint=hint)
        self.detail = detail
