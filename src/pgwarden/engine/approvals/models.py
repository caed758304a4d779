"""What the broker stores and hands out: approval requests, windows and grants.

Every value here is a frozen dataclass, so a request handed to a door cannot be
changed behind the broker's back; a decision makes a *new* value (``replace``).
Times are timezone-aware UTC ``datetime`` values; stores keep them as integer
milliseconds since the epoch. ``as_dict()`` gives the JSON shape the HTTP API,
the webhooks and the audit trail share (ISO 8601 times).

A request's ``scope`` is the set of ``(relation, access)`` pairs the statement
touches (``("public.orders", "delete")``), as the analysis reports them. A
window granted on a request covers later statements of the same requester, on
the same target and role, whose scope is a non-empty subset of it (see
:class:`Grant`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pgwarden.engine.principal import Channel

__all__ = [
    "SELF",
    "ApprovalEvent",
    "ApprovalReason",
    "ApprovalRequest",
    "ApprovalStatus",
    "Channel",
    "Grant",
    "Window",
    "from_ms",
    "new_request_id",
    "normalise_scope",
    "to_ms",
]

SELF = "self"  # in approvers: the human at the agent's own client (MCP elicitation)


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    USED = "used"  # an approved single-use request whose statement ran


class ApprovalEvent(StrEnum):
    """What webhooks can be told about."""

    REQUESTED = "approval.requested"
    APPROVED = "approval.approved"
    DENIED = "approval.denied"
    EXPIRED = "approval.expired"
    WITHDRAWN = "approval.withdrawn"


def new_request_id() -> str:
    """An unguessable id: ``apr_`` and 128 random bits (URL-safe)."""
    return "apr_" + secrets.token_urlsafe(16)


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


Scope = tuple[tuple[str, str], ...]


def normalise_scope(scope: Iterable[Sequence[str]]) -> Scope:
    """Sorted, de-duplicated ``(relation, access)`` pairs; accepts lists from JSON."""
    pairs = {(str(rel), str(access)) for rel, access in scope}
    return tuple(sorted(pairs))


@dataclass(frozen=True, slots=True)
class ApprovalReason:
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Window:
    """A time-boxed window granted with an approval: until when, over which relations and accesses."""

    until: datetime
    scope: Scope

    def as_dict(self) -> dict[str, Any]:
        return {"until": self.until.isoformat(), "scope": [list(p) for p in self.scope]}


@dataclass(frozen=True, slots=True)
class Grant:
    """An active window: ``principal`` may run statements on ``target`` as ``role`` whose scope is a
    non-empty subset of ``scope`` until ``until``, each recorded as a request approved through it.

    ``request_id`` is the request whose approval granted it; ``approved_by`` and ``approver_groups``
    are kept so a later statement whose policy names other approvers is not covered.
    """

    request_id: str
    principal: str
    target: str
    role: str | None
    scope: Scope
    until: datetime
    approved_by: str
    approver_groups: frozenset[str]
    created: datetime

    def covers(self, principal: str, target: str, role: str | None, scope: Scope, at: datetime) -> bool:
        return (bool(scope) and at < self.until and principal == self.principal and target == self.target
                and role == self.role and set(scope) <= set(self.scope))

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "principal": self.principal, "target": self.target,
                "role": self.role, "scope": [list(p) for p in self.scope], "until": self.until.isoformat(),
                "approved_by": self.approved_by, "approver_groups": sorted(self.approver_groups),
                "created": self.created.isoformat()}


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One statement held for a human, and what became of it.

    ``approvers`` are the groups whose members may decide (``"self"``: the human at the agent's own
    client). ``valid_until`` is how long an approval may still be consumed: the request's ``expires``
    for a single-use approval, the window's end for one granted with a window. ``via_grant`` names
    the request whose window approved this one automatically.
    """

    id: str
    requester: str
    requester_groups: frozenset[str]
    target: str
    role: str | None
    statement: str
    parameters: tuple[str | None, ...]
    policy_version: str
    reasons: tuple[ApprovalReason, ...]
    lint_findings: tuple[Mapping[str, Any], ...]
    channel: Channel
    approvers: tuple[str, ...]
    timeout_ms: int
    max_window_ms: int
    triggers: tuple[str, ...]
    scope: Scope
    created: datetime
    expires: datetime
    binding: str
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_by: str | None = None
    decided_groups: frozenset[str] = field(default_factory=frozenset)
    decided_at: datetime | None = None
    comment: str | None = None
    window: Window | None = None
    valid_until: datetime | None = None
    used_at: datetime | None = None
    via_grant: str | None = None

    @property
    def pending(self) -> bool:
        return self.status is ApprovalStatus.PENDING

    @property
    def self_approvable(self) -> bool:
        return SELF in self.approvers

    def usable(self, at: datetime) -> bool:
        """Approved, not yet used, and still valid at ``at``."""
        return (self.status is ApprovalStatus.APPROVED and self.valid_until is not None
                and at < self.valid_until)

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id, "status": self.status.value, "requester": self.requester,
            "requester_groups": sorted(self.requester_groups), "target": self.target, "role": self.role,
            "statement": self.statement, "parameters": list(self.parameters),
            "policy_version": self.policy_version, "reasons": [r.as_dict() for r in self.reasons],
            "lint_findings": [dict(f) for f in self.lint_findings], "channel": self.channel.value,
            "approvers": list(self.approvers), "timeout_ms": self.timeout_ms,
            "max_window_ms": self.max_window_ms, "triggers": list(self.triggers),
            "scope": [list(p) for p in self.scope], "created": iso(self.created), "expires": iso(self.expires),
            "binding": self.binding, "decided_by": self.decided_by,
            "decided_groups": sorted(self.decided_groups), "decided_at": iso(self.decided_at),
            "comment": self.comment, "window": self.window.as_dict() if self.window else None,
            "valid_until": iso(self.valid_until), "used_at": iso(self.used_at), "via_grant": self.via_grant,
        }
