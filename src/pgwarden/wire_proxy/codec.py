"""Bytes ↔ messages for the PostgreSQL v3 protocol, with no I/O: encoders, decoders, frame readers and
the relay-path header scanner.

Framing. After start-up every message is ``type byte, Int32 length (counting itself), body``.
:class:`FrameReader` takes bytes in any chunking (:meth:`~FrameReader.feed`) and hands back complete
:class:`Frame` tuples ``(type, payload)``; :class:`StartupReader` does the same for the start-up phase,
whose packets have no type byte, and recognises direct TLS (first byte 0x16). Both look at a length
header as soon as it is complete and raise :class:`MessageTooLarge` before buffering the body, refuse
lengths below the minimum, and stay broken after an error (a stream cannot be resynchronised).

Decoding. :func:`decode_frontend` / :func:`decode_backend` turn ``(type, payload)`` into a message of
:mod:`pgwarden.wire_proxy.messages`, and :func:`decode_startup` a start-up packet. Every malformed payload
(wrong length, missing NUL, negative or overrunning count, unknown type, bad code) raises
:class:`ProtocolViolation` and nothing else. :func:`encode` turns any message back into bytes; it raises
``ValueError`` for values the protocol cannot carry (a NUL inside a string, a count over 32767), since that
is a bug in the caller rather than bad input.

Relay. :func:`scan` walks a buffer of backend (or frontend) bytes and returns ``(type, start, end)`` for
every complete message plus how many bytes those cover, without copying anything: the server forwards
``buf[:consumed]`` untouched and decodes only the few messages it must read (RowDescription,
CommandComplete, ErrorResponse, ReadyForQuery…) from ``memoryview(buf)[start + 5:end]``.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from . import messages as m
from .errors import MessageTooLarge, ProtocolViolation, UnsupportedProtocol

__all__ = [
    "BACKEND_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FRONTEND_TYPES",
    "MAX_STARTUP_PACKET_SIZE",
    "Frame",
    "FrameReader",
    "StartupReader",
    "decode_backend",
    "decode_frontend",
    "decode_startup",
    "encode",
    "scan",
]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
"""Largest value accepted in a length header (which counts its own 4 bytes), normal phase."""

MAX_STARTUP_PACKET_SIZE = 10_000
"""PostgreSQL's own ``MAX_STARTUP_PACKET_LENGTH``: the start-up packet is tiny, so a larger one is an
attack or a client speaking something else (a TLS record, HTTP); configurable per reader."""

SSL_REQUEST_CODE = 80877103  # 1234.5679
GSSENC_REQUEST_CODE = 80877104  # 1234.5680
CANCEL_REQUEST_CODE = 80877102  # 1234.5678
TLS_HANDSHAKE_BYTE = 0x16

_HEADER = struct.Struct("!BI")
_unpack_header = _HEADER.unpack_from
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class Frame(NamedTuple):
    """One complete normal-phase message: its type byte and its body (without type and length)."""

    type: int
    payload: bytes


# --------------------------------------------------------------------------------------------------
# frame readers


class FrameReader:
    """Incremental framing of the normal phase.

    ``feed(data)`` buffers bytes and splits off every complete frame; ``next_frame()`` returns the
    oldest complete frame or None; iterating drains them. ``known_types``, when given, refuses a type
    byte outside the set as soon as it is seen (use :data:`FRONTEND_TYPES` for a client). The reader
    never waits for more than ``max_message_size + 1`` bytes of an unfinished frame.
    """

    __slots__ = ("_broken", "_buf", "_frames", "_known", "_max")

    def __init__(
        self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, *, known_types: frozenset[int] | None = None
    ) -> None:
        if max_message_size < 4:
            raise ValueError("max_message_size must be at least 4")
        self._max = max_message_size
        self._known = known_types
        self._buf = bytearray()
        self._frames: deque[Frame] = deque()
        self._broken: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held (complete frames waiting in the queue not counted)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        buf += data
        size = len(buf)
        pos = 0
        frames = self._frames
        limit = self._max
        known = self._known
        view = memoryview(buf)  # slices of a view copy once; slices of the bytearray would copy twice
        try:
            while size - pos >= 5:
                kind, length = _unpack_header(buf, pos)
                if known is not None and kind not in known:
                    raise ProtocolViolation("unknown_type", f"unknown message type {_show_type(kind)}")
                if length < 4:
                    raise ProtocolViolation("bad_length", f"message length {length} is below 4")
                if length > limit:
                    raise MessageTooLarge(length, limit)
                end = pos + 1 + length
                if end > size:
                    break
                frames.append(Frame(kind, bytes(view[pos + 5 : end])))
                pos = end
            if size - pos >= 1 and known is not None and buf[pos] not in known:
                raise ProtocolViolation("unknown_type", f"unknown message type {_show_type(buf[pos])}")
        except ProtocolViolation as exc:
            view.release()
            self._broken = exc
            buf.clear()
            raise
        view.release()
        if pos:
            del buf[:pos]

    def next_frame(self) -> Frame | None:
        return self._frames.popleft() if self._frames else None

    def __iter__(self) -> Iterator[Frame]:
        frames = self._frames
        while frames:
            yield frames.popleft()

    def take_rest(self) -> bytes:
        """Every byte fed and not yet taken, as it came (complete frames re-framed, then the unfinished one),
        for whoever reads the stream next; the reader is left empty."""
        rest = b"".join(bytes((f.type,)) + struct.pack("!I", len(f.payload) + 4) + f.payload for f in self._frames)
        self._frames.clear()
        rest += bytes(self._buf)
        self._buf.clear()
        return rest

    def at_eof(self) -> None:
        """The peer closed the connection: raise if it did so in the middle of a message."""
        if self._buf:
            raise ProtocolViolation("truncated", f"connection closed inside a message ({len(self._buf)} bytes)")


class StartupReader:
    """Incremental reader of the start-up phase: length-prefixed packets with no type byte.

    ``next_message()`` returns the next decoded packet (StartupMessage, SSLRequest, GSSENCRequest,
    CancelRequest) or None when more bytes are needed. If the very first byte is 0x16 it returns
    :class:`~pgwarden.wire_proxy.messages.DirectTLS` and leaves every byte for the TLS layer
    (:meth:`take_rest`). After an SSLRequest or GSSENCRequest the server must check ``take_rest()``
    is empty before answering: bytes sent ahead of the TLS handshake were not protected by it
    (CVE-2021-23214), so PostgreSQL refuses them.
    """

    __slots__ = ("_broken", "_buf", "_first", "_max")

    def __init__(self, max_packet_size: int = MAX_STARTUP_PACKET_SIZE) -> None:
        if max_packet_size < 8:
            raise ValueError("max_packet_size must be at least 8")
        self._max = max_packet_size
        self._buf = bytearray()
        self._first = True
        self._broken: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._broken is not None:
            raise self._broken
        self._buf += data
        try:
            self._check_header()
        except ProtocolViolation as exc:
            self._broken = exc
            self._buf.clear()
            raise

    def _check_header(self) -> int | None:
        buf = self._buf
        if self._first and buf and buf[0] == TLS_HANDSHAKE_BYTE:
            return None
        if len(buf) < 4:
            return None
        (length,) = _U32.unpack_from(buf)
        if length < 8:
            raise ProtocolViolation("bad_length", f"invalid length of startup packet: {length}")
        if length > self._max:
            raise MessageTooLarge(length, self._max)
        return length

    def next_message(self) -> m.StartupPacket | None:
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if self._first and buf and buf[0] == TLS_HANDSHAKE_BYTE:
            self._first = False
            return m.DirectTLS()
        length = self._check_header()
        if length is None or len(buf) < length:
            return None
        payload = bytes(buf[4:length])
        del buf[:length]
        self._first = False
        try:
            return decode_startup(payload)
        except ProtocolViolation as exc:
            self._broken = exc
            buf.clear()
            raise

    def take_rest(self) -> bytes:
        """Hand over (and forget) every byte buffered after the packets returned so far."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


# --------------------------------------------------------------------------------------------------
# relay scanner


def scan_pure(
    buf: bytes | bytearray | memoryview,
    start: int = 0,
    end: int | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> tuple[list[tuple[int, int, int]], int]:
    """Find the complete messages in ``buf[start:end]`` without copying (:func:`scan` is this, compiled
    when the optional ``_scan`` module is built).

    Returns ``(spans, consumed)``: one ``(type, start, end)`` per complete message, offsets into ``buf``
    (the body is ``buf[start + 5:end]``), and ``consumed``, the number of bytes from ``start`` those
    messages cover (the rest is an unfinished message to keep). A length header below 4 or above
    ``max_message_size`` raises as soon as its 5 header bytes are present, exactly as FrameReader does.
    """
    if end is None:
        end = len(buf)
    spans: list[tuple[int, int, int]] = []
    append = spans.append
    unpack = _unpack_header
    pos = start
    last = end - 5
    while pos <= last:
        kind, length = unpack(buf, pos)
        stop = pos + 1 + length
        if length < 4 or length > max_message_size:
            _bad_length(length, max_message_size)
        if stop > end:
            break
        append((kind, pos, stop))
        pos = stop
    return spans, pos - start


def _bad_length(length: int, limit: int) -> None:
    if length < 4:
        raise ProtocolViolation("bad_length", f"message length {length} is below 4")
    raise MessageTooLarge(length, limit)


def _compiled_scanner() -> Callable[..., tuple[list[tuple[int, int, int]], int]] | None:
    if os.environ.get("PGWARDEN_PURE_SCANNER"):
        return None
    try:
        from ._scan import scan as compiled  # built by scripts/build_scanner.py (make), optional
    except ImportError:
        return None
    return compiled


_COMPILED = _compiled_scanner()
#: which relay scanner runs: "compiled" (the optional _scan module) or "pure-python"
SCANNER = "compiled" if _COMPILED is not None else "pure-python"

if _COMPILED is not None:
    _compiled = _COMPILED

    def scan(
        buf: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> tuple[list[tuple[int, int, int]], int]:
        """:func:`scan_pure`, compiled: the same spans and the same errors."""
        return _compiled(buf, start, end, max_message_size, _bad_length)
else:
    scan = scan_pure


# --------------------------------------------------------------------------------------------------
# payload reading


class _Cursor:
    """Bounds-checked reads over one payload; every failure is a ProtocolViolation naming ``what``."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> int:
        pos = self.pos
        if pos + n > len(self.data):
            raise ProtocolViolation("truncated", f"{self.what}: message ends early")
        self.pos = pos + n
        return pos

    def int16(self) -> int:
        return _I16.unpack_from(self.data, self._need(2))[0]

    def uint16(self) -> int:
        return _U16.unpack_from(self.data, self._need(2))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self.data, self._need(4))[0]

    def uint32(self) -> int:
        return _U32.unpack_from(self.data, self._need(4))[0]

    def byte(self) -> int:
        return self.data[self._need(1)]

    def count(self) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolViolation("negative_count", f"{self.what}: negative count {n}")
        return n

    def cstring(self) -> str:
        data = self.data
        nul = data.find(b"\0", self.pos)
        if nul < 0:
            raise ProtocolViolation("missing_nul", f"{self.what}: string without its NUL terminator")
        s = data[self.pos : nul].decode("utf-8", "surrogateescape")
        self.pos = nul + 1
        return s

    def take(self, n: int) -> bytes:
        pos = self._need(n)
        return self.data[pos : pos + n]

    def value(self) -> bytes | None:
        n = self.int32()
        if n == -1:
            return None
        if n < 0:
            raise ProtocolViolation("bad_length", f"{self.what}: value length {n}")
        return self.take(n)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def int16s(self) -> tuple[int, ...]:
        n = self.count()
        pos = self._need(2 * n)
        return struct.unpack_from(f"!{n}h", self.data, pos)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolViolation("trailing_bytes", f"{self.what}: {len(self.data) - self.pos} bytes too many")


def _show_type(kind: int) -> str:
    return repr(chr(kind)) if 0x20 <= kind < 0x7F else f"0x{kind:02x}"


def _kind_sp(c: _Cursor) -> str:
    k = c.byte()
    if k not in (0x53, 0x50):  # S, P
        raise ProtocolViolation("bad_value", f"{c.what}: kind {_show_type(k)} is neither 'S' nor 'P'")
    return chr(k)


def _formats_for(c: _Cursor, formats: tuple[int, ...], n: int, what: str) -> None:
    # PostgreSQL itself answers 08P01 when the counts do not agree.
    if len(formats) not in (0, 1, n):
        raise ProtocolViolation("bad_count", f"{c.what}: {len(formats)} {what} formats for {n} values")


def _empty(cls: type) -> Callable[[bytes], object]:
    name = cls.__name__
    instance = cls()

    def decode(data: bytes) -> object:
        if data:
            raise ProtocolViolation("trailing_bytes", f"{name}: expected an empty body, got {len(data)} bytes")
        return instance

    return decode


# --------------------------------------------------------------------------------------------------
# frontend decoders


def _d_query(data: bytes) -> m.Query:
    c = _Cursor(data, "Query")
    sql = c.cstring()
    c.done()
    return m.Query(sql)


def _d_parse(data: bytes) -> m.Parse:
    c = _Cursor(data, "Parse")
    name = c.cstring()
    query = c.cstring()
    n = c.count()
    oids = tuple(c.uint32() for _ in range(n))
    c.done()
    return m.Parse(name, query, oids)


def _d_bind(data: bytes) -> m.Bind:
    # The common, well-formed message read with a handful of C calls; anything unusual or malformed is read
    # again by the checked reader below, which raises the precise ProtocolViolation.
    try:
        end = len(data)
        p0 = data.index(0)
        p1 = data.index(0, p0 + 1)
        pos = p1 + 1
        (nf,) = _I16.unpack_from(data, pos)
        pformats = _i16s_at(nf, data, pos + 2)
        pos += 2 + 2 * nf
        (n,) = _I16.unpack_from(data, pos)
        pos += 2
        if nf not in (0, 1, n) or n < 0:
            return _d_bind_checked(data)
        params: list[bytes | None] = []
        append = params.append
        unpack = _I32.unpack_from
        for _ in range(n):
            (size,) = unpack(data, pos)
            pos += 4
            if size == -1:
                append(None)
                continue
            if size < 0 or pos + size > end:
                return _d_bind_checked(data)
            append(data[pos:pos + size])
            pos += size
        (nr,) = _I16.unpack_from(data, pos)
        rformats = _i16s_at(nr, data, pos + 2)
        if pos + 2 + 2 * nr != end:
            return _d_bind_checked(data)
        return m.Bind(data[:p0].decode("utf-8", "surrogateescape"), data[p0 + 1:p1].decode("utf-8", "surrogateescape"),
                      pformats, tuple(params), rformats)
    except (ValueError, struct.error):
        return _d_bind_checked(data)


def _i16s_at(n: int, data: bytes, pos: int) -> tuple[int, ...]:
    if n < 0:
        raise ValueError("negative count")
    return _I16.unpack_from(data, pos) if n == 1 else () if n == 0 else struct.unpack_from(f"!{n}h", data, pos)




def _d_bind_checked(data: bytes) -> m.Bind:
    c = _Cursor(data, "Bind")
    portal = c.cstring()
    statement = c.cstring()
    pformats = c.int16s()
    n = c.count()
    _formats_for(c, pformats, n, "parameter")
    params = tuple(c.value() for _ in range(n))
    rformats = c.int16s()
    c.done()
    return m.Bind(portal, statement, pformats, params, rformats)


def _d_describe(data: bytes) -> m.Describe:
    if len(data) >= 2 and data[0] in (0x53, 0x50) and data.find(b"\0", 1) == len(data) - 1:
        return m.Describe(chr(data[0]), data[1:-1].decode("utf-8", "surrogateescape"))
    return _d_describe_checked(data)


def _d_describe_checked(data: bytes) -> m.Describe:
    c = _Cursor(data, "Describe")
    kind = _kind_sp(c)
    name = c.cstring()
    c.done()
    return m.Describe(kind, name)


def _d_close(data: bytes) -> m.Close:
    c = _Cursor(data, "Close")
    kind = _kind_sp(c)
    name = c.cstring()
    c.done()
    return m.Close(kind, name)


def _d_execute(data: bytes) -> m.Execute:
    nul = data.find(b"\0")
    if nul >= 0 and nul + 5 == len(data):
        try:
            return m.Execute(data[:nul].decode("utf-8", "surrogateescape"), _I32.unpack_from(data, nul + 1)[0])
        except ValueError:
            pass
    return _d_execute_checked(data)


def _d_execute_checked(data: bytes) -> m.Execute:
    c = _Cursor(data, "Execute")
    portal = c.cstring()
    max_rows = c.int32()
    c.done()
    return m.Execute(portal, max_rows)  # PostgreSQL reads a negative count as "no limit" too


def _d_copy_fail(data: bytes) -> m.CopyFail:
    c = _Cursor(data, "CopyFail")
    msg = c.cstring()
    c.done()
    return m.CopyFail(msg)


def _d_function_call(data: bytes) -> m.FunctionCall:
    c = _Cursor(data, "FunctionCall")
    oid = c.uint32()
    aformats = c.int16s()
    n = c.count()
    _formats_for(c, aformats, n, "argument")
    args = tuple(c.value() for _ in range(n))
    rformat = c.int16()
    c.done()
    return m.FunctionCall(oid, aformats, args, rformat)


_FRONTEND_DECODERS: dict[int, Callable[[bytes], object]] = {
    ord("p"): m.PasswordMessage,
    ord("Q"): _d_query,
    ord("P"): _d_parse,
    ord("B"): _d_bind,
    ord("D"): _d_describe,
    ord("E"): _d_execute,
    ord("C"): _d_close,
    ord("S"): _empty(m.Sync),
    ord("H"): _empty(m.Flush),
    ord("X"): _empty(m.Terminate),
    ord("d"): m.CopyData,
    ord("c"): _empty(m.CopyDone),
    ord("f"): _d_copy_fail,
    ord("F"): _d_function_call,
}

FRONTEND_TYPES = frozenset(_FRONTEND_DECODERS)
"""Type bytes a client may send after start-up."""


def decode_frontend(kind: int, payload: bytes | bytearray | memoryview) -> m.FrontendMessage:
    """Decode one client message (``kind`` is the type byte as an int). ``'p'`` always gives a
    :class:`~pgwarden.wire_proxy.messages.PasswordMessage`; read it in the context of the exchange."""
    decoder = _FRONTEND_DECODERS.get(kind)
    if decoder is None:
        raise ProtocolViolation("unknown_type", f"invalid frontend message type {_show_type(kind)}")
    return decoder(bytes(payload))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# backend decoders


_AUTH_EMPTY: dict[int, object] = {
    0: m.AuthenticationOk(),
    3: m.AuthenticationCleartextPassword(),
    7: m.AuthenticationGSS(),
    9: m.AuthenticationSSPI(),
}


def _d_auth(data: bytes) -> object:
    c = _Cursor(data, "Authentication")
    code = c.int32()
    if code in _AUTH_EMPTY:
        c.done()
        return _AUTH_EMPTY[code]
    if code == 5:
        salt = c.take(4)
        c.done()
        return m.AuthenticationMD5Password(salt)
    if code == 10:
        mechs = []
        while True:
            mech = c.cstring()
            if not mech:
                break
            mechs.append(mech)
        c.done()
        if not mechs:
            raise ProtocolViolation("bad_value", "AuthenticationSASL: no mechanism offered")
        return m.AuthenticationSASL(tuple(mechs))
    if code == 8:
        return m.AuthenticationGSSContinue(c.rest())
    if code == 11:
        return m.AuthenticationSASLContinue(c.rest())
    if code == 12:
        return m.AuthenticationSASLFinal(c.rest())
    raise ProtocolViolation("bad_value", f"unknown authentication request code {code}")


def _d_param_status(data: bytes) -> m.ParameterStatus:
    c = _Cursor(data, "ParameterStatus")
    name = c.cstring()
    value = c.cstring()
    c.done()
    return m.ParameterStatus(name, value)


def _d_key_data(data: bytes) -> m.BackendKeyData:
    c = _Cursor(data, "BackendKeyData")
    pid = c.int32()
    key = c.rest()
    if not 4 <= len(key) <= 256:
        raise ProtocolViolation("bad_length", f"BackendKeyData: a {len(key)}-byte key (4 to 256 allowed)")
    return m.BackendKeyData(pid, key)


def _d_ready(data: bytes) -> m.ReadyForQuery:
    if len(data) != 1 or data not in (b"I", b"T", b"E"):
        raise ProtocolViolation("bad_value", f"ReadyForQuery: status {data!r} is not I, T or E")
    return _READY[data]


_READY = {s: m.ReadyForQuery(s) for s in (b"I", b"T", b"E")}
_FIELD = struct.Struct("!IhIhih")


def _d_row_description(data: bytes) -> m.RowDescription:
    c = _Cursor(data, "RowDescription")
    n = c.count()
    fields = []
    for _ in range(n):
        name = c.cstring()
        table_oid, attnum, type_oid, type_len, type_mod, fmt = _FIELD.unpack_from(data, c._need(18))
        fields.append(m.FieldDescription(name, table_oid, attnum, type_oid, type_len, type_mod, fmt))
    c.done()
    return m.RowDescription(tuple(fields))


def _d_data_row(data: bytes) -> m.DataRow:
    if len(data) < 2:
        raise ProtocolViolation("truncated", "DataRow: no column count")
    return m.DataRow(data)


def _d_command_complete(data: bytes) -> m.CommandComplete:
    c = _Cursor(data, "CommandComplete")
    tag = c.cstring()
    c.done()
    return m.CommandComplete(tag)


def _diag(cls: type, name: str) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        c = _Cursor(data, name)
        fields: dict[str, str] = {}
        while True:
            code = c.byte()
            if code == 0:
                break
            key = chr(code)
            if key in fields:
                raise ProtocolViolation("duplicate_field", f"{name}: field {key!r} given twice")
            fields[key] = c.cstring()
        c.done()
        return cls(fields)

    return decode


def _d_param_description(data: bytes) -> m.ParameterDescription:
    c = _Cursor(data, "ParameterDescription")
    n = c.uint16()  # PostgreSQL allows up to 65535 parameters here
    oids = struct.unpack_from(f"!{n}I", data, c._need(4 * n))
    c.done()
    return m.ParameterDescription(oids)


def _copy_response(cls: type, name: str) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        c = _Cursor(data, name)
        fmt = c.byte()
        if fmt not in (0, 1):
            raise ProtocolViolation("bad_value", f"{name}: overall format {fmt}")
        cols = c.int16s()
        c.done()
        return cls(fmt, cols)

    return decode


def _d_negotiate(data: bytes) -> m.NegotiateProtocolVersion:
    c = _Cursor(data, "NegotiateProtocolVersion")
    version = c.uint32()
    n = c.int32()
    if n < 0:
        raise ProtocolViolation("negative_count", "NegotiateProtocolVersion: negative option count")
    names = []
    for _ in range(n):
        names.append(c.cstring())
    c.done()
    return m.NegotiateProtocolVersion(version & 0xFFFF, tuple(names), version >> 16)


def _d_notification(data: bytes) -> m.NotificationResponse:
    c = _Cursor(data, "NotificationResponse")
    pid = c.int32()
    channel = c.cstring()
    payload = c.cstring()
    c.done()
    return m.NotificationResponse(pid, channel, payload)


def _d_function_result(data: bytes) -> m.FunctionCallResponse:
    c = _Cursor(data, "FunctionCallResponse")
    value = c.value()
    c.done()
    return m.FunctionCallResponse(value)


_BACKEND_DECODERS: dict[int, Callable[[bytes], object]] = {
    ord("R"): _d_auth,
    ord("S"): _d_param_status,
    ord("K"): _d_key_data,
    ord("Z"): _d_ready,
    ord("T"): _d_row_description,
    ord("D"): _d_data_row,
    ord("C"): _d_command_complete,
    ord("I"): _empty(m.EmptyQueryResponse),
    ord("E"): _diag(m.ErrorResponse, "ErrorResponse"),
    ord("N"): _diag(m.NoticeResponse, "NoticeResponse"),
    ord("1"): _empty(m.ParseComplete),
    ord("2"): _empty(m.BindComplete),
    ord("3"): _empty(m.CloseComplete),
    ord("n"): _empty(m.NoData),
    ord("s"): _empty(m.PortalSuspended),
    ord("t"): _d_param_description,
    ord("G"): _copy_response(m.CopyInResponse, "CopyInResponse"),
    ord("H"): _copy_response(m.CopyOutResponse, "CopyOutResponse"),
    ord("W"): _copy_response(m.CopyBothResponse, "CopyBothResponse"),
    ord("v"): _d_negotiate,
    ord("A"): _d_notification,
    ord("V"): _d_function_result,
    ord("d"): m.CopyData,
    ord("c"): _empty(m.CopyDone),
}

BACKEND_TYPES = frozenset(_BACKEND_DECODERS)
"""Type bytes a server may send."""


def decode_backend(kind: int, payload: bytes | bytearray | memoryview) -> m.BackendMessage:
    """Decode one server message. A DataRow is only checked for its column count; its values are read
    by :meth:`~pgwarden.wire_proxy.messages.DataRow.values` when someone needs them."""
    decoder = _BACKEND_DECODERS.get(kind)
    if decoder is None:
        raise ProtocolViolation("unknown_type", f"invalid backend message type {_show_type(kind)}")
    return decoder(bytes(payload))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# start-up packets


def decode_startup(payload: bytes | bytearray | memoryview) -> m.StartupPacket:
    """Decode a start-up packet body (what follows its Int32 length)."""
    data = bytes(payload)
    c = _Cursor(data, "startup packet")
    code = c.uint32()
    if code == SSL_REQUEST_CODE:
        c.done()
        return m.SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        c.done()
        return m.GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = c.int32()
        key = c.rest()
        if not 4 <= len(key) <= 256:
            raise ProtocolViolation("bad_length", f"CancelRequest: a {len(key)}-byte key (4 to 256 allowed)")
        return m.CancelRequest(pid, key)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise UnsupportedProtocol(major, minor)
    params: dict[str, str] = {}
    while True:
        if c.pos == len(data):
            raise ProtocolViolation("missing_nul", "invalid startup packet layout: expected terminator as last byte")
        name = c.cstring()
        if not name:
            break
        value = c.cstring()
        if name in params:
            # A filter that checks the first and a server that applies the last is a bypass: refuse.
            raise ProtocolViolation("duplicate_parameter", f"startup parameter {name!r} given twice")
        params[name] = value
    c.done()
    return m.StartupMessage(params, major, minor)


# --------------------------------------------------------------------------------------------------
# encoders


def _cstr(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    if b"\0" in b:
        raise ValueError(f"a protocol string cannot contain NUL: {s!r}")
    return b + b"\0"


def _count(n: int) -> bytes:
    if not 0 <= n <= 0x7FFF:
        raise ValueError(f"count {n} does not fit an Int16")
    return _I16.pack(n)


def _int16s(values: Sequence[int]) -> bytes:
    return _count(len(values)) + struct.pack(f"!{len(values)}h", *values)


def _values(values: Sequence[bytes | None]) -> bytes:
    parts = [_count(len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I32.pack(len(v)))
            parts.append(bytes(v))
    return b"".join(parts)


def _frame(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body) + 4) + body


def _startup_frame(body: bytes) -> bytes:
    return _U32.pack(len(body) + 4) + body


def _sp(kind: str) -> bytes:
    if kind not in ("S", "P"):
        raise ValueError(f"kind must be 'S' or 'P', not {kind!r}")
    return kind.encode()


def _diag_body(msg: m.ErrorResponse | m.NoticeResponse) -> bytes:
    parts = []
    for code, value in msg.fields.items():
        if len(code) != 1 or not 0 < ord(code) < 256:
            raise ValueError(f"a diagnostic field code is one non-NUL byte, not {code!r}")
        parts.append(bytes([ord(code)]) + _cstr(value))
    parts.append(b"\0")
    return b"".join(parts)


def _copy_body(msg: m.CopyInResponse | m.CopyOutResponse | m.CopyBothResponse) -> bytes:
    return bytes([msg.format]) + _int16s(msg.column_formats)


def _e_startup(msg: m.StartupMessage) -> bytes:
    parts = [_U32.pack((msg.major << 16) | msg.minor)]
    for name, value in msg.params.items():
        if not name:
            raise ValueError("a startup parameter needs a name")
        parts.append(_cstr(name) + _cstr(value))
    parts.append(b"\0")
    return _startup_frame(b"".join(parts))


def _e_cancel(msg: m.CancelRequest) -> bytes:
    if not 4 <= len(msg.key) <= 256:
        raise ValueError("a cancel key is 4 to 256 bytes")
    return _startup_frame(_U32.pack(CANCEL_REQUEST_CODE) + _I32.pack(msg.pid) + msg.key)


def _e_sasl_initial(msg: m.SASLInitialResponse) -> bytes:
    data = b"\xff\xff\xff\xff" if msg.data is None else _I32.pack(len(msg.data)) + msg.data
    return _frame(msg.TYPE, _cstr(msg.mechanism) + data)


def _e_auth(code: int, body: bytes = b"") -> bytes:
    return _frame(0x52, _I32.pack(code) + body)


def _e_key(msg: m.BackendKeyData) -> bytes:
    if not 4 <= len(msg.key) <= 256:
        raise ValueError("a cancel key is 4 to 256 bytes")
    return _frame(msg.TYPE, _I32.pack(msg.pid) + msg.key)


def _e_ready(msg: m.ReadyForQuery) -> bytes:
    if msg.status not in (b"I", b"T", b"E"):
        raise ValueError(f"ReadyForQuery status must be b'I', b'T' or b'E', not {msg.status!r}")
    return _frame(msg.TYPE, msg.status)


def _e_row_description(msg: m.RowDescription) -> bytes:
    parts = [_count(len(msg.fields))]
    for f in msg.fields:
        parts.append(_cstr(f.name))
        parts.append(_FIELD.pack(f.table_oid, f.attnum, f.type_oid, f.type_len, f.type_mod, f.format))
    return _frame(msg.TYPE, b"".join(parts))


def _e_param_description(msg: m.ParameterDescription) -> bytes:
    n = len(msg.type_oids)
    if n > 0xFFFF:
        raise ValueError("at most 65535 parameters")
    return _frame(msg.TYPE, _U16.pack(n) + struct.pack(f"!{n}I", *msg.type_oids))


def _e_negotiate(msg: m.NegotiateProtocolVersion) -> bytes:
    if not (0 <= msg.major <= 0xFFFF and 0 <= msg.newest_minor <= 0xFFFF):
        raise ValueError("protocol major and minor are 16-bit numbers")
    body = _U32.pack(msg.major << 16 | msg.newest_minor) + _I32.pack(len(msg.unrecognised))
    return _frame(msg.TYPE, body + b"".join(_cstr(n) for n in msg.unrecognised))


def _e_function_result(msg: m.FunctionCallResponse) -> bytes:
    v = msg.result
    body = b"\xff\xff\xff\xff" if v is None else _I32.pack(len(v)) + v
    return _frame(msg.TYPE, body)


def _fixed(data: bytes) -> Callable[[object], bytes]:
    return lambda _msg: data


_ENCODERS: dict[type, Callable] = {
    # start-up packets
    m.StartupMessage: _e_startup,
    m.SSLRequest: _fixed(_startup_frame(_U32.pack(SSL_REQUEST_CODE))),
    m.GSSENCRequest: _fixed(_startup_frame(_U32.pack(GSSENC_REQUEST_CODE))),
    m.CancelRequest: _e_cancel,
    # frontend
    m.PasswordMessage: lambda msg: _frame(msg.TYPE, bytes(msg.data)),
    m.SASLInitialResponse: _e_sasl_initial,
    m.SASLResponse: lambda msg: _frame(msg.TYPE, bytes(msg.data)),
    m.Query: lambda msg: _frame(msg.TYPE, _cstr(msg.sql)),
    m.Parse: lambda msg: _frame(
        msg.TYPE,
        _cstr(msg.name) + _cstr(msg.query) + _count(len(msg.param_types))
        + struct.pack(f"!{len(msg.param_types)}I", *msg.param_types),
    ),
    m.Bind: lambda msg: _frame(
        msg.TYPE,
        _cstr(msg.portal) + _cstr(msg.statement) + _int16s(msg.param_formats) + _values(msg.params)
        + _int16s(msg.result_formats),
    ),
    m.Describe: lambda msg: _frame(msg.TYPE, _sp(msg.kind) + _cstr(msg.name)),
    m.Execute: lambda msg: _frame(msg.TYPE, _cstr(msg.portal) + _I32.pack(msg.max_rows)),
    m.Close: lambda msg: _frame(msg.TYPE, _sp(msg.kind) + _cstr(msg.name)),
    m.Sync: _fixed(_frame(ord("S"), b"")),
    m.Flush: _fixed(_frame(ord("H"), b"")),
    m.Terminate: _fixed(_frame(ord("X"), b"")),
    m.CopyData: lambda msg: _frame(msg.TYPE, bytes(msg.data)),
    m.CopyDone: _fixed(_frame(ord("c"), b"")),
    m.CopyFail: lambda msg: _frame(msg.TYPE, _cstr(msg.message)),
    m.FunctionCall: lambda msg: _frame(
        msg.TYPE, _U32.pack(msg.oid) + _int16s(msg.arg_formats) + _values(msg.args) + _I16.pack(msg.result_format)
    ),
    # backend
    m.AuthenticationOk: _fixed(_e_auth(0)),
    m.AuthenticationCleartextPassword: _fixed(_e_auth(3)),
    m.AuthenticationMD5Password: lambda msg: _e_auth(5, _md5_salt(msg.salt)),
    m.AuthenticationGSS: _fixed(_e_auth(7)),
    m.AuthenticationGSSContinue: lambda msg: _e_auth(8, bytes(msg.data)),
    m.AuthenticationSSPI: _fixed(_e_auth(9)),
    m.AuthenticationSASL: lambda msg: _e_auth(10, b"".join(_cstr(x) for x in msg.mechanisms) + b"\0"),
    m.AuthenticationSASLContinue: lambda msg: _e_auth(11, bytes(msg.data)),
    m.AuthenticationSASLFinal: lambda msg: _e_auth(12, bytes(msg.data)),
    m.ParameterStatus: lambda msg: _frame(msg.TYPE, _cstr(msg.name) + _cstr(msg.value)),
    m.BackendKeyData: _e_key,
    m.ReadyForQuery: _e_ready,
    m.RowDescription: _e_row_description,
    m.DataRow: lambda msg: _frame(msg.TYPE, bytes(msg.payload)),
    m.CommandComplete: lambda msg: _frame(msg.TYPE, _cstr(msg.tag)),
    m.EmptyQueryResponse: _fixed(_frame(ord("I"), b"")),
    m.ErrorResponse: lambda msg: _frame(msg.TYPE, _diag_body(msg)),
    m.NoticeResponse: lambda msg: _frame(msg.TYPE, _diag_body(msg)),
    m.ParseComplete: _fixed(_frame(ord("1"), b"")),
    m.BindComplete: _fixed(_frame(ord("2"), b"")),
    m.CloseComplete: _fixed(_frame(ord("3"), b"")),
    m.NoData: _fixed(_frame(ord("n"), b"")),
    m.PortalSuspended: _fixed(_frame(ord("s"), b"")),
    m.ParameterDescription: _e_param_description,
    m.CopyInResponse: lambda msg: _frame(msg.TYPE, _copy_body(msg)),
    m.CopyOutResponse: lambda msg: _frame(msg.TYPE, _copy_body(msg)),
    m.CopyBothResponse: lambda msg: _frame(msg.TYPE, _copy_body(msg)),
    m.NegotiateProtocolVersion: _e_negotiate,
    m.NotificationResponse: lambda msg: _frame(
        msg.TYPE, _I32.pack(msg.pid) + _cstr(msg.channel) + _cstr(msg.payload)
    ),
    m.FunctionCallResponse: _e_function_result,
}


def _md5_salt(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise ValueError("an MD5 salt is 4 bytes")
    return bytes(salt)


def encode(msg: object) -> bytes:
    """The wire bytes of any message of :mod:`pgwarden.wire_proxy.messages` (start-up packets with their
    length word, other messages with type byte and length)."""
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        if isinstance(msg, m.DirectTLS):
            raise ValueError("DirectTLS marks a TLS handshake; it has no PostgreSQL encoding")
        raise TypeError(f"not a protocol message: {msg!r}")
    try:
        return encoder(msg)
    except struct.error as exc:
        raise ValueError(f"{type(msg).__name__}: a value does not fit its field ({exc})") from None
