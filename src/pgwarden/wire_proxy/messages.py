"""PostgreSQL v3 protocol messages as small frozen dataclasses, one class per message.

Each class mirrors one message of the protocol documentation ("Message Formats",
protocol 3.0 and 3.2). Classes that travel in the normal phase carry their type
byte as ``TYPE`` (an ``int``, e.g. ``Query.TYPE == ord("Q")``); the start-up
packets (``StartupMessage``, ``SSLRequest``, ``GSSENCRequest``, ``CancelRequest``)
have none. ``CopyData`` and ``CopyDone`` travel in both directions and are shared.
The byte layout lives in :mod:`pgwarden.wire_proxy.codec`; this module holds only
the shapes and a few readers that need no I/O.

Conventions: text is ``str`` (UTF-8; bytes that are not valid UTF-8 survive a
round trip through ``surrogateescape``, so the codec never changes what a peer
sent), raw values are ``bytes``, SQL NULL is ``None``, sequences are tuples.
``DataRow`` keeps its payload as received and decodes columns only when asked
(:meth:`DataRow.values`): the relay path forwards rows without looking at them.

Password-type messages (``'p'``) mean different things depending on the
authentication exchange in progress, so the codec decodes every one of them as
:class:`PasswordMessage` and the caller, who knows the context, reads it with
:meth:`PasswordMessage.password`, :meth:`~PasswordMessage.sasl_initial` or
:meth:`~PasswordMessage.sasl_response`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from .errors import ProtocolViolation

__all__ = [
    "AuthenticationCleartextPassword",
    "AuthenticationGSS",
    "AuthenticationGSSContinue",
    "AuthenticationMD5Password",
    "AuthenticationOk",
    "AuthenticationSASL",
    "AuthenticationSASLContinue",
    "AuthenticationSASLFinal",
    "AuthenticationSSPI",
    "BackendKeyData",
    "BackendMessage",
    "Bind",
    "BindComplete",
    "CancelRequest",
    "Close",
    "CloseComplete",
    "CommandComplete",
    "CopyBothResponse",
    "CopyData",
    "CopyDone",
    "CopyFail",
    "CopyInResponse",
    "CopyOutResponse",
    "DataRow",
    "Describe",
    "DirectTLS",
    "EmptyQueryResponse",
    "ErrorResponse",
    "Execute",
    "FieldDescription",
    "Flush",
    "FrontendMessage",
    "FunctionCall",
    "FunctionCallResponse",
    "GSSENCRequest",
    "NegotiateProtocolVersion",
    "NoData",
    "NoticeResponse",
    "NotificationResponse",
    "ParameterDescription",
    "ParameterStatus",
    "Parse",
    "ParseComplete",
    "PasswordMessage",
    "PortalSuspended",
    "Query",
    "ReadyForQuery",
    "RowDescription",
    "SASLInitialResponse",
    "SASLResponse",
    "SSLRequest",
    "StartupMessage",
    "StartupPacket",
    "Sync",
    "Terminate",
    "error",
    "error_from",
    "notice",
]


# --------------------------------------------------------------------------------------------------
# start-up phase (no type byte)


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """The first real packet: protocol version and the connection parameters (``user``, ``database``,
    ``options``, ``application_name``, ``_pq_.*`` protocol options, any setting…), in the client's order."""

    params: dict[str, str]
    major: int = 3
    minor: int = 0

    @property
    def version(self) -> tuple[int, int]:
        return (self.major, self.minor)


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """Code 80877103: the client asks to switch to TLS; answered by one byte ``S`` or ``N``."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """Code 80877104: the client asks for GSSAPI encryption; answered by ``G`` or ``N``."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Code 80877102, sent on a new connection: cancel what backend ``pid`` runs.

    ``key`` is 4 bytes under protocol 3.0 and 4 to 256 bytes under 3.2."""

    pid: int
    key: bytes


@dataclass(frozen=True, slots=True)
class DirectTLS:
    """Not a PostgreSQL message: the first byte was 0x16, a TLS handshake record (PostgreSQL 17
    ``sslnegotiation=direct``). The server hands the connection to TLS (ALPN ``postgresql``)."""


StartupPacket: TypeAlias = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest | DirectTLS


# --------------------------------------------------------------------------------------------------
# frontend


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """Type ``p``: a password, a SASL(initial) response or a GSSAPI token; ``data`` is the raw payload."""

    TYPE: ClassVar[int] = ord("p")
    data: bytes

    def password(self) -> str:
        """Read as a cleartext or MD5 password response (a NUL-terminated string)."""
        data = self.data
        if not data.endswith(b"\0") or data.find(b"\0") != len(data) - 1:
            raise ProtocolViolation("missing_nul", "password message is not one NUL-terminated string")
        return data[:-1].decode("utf-8", "surrogateescape")

    def sasl_initial(self) -> SASLInitialResponse:
        """Read as SASLInitialResponse: mechanism name, Int32 length (-1: none), initial data."""
        data = self.data
        nul = data.find(b"\0")
        if nul < 0:
            raise ProtocolViolation("missing_nul", "SASLInitialResponse: mechanism name lacks its NUL")
        if len(data) < nul + 5:
            raise ProtocolViolation("truncated", "SASLInitialResponse: no length for the initial response")
        (n,) = struct.unpack_from("!i", data, nul + 1)
        rest = data[nul + 5 :]
        if n == -1:
            if rest:
                raise ProtocolViolation("bad_length", "SASLInitialResponse: data after a -1 length")
            initial = None
        elif n < 0 or n != len(rest):
            raise ProtocolViolation("bad_length", "SASLInitialResponse: length does not match the data")
        else:
            initial = rest
        return SASLInitialResponse(data[:nul].decode("utf-8", "surrogateescape"), initial)

    def sasl_response(self) -> SASLResponse:
        """Read as SASLResponse: the whole payload is mechanism data."""
        return SASLResponse(self.data)


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    """Encoded as a ``p`` message; ``data`` None means "no initial response" (length -1)."""

    TYPE: ClassVar[int] = ord("p")
    mechanism: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class SASLResponse:
    """Encoded as a ``p`` message carrying SASL mechanism data."""

    TYPE: ClassVar[int] = ord("p")
    data: bytes


@dataclass(frozen=True, slots=True)
class Query:
    TYPE: ClassVar[int] = ord("Q")
    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    TYPE: ClassVar[int] = ord("P")
    name: str
    query: str
    param_types: tuple[int, ...] = ()  # type OIDs; 0 leaves the type to the server


@dataclass(frozen=True, slots=True)
class Bind:
    """``param_formats`` / ``result_formats``: empty = all text, one code = applies to all, else one each."""

    TYPE: ClassVar[int] = ord("B")
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Describe:
    TYPE: ClassVar[int] = ord("D")
    kind: str  # "S" prepared statement, "P" portal
    name: str = ""


@dataclass(frozen=True, slots=True)
class Execute:
    TYPE: ClassVar[int] = ord("E")
    portal: str = ""
    max_rows: int = 0  # 0 = no limit


@dataclass(frozen=True, slots=True)
class Close:
    TYPE: ClassVar[int] = ord("C")
    kind: str  # "S" or "P"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Sync:
    TYPE: ClassVar[int] = ord("S")


@dataclass(frozen=True, slots=True)
class Flush:
    TYPE: ClassVar[int] = ord("H")


@dataclass(frozen=True, slots=True)
class Terminate:
    TYPE: ClassVar[int] = ord("X")


@dataclass(frozen=True, slots=True)
class CopyData:
    """Both directions."""

    TYPE: ClassVar[int] = ord("d")
    data: bytes


@dataclass(frozen=True, slots=True)
class CopyDone:
    """Both directions."""

    TYPE: ClassVar[int] = ord("c")


@dataclass(frozen=True, slots=True)
class CopyFail:
    TYPE: ClassVar[int] = ord("f")
    message: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The legacy fast-path call of a function by OID (a bypass class: policy refuses it)."""

    TYPE: ClassVar[int] = ord("F")
    oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0


FrontendMessage: TypeAlias = (
    PasswordMessage | SASLInitialResponse | SASLResponse | Query | Parse | Bind | Describe | Execute | Close
    | Sync | Flush | Terminate | CopyData | CopyDone | CopyFail | FunctionCall
)


# --------------------------------------------------------------------------------------------------
# backend


@dataclass(frozen=True, slots=True)
class AuthenticationOk:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 5
    salt: bytes  # 4 bytes


@dataclass(frozen=True, slots=True)
class AuthenticationGSS:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 7


@dataclass(frozen=True, slots=True)
class AuthenticationGSSContinue:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 8
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthenticationSSPI:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 9


@dataclass(frozen=True, slots=True)
class AuthenticationSASL:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 10
    mechanisms: tuple[str, ...]  # e.g. ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 11
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal:
    TYPE: ClassVar[int] = ord("R")
    CODE: ClassVar[int] = 12
    data: bytes


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    TYPE: ClassVar[int] = ord("S")
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    """``key`` is 4 bytes under protocol 3.0, 4 to 256 bytes under 3.2 (PostgreSQL 18 sends 32)."""

    TYPE: ClassVar[int] = ord("K")
    pid: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    TYPE: ClassVar[int] = ord("Z")
    status: bytes = b"I"  # b"I" idle, b"T" in a transaction block, b"E" in a failed one


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One column of a RowDescription. ``table_oid``/``attnum`` are 0 when not a plain column."""

    name: str
    table_oid: int = 0
    attnum: int = 0
    type_oid: int = 25
    type_len: int = -1
    type_mod: int = -1
    format: int = 0


@dataclass(frozen=True, slots=True)
class RowDescription:
    TYPE: ClassVar[int] = ord("T")
    fields: tuple[FieldDescription, ...]


_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")


@dataclass(frozen=True, slots=True)
class DataRow:
    """A row as received: ``payload`` is the message body (Int16 count, then Int32 length + bytes per
    column, -1 for NULL). Nothing is decoded until :meth:`values` is called; build one from values
    with :meth:`from_values`."""

    TYPE: ClassVar[int] = ord("D")
    payload: bytes

    @classmethod
    def from_values(cls, values: tuple[bytes | None, ...] | list[bytes | None]) -> DataRow:
        parts = [_INT16.pack(len(values))]
        for v in values:
            if v is None:
                parts.append(b"\xff\xff\xff\xff")
            else:
                parts.append(_INT32.pack(len(v)))
                parts.append(bytes(v))
        return cls(b"".join(parts))

    @property
    def column_count(self) -> int:
        if len(self.payload) < 2:
            raise ProtocolViolation("truncated", "DataRow: no column count")
        return _INT16.unpack_from(self.payload)[0]

    def values(self) -> tuple[bytes | None, ...]:
        """Decode every column; raises ProtocolViolation when the payload is malformed."""
        data = self.payload
        size = len(data)
        if size < 2:
            raise ProtocolViolation("truncated", "DataRow: no column count")
        (count,) = _INT16.unpack_from(data)
        if count < 0:
            raise ProtocolViolation("negative_count", f"DataRow: negative column count {count}")
        out: list[bytes | None] = []
        pos = 2
        unpack = _INT32.unpack_from
        for _ in range(count):
            if pos + 4 > size:
                raise ProtocolViolation("truncated", "DataRow: column length overruns the message")
            (n,) = unpack(data, pos)
            pos += 4
            if n == -1:
                out.append(None)
                continue
            if n < 0:
                raise ProtocolViolation("bad_length", f"DataRow: column length {n}")
            if pos + n > size:
                raise ProtocolViolation("truncated", "DataRow: column value overruns the message")
            out.append(data[pos : pos + n])
            pos += n
        if pos != size:
            raise ProtocolViolation("trailing_bytes", "DataRow: bytes after the last column")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class CommandComplete:
    TYPE: ClassVar[int] = ord("C")
    tag: str  # e.g. "SELECT 3", "INSERT 0 1"


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    TYPE: ClassVar[int] = ord("I")


# field codes of ErrorResponse / NoticeResponse ("Error and Notice Message Fields")
_SEVERITY, _SEVERITY_V, _SQLSTATE, _MESSAGE, _DETAIL, _HINT = "S", "V", "C", "M", "D", "H"


@dataclass(frozen=True, slots=True)
class _Diagnostic:
    """Fields keyed by their one-letter code (``S`` severity, ``C`` SQLSTATE, ``M`` message…), in order."""

    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def severity(self) -> str | None:
        """The non-localised severity (``V``) when present, else the localised one (``S``)."""
        return self.fields.get(_SEVERITY_V) or self.fields.get(_SEVERITY)

    @property
    def sqlstate(self) -> str | None:
        return self.fields.get(_SQLSTATE)

    @property
    def message(self) -> str | None:
        return self.fields.get(_MESSAGE)

    @property
    def detail(self) -> str | None:
        return self.fields.get(_DETAIL)

    @property
    def hint(self) -> str | None:
        return self.fields.get(_HINT)


@dataclass(frozen=True, slots=True)
class ErrorResponse(_Diagnostic):
    TYPE: ClassVar[int] = ord("E")


@dataclass(frozen=True, slots=True)
class NoticeResponse(_Diagnostic):
    TYPE: ClassVar[int] = ord("N")


def _diagnostic_fields(
    severity: str, sqlstate: str, message: str, detail: str | None, hint: str | None
) -> dict[str, str]:
    if len(sqlstate) != 5 or not sqlstate.isascii() or not sqlstate.isalnum():
        raise ValueError(f"SQLSTATE must be 5 ASCII letters or digits, not {sqlstate!r}")
    fields = {_SEVERITY: severity, _SEVERITY_V: severity, _SQLSTATE: sqlstate, _MESSAGE: message}
    if detail is not None:
        fields[_DETAIL] = detail
    if hint is not None:
        fields[_HINT] = hint
    return fields


def error(
    severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
) -> ErrorResponse:
    """An ErrorResponse as the proxy sends it itself (``severity`` is ``ERROR``, ``FATAL`` or ``PANIC``)."""
    return ErrorResponse(_diagnostic_fields(severity, sqlstate, message, detail, hint))


def notice(
    severity: str, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
) -> NoticeResponse:
    """A NoticeResponse (``severity`` is ``WARNING``, ``NOTICE``, ``INFO``, ``LOG`` or ``DEBUG``)."""
    return NoticeResponse(_diagnostic_fields(severity, sqlstate, message, detail, hint))


def error_from(exc: Exception, severity: str = "ERROR") -> ErrorResponse:
    """The ErrorResponse a client is told for a typed pgwarden error (its SQLSTATE, message and hint)."""
    sqlstate = getattr(exc, "sqlstate", None) or "XX000"
    message = getattr(exc, "message", None) or str(exc)
    return error(severity, sqlstate, message, hint=getattr(exc, "hint", None))


@dataclass(frozen=True, slots=True)
class ParseComplete:
    TYPE: ClassVar[int] = ord("1")


@dataclass(frozen=True, slots=True)
class BindComplete:
    TYPE: ClassVar[int] = ord("2")


@dataclass(frozen=True, slots=True)
class CloseComplete:
    TYPE: ClassVar[int] = ord("3")


@dataclass(frozen=True, slots=True)
class NoData:
    TYPE: ClassVar[int] = ord("n")


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    TYPE: ClassVar[int] = ord("s")


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    TYPE: ClassVar[int] = ord("t")
    type_oids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CopyInResponse:
    """``format``: 0 text, 1 binary; ``column_formats`` one code per column."""

    TYPE: ClassVar[int] = ord("G")
    format: int = 0
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyOutResponse:
    TYPE: ClassVar[int] = ord("H")
    format: int = 0
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyBothResponse:
    TYPE: ClassVar[int] = ord("W")
    format: int = 0
    column_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """The newest minor version the server supports for the client's major, and the ``_pq_.`` options
    it did not recognise.

    On the wire the Int32 is the whole version code ``major << 16 | minor`` (PostgreSQL sends
    ``FrontendProtocol``, e.g. 196610 for 3.2, and libpq compares it as a version), although the
    documentation calls it the minor version; ``major`` keeps that half."""

    TYPE: ClassVar[int] = ord("v")
    newest_minor: int
    unrecognised: tuple[str, ...] = ()
    major: int = 3


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    TYPE: ClassVar[int] = ord("A")
    pid: int
    channel: str
    payload: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    TYPE: ClassVar[int] = ord("V")
    result: bytes | None


BackendMessage: TypeAlias = (
    AuthenticationOk | AuthenticationCleartextPassword | AuthenticationMD5Password | AuthenticationGSS
    | AuthenticationGSSContinue | AuthenticationSSPI | AuthenticationSASL | AuthenticationSASLContinue
    | AuthenticationSASLFinal | ParameterStatus | BackendKeyData | ReadyForQuery | RowDescription | DataRow
    | CommandComplete | EmptyQueryResponse | ErrorResponse | NoticeResponse | ParseComplete | BindComplete
    | CloseComplete | NoData | PortalSuspended | ParameterDescription | CopyInResponse | CopyOutResponse
    | CopyBothResponse | NegotiateProtocolVersion | NotificationResponse | FunctionCallResponse | CopyData
    | CopyDone
)
