"""One error base for the whole project: a stable code, a message that says what to do, a SQLSTATE.

Every typed error pgwarden raises derives from :class:`PgwardenError`. ``code`` is
stable (agents, scripts and the audit trail match on it), ``message`` is a sentence
a person or an agent can act on, and ``sqlstate`` is what a PostgreSQL wire client
is told, so the wire proxy can turn any error into an ErrorResponse without a table
of its own. Subclasses state their default SQLSTATE where they are defined, in the
manner of psycopg's ``errors.py``; an instance may carry a more precise one.

The error classes of each package live in that package (``policy.reasons``,
``engine.identity`` …) and subclass these bases; this module only holds the bases
that several packages share, so it imports nothing of ours.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigurationError",
    "PgwardenError",
    "PolicyRefusal",
    "ProtocolViolation",
    "UnavailableError",
]


class PgwardenError(Exception):
    """Base of every typed pgwarden error."""

    sqlstate: str = "XX000"  # internal_error, unless a subclass or instance says better

    def __init__(self, code: str, message: str, *, sqlstate: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "message": self.message, "sqlstate": self.sqlstate}
        if self.hint:
            out["hint"] = self.hint
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class ConfigurationError(PgwardenError):
    """The configuration, a secret it names, or the command line is wrong (fix it and start again)."""

    sqlstate = "F0000"  # config_file_error


class AuthError(PgwardenError):
    """Who the caller is could not be established (bad, expired or missing token)."""

    sqlstate = "28000"  # invalid_authorization_specification


class PolicyRefusal(PgwardenError):
    """The policy refused what was asked; the message says what is allowed instead."""

    sqlstate = "42501"  # insufficient_privilege


class UnavailableError(PgwardenError):
    """Something pgwarden needs (a target, the approval store, the journal) cannot be reached now."""

    sqlstate = "08006"  # connection_failure


class ProtocolViolation(PgwardenError):
    """A client sent bytes or messages the protocol does not allow."""

    sqlstate = "08P01"  # protocol_violation
