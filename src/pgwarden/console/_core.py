"""What the JSON API and the HTML console share: who the caller is, what they may see, error → HTTP status."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from pgwarden.engine.approvals import (
    SELF,
    ApprovalAlreadyDecided,
    ApprovalBroker,
    ApprovalError,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalRefused,
    ApprovalRequest,
    ApprovalStoreUnavailable,
    ApproverNotAllowed,
    DecisionReplayed,
    SelfApprovalForbidden,
    WindowNotAllowed,
    WindowTooLong,
)
from pgwarden.engine.identity import AuthenticationError, AuthErrorCode
from pgwarden.engine.principal import Principal
from pgwarden.policy.language import parse_duration_ms

if TYPE_CHECKING:
    from pgwarden.engine.runtime import Runtime

__all__ = ["ConsoleError", "approver_groups", "authenticate", "broker_of", "can_decide", "can_view",
           "error_from", "format_ms", "may_audit", "parse_window"]

REALM = "pgwarden"
_WINDOW = re.compile(r"^\s*\d+(?:\.\d+)?\s*(ms|s|min|m|h)\s*$")


@dataclass
class ConsoleError(Exception):
    """An answer that is not a success: HTTP status, stable code, a sentence a person can act on."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()  # approver groups, for the "you lack rights" page

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def _www_authenticate(code: str | None = None, message: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"'
    if code is not None:
        safe = (message or "").replace("\\", "").replace('"', "'")
        value += f', error="invalid_token", error_description="{safe}"'
    return {"WWW-Authenticate": value}


def error_from(exc: Exception) -> ConsoleError:
    """The HTTP form of a broker or identity error (nothing changed when any of these is raised)."""
    if isinstance(exc, ConsoleError):
        return exc
    if isinstance(exc, AuthenticationError):
        if exc.code is AuthErrorCode.KEY_SOURCE_UNAVAILABLE:
            return ConsoleError(503, str(exc.code), exc.message, {"Retry-After": "5"})
        return ConsoleError(401, str(exc.code), exc.message, _www_authenticate(str(exc.code), exc.message))
    if isinstance(exc, ApprovalStoreUnavailable):
        return ConsoleError(503, exc.code, exc.message, {"Retry-After": "5"})
    if isinstance(exc, ApprovalNotFound):
        return ConsoleError(404, exc.code, exc.message)
    if isinstance(exc, SelfApprovalForbidden):
        return ConsoleError(403, exc.code, exc.message)
    if isinstance(exc, ApproverNotAllowed):
        return ConsoleError(403, exc.code, exc.message, allowed=tuple(exc.allowed))
    if isinstance(exc, (ApprovalAlreadyDecided, DecisionReplayed, ApprovalExpired)):
        return ConsoleError(409, exc.code, exc.message)
    if isinstance(exc, (WindowTooLong, WindowNotAllowed)) or (isinstance(exc, ApprovalRefused)
                                                              and exc.code == "window_invalid"):
        return ConsoleError(422, exc.code, exc.message)
    if isinstance(exc, ApprovalRefused):
        return ConsoleError(403, exc.code, exc.message)
    if isinstance(exc, ApprovalError):
        return ConsoleError(500, exc.code, exc.message)
    return ConsoleError(500, "internal_error", "the console failed unexpectedly; the gateway's log says why")


def missing_token(message: str = "send 'Authorization: Bearer <token>' with a token from your identity provider"
                  ) -> ConsoleError:
    return ConsoleError(401, "token_missing", message, _www_authenticate())


async def authenticate(runtime: Runtime, token: str | None) -> Principal:
    if not token:
        raise missing_token()
    if runtime.verifier is None:
        raise ConsoleError(503, "identity_required", "this gateway verifies no tokens (no 'identity' section); "
                                                     "the console and the approvals API need one")
    try:
        # verify() may fetch a JWKS over the network: keep it off the event loop.
        return await anyio.to_thread.run_sync(runtime.verifier.verify, token)
    except AuthenticationError as exc:
        raise error_from(exc) from None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def broker_of(runtime: Runtime) -> ApprovalBroker:
    if runtime.broker is None:
        raise ConsoleError(503, "approval_store_unavailable", "approvals are not configured on this gateway")
    return runtime.broker


def approver_groups(request: ApprovalRequest) -> tuple[str, ...]:
    return tuple(g for g in request.approvers if g != SELF)


def can_decide(principal: Principal, request: ApprovalRequest) -> bool:
    return principal.subject != request.requester and bool(principal.groups & set(approver_groups(request)))


def can_view(principal: Principal, request: ApprovalRequest) -> bool:
    """Approvers of a request see it, and so does the requester; nobody else (statements carry data)."""
    return principal.subject == request.requester or bool(principal.groups & set(approver_groups(request)))


def not_visible(principal: Principal, request: ApprovalRequest) -> ConsoleError:
    allowed = approver_groups(request)
    return ConsoleError(403, "approver_not_allowed",
                        f"approval request {request.id} may only be seen and decided by members of: "
                        f"{', '.join(allowed) or '(none)'}", allowed=allowed)


def may_audit(runtime: Runtime, principal: Principal) -> bool:
    """Audit views are for the humans who approve: members of any group a rule names as approvers."""
    groups: set[str] = set()
    for rule in runtime.config.rules:
        groups.update(g for g in rule.approval.approvers if g != SELF)
    return bool(principal.groups & groups)


def unmasked_beyond(runtime: Runtime, viewer: Principal, session_groups: Iterable[str] | None) -> list[str]:
    """The mask rules a session's principal was exempt from (``unless_groups``) and ``viewer`` is not: what
    that session received raw — result samples, bound values, error text — the viewer would have been
    given masked, so the audit pages withhold it from them. ``session_groups`` None: not known yet (the
    session record is written when the session ends), so any exemption is assumed."""
    session = None if session_groups is None else set(session_groups)
    out = []
    for mask in runtime.config.masking.columns:
        exempt = set(mask.unless_groups)
        if exempt and (session is None or exempt & session) and not exempt & viewer.groups:
            out.append(mask.column)
    return out


def audit_groups(runtime: Runtime) -> tuple[str, ...]:
    groups: set[str] = set()
    for rule in runtime.config.rules:
        groups.update(g for g in rule.approval.approvers if g != SELF)
    return tuple(sorted(groups))


def parse_window(value: object) -> int | None:
    """``"1h"`` → 3600000; empty or ``"once"`` → None (single use). A unit is required: ``60`` is ambiguous."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConsoleError(422, "window_invalid", "a window is a duration with a unit, such as \"30min\" or \"1h\"")
    text = value.strip()
    if text in ("", "once", "0"):
        return None
    if not _WINDOW.match(text):
        raise ConsoleError(422, "window_invalid",
                           f"{text[:40]!r} is not a duration; give one with a unit, such as \"30min\" or \"1h\"")
    ms = parse_duration_ms(text)
    if ms <= 0:
        raise ConsoleError(422, "window_invalid", "a window must be longer than 0")
    return ms


def format_ms(ms: float) -> str:
    seconds = int(ms // 1000)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 and seconds < 600 else "")
    if seconds < 86400:
        h, m = divmod(seconds // 60, 60)
        return f"{h} h" + (f" {m} min" if m else "")
    d, rest = divmod(seconds, 86400)
    return f"{d} d" + (f" {rest // 3600} h" if rest // 3600 else "")


def groups_text(groups: Iterable[str]) -> str:
    names = sorted(groups)
    return ", ".join(names) if names else "no groups"
