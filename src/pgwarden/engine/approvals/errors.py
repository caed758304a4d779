"""The broker's typed errors: one class per rule, each with a stable ``code``.

Doors match on ``code`` (and on the class): a refused decision is a
:class:`ApprovalRefused` (the caller asked for something the rules forbid, and
nothing changed), an id that does not exist is :class:`ApprovalNotFound`, and a
store that cannot be reached is :class:`ApprovalStoreUnavailable`, which the
engine turns into a refusal of the one statement that needed it (fail closed).
"""

from __future__ import annotations

from pgwarden.errors import PgwardenError, PolicyRefusal, UnavailableError

__all__ = [
    "ApprovalAlreadyDecided",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "ApprovalRefused",
    "ApprovalStoreUnavailable",
    "ApproverNotAllowed",
    "DecisionReplayed",
    "SelfApprovalForbidden",
    "WindowNotAllowed",
    "WindowTooLong",
]


class ApprovalError(PgwardenError):
    """Base of the broker's errors."""


class ApprovalNotFound(ApprovalError):
    sqlstate = "42704"  # undefined_object

    def __init__(self, request_id: str) -> None:
        super().__init__("approval_not_found",
                         f"no approval request {request_id!r}; list pending requests to find the right id")
        self.request_id = request_id


class ApprovalRefused(ApprovalError, PolicyRefusal):
    """A decision or call the rules forbid. Nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class ApprovalAlreadyDecided(ApprovalRefused):
    def __init__(self, request_id: str, status: str) -> None:
        super().__init__("approval_already_decided",
                         f"approval request {request_id} is already {status}; nothing was changed")
        self.status = status


class DecisionReplayed(ApprovalRefused):
    def __init__(self, request_id: str, status: str) -> None:
        super().__init__("decision_replayed",
                         f"approval request {request_id} was already {status} by the same approver; "
                         "the repeated decision was ignored")
        self.status = status


class ApprovalExpired(ApprovalRefused):
    def __init__(self, request_id: str) -> None:
        super().__init__("approval_expired",
                         f"approval request {request_id} has expired; the agent must send the statement again "
                         "to ask anew")


class SelfApprovalForbidden(ApprovalRefused):
    def __init__(self, request_id: str) -> None:
        super().__init__("self_approval_forbidden",
                         f"you asked for approval request {request_id} yourself; another approver must decide it")


class ApproverNotAllowed(ApprovalRefused):
    def __init__(self, request_id: str, allowed: tuple[str, ...]) -> None:
        names = ", ".join(allowed) or "(none)"
        super().__init__("approver_not_allowed",
                         f"approval request {request_id} may only be decided by members of: {names}")
        self.allowed = allowed


class WindowTooLong(ApprovalRefused):
    def __init__(self, request_id: str, asked_ms: int, max_ms: int) -> None:
        super().__init__("window_too_long",
                         f"a window of {asked_ms} ms was asked for request {request_id}, but the policy allows "
                         f"at most {max_ms} ms; grant a shorter window or approve once")


class WindowNotAllowed(ApprovalRefused):
    def __init__(self, request_id: str, why: str | None = None) -> None:
        super().__init__("window_not_allowed", why or
                         f"the policy makes request {request_id} single-use: approve it without a window")


class ApprovalStoreUnavailable(ApprovalError, UnavailableError):
    """The approval store cannot be reached: the statement that needed it is refused (fail closed)."""

    def __init__(self, detail: str) -> None:
        super().__init__("approval_store_unavailable",
                         f"the approval store cannot be reached ({detail}); statements that need approval are "
                         "refused until it is back",
                         hint="check the approvals.store setting and that the store is reachable")
