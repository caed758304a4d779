"""The wire proxy's typed errors: malformed bytes, oversized messages, refused protocol versions, replies
the reply queue did not expect.

All derive from :class:`pgwarden.errors.ProtocolViolation` (SQLSTATE 08P01 unless stated), so the server
turns any of them into a FATAL ErrorResponse with :func:`pgwarden.wire_proxy.messages.error_from` and
closes the connection. ``code`` is stable and names what was wrong.
"""

from __future__ import annotations

from .. import errors as _errors

__all__ = ["MessageTooLarge", "ProtocolViolation", "StartupRefused", "UnexpectedReply", "UnsupportedProtocol"]

_HINT = "The peer sent bytes the PostgreSQL protocol does not allow; check the driver and its protocol version."


class ProtocolViolation(_errors.ProtocolViolation):
    """Bytes that are not a well-formed PostgreSQL v3 message (``truncated``, ``missing_nul``,
    ``bad_length``, ``negative_count``, ``trailing_bytes``, ``unknown_type``, ``bad_value``…)."""

    def __init__(self, code: str, message: str, *, sqlstate: str | None = None, hint: str | None = _HINT) -> None:
        super().__init__(code, message, sqlstate=sqlstate, hint=hint)


class MessageTooLarge(ProtocolViolation):
    """A length header announced more than the configured maximum; raised before the body is buffered."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            "message_too_large",
            f"a message announced {length} bytes, more than the limit of {limit}",
            hint="Raise the proxy's maximum message size if such messages are expected.",
        )
        self.length = length
        self.limit = limit


class UnsupportedProtocol(ProtocolViolation):
    """A start-up packet asked for a protocol major version other than 3 (PostgreSQL answers FATAL 0A000)."""

    sqlstate = "0A000"  # feature_not_supported

    def __init__(self, major: int, minor: int) -> None:
        super().__init__(
            "unsupported_protocol",
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.2",
            hint="Use a client that speaks protocol 3 (any libpq since PostgreSQL 7.4).",
        )
        self.major = major
        self.minor = minor


class StartupRefused(ProtocolViolation):
    """A start-up packet is well formed but cannot start a session (no ``user``, …)."""

    sqlstate = "28000"  # invalid_authorization_specification


class UnexpectedReply(ProtocolViolation):
    """The upstream server sent a message the reply queue did not expect at this point; the session's
    bookkeeping can no longer be trusted, so the proxy ends it (fail closed)."""
