"""The codec: every message round-trips, hand-made captures decode as the protocol documentation says,
and every kind of malformed input is a ProtocolViolation."""

from __future__ import annotations

import struct

import pytest

from pgwarden import errors as base_errors
from pgwarden.wire_proxy import codec
from pgwarden.wire_proxy import messages as m
from pgwarden.wire_proxy.errors import MessageTooLarge, ProtocolViolation, UnsupportedProtocol


def frame(kind: str, body: bytes) -> bytes:
    return kind.encode() + struct.pack("!I", len(body) + 4) + body


def split(data: bytes) -> tuple[int, bytes]:
    """One encoded normal-phase message -> (type, payload), checking the length word."""
    (length,) = struct.unpack_from("!I", data, 1)
    assert length == len(data) - 1
    return data[0], data[5:]


FRONTEND = [
    m.PasswordMessage(b"secret\0"),
    m.Query("SELECT 1"),
    m.Query(""),
    m.Parse("s1", "SELECT $1::int, $2", (23, 0)),
    m.Parse("", "SELECT 1"),
    m.Bind("p1", "s1", (1,), (b"\x00\x00\x00\x2a", None, b""), (0, 1)),
    m.Bind("", "", (), (), ()),
    m.Describe("S", "s1"),
    m.Describe("P", ""),
    m.Execute("p1", 100),
    m.Execute(),
    m.Close("S", "s1"),
    m.Close("P", "p1"),
    m.Sync(),
    m.Flush(),
    m.Terminate(),
    m.CopyData(b"1\tone\n"),
    m.CopyDone(),
    m.CopyFail("client gave up"),
    m.FunctionCall(1598, (0,), (b"abc", None), 1),
    m.Query("SELECT 'caf\u00e9'"),
]

BACKEND = [
    m.AuthenticationOk(),
    m.AuthenticationCleartextPassword(),
    m.AuthenticationMD5Password(b"\x01\x02\x03\x04"),
    m.AuthenticationGSS(),
    m.AuthenticationGSSContinue(b"token"),
    m.AuthenticationSSPI(),
    m.AuthenticationSASL(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
    m.AuthenticationSASLContinue(b"r=abc,s=xyz,i=4096"),
    m.AuthenticationSASLFinal(b"v=sig"),
    m.ParameterStatus("server_version", "18.1"),
    m.BackendKeyData(4242, b"\x00\x01\x02\x03"),
    m.BackendKeyData(4242, bytes(range(32))),
    m.ReadyForQuery(b"I"),
    m.ReadyForQuery(b"T"),
    m.ReadyForQuery(b"E"),
    m.RowDescription((m.FieldDescription("id", 16384, 1, 23, 4, -1, 0), m.FieldDescription("?column?"))),
    m.RowDescription(()),
    m.DataRow.from_values((b"1", None, b"")),
    m.DataRow.from_values(()),
    m.CommandComplete("SELECT 3"),
    m.EmptyQueryResponse(),
    m.error("ERROR", "42501", "permission denied", detail="d", hint="h"),
    m.notice("NOTICE", "00000", "waiting for approval"),
    m.ParseComplete(),
    m.BindComplete(),
    m.CloseComplete(),
    m.NoData(),
    m.PortalSuspended(),
    m.ParameterDescription((23, 25, 4294967295)),
    m.CopyInResponse(0, (0, 0)),
    m.CopyOutResponse(1, (1,)),
    m.CopyBothResponse(0, ()),
    m.NegotiateProtocolVersion(2, ("_pq_.test_protocol_negotiation",)),
    m.NegotiateProtocolVersion(0),
    m.NotificationResponse(77, "jobs", "payload"),
    m.FunctionCallResponse(b"\x00\x01"),
    m.FunctionCallResponse(None),
    m.CopyData(b"row\n"),
    m.CopyDone(),
]

STARTUP = [
    m.StartupMessage({"user": "alice", "database": "app", "application_name": "psql"}, 3, 0),
    m.StartupMessage({"user": "bob"}, 3, 2),
    m.SSLRequest(),
    m.GSSENCRequest(),
    m.CancelRequest(1234, b"\x01\x02\x03\x04"),
    m.CancelRequest(1234, bytes(32)),
    m.CancelRequest(1234, bytes(256)),
]


@pytest.mark.parametrize("msg", FRONTEND, ids=lambda x: type(x).__name__)
def test_frontend_round_trip(msg):
    kind, payload = split(codec.encode(msg))
    assert kind == msg.TYPE
    assert codec.decode_frontend(kind, payload) == msg


@pytest.mark.parametrize("msg", BACKEND, ids=lambda x: type(x).__name__)
def test_backend_round_trip(msg):
    kind, payload = split(codec.encode(msg))
    assert kind == msg.TYPE
    assert codec.decode_backend(kind, payload) == msg


@pytest.mark.parametrize("msg", STARTUP, ids=lambda x: type(x).__name__)
def test_startup_round_trip(msg):
    data = codec.encode(msg)
    assert struct.unpack_from("!I", data)[0] == len(data)
    assert codec.decode_startup(data[4:]) == msg


def test_sasl_messages_encode_as_password_messages_and_read_back():
    initial = m.SASLInitialResponse("SCRAM-SHA-256", b"n,,n=,r=abc")
    kind, payload = split(codec.encode(initial))
    decoded = codec.decode_frontend(kind, payload)
    assert decoded == m.PasswordMessage(b"SCRAM-SHA-256\0\x00\x00\x00\x0bn,,n=,r=abc")
    assert decoded.sasl_initial() == initial
    none = m.SASLInitialResponse("SCRAM-SHA-256", None)
    assert codec.decode_frontend(*split(codec.encode(none))).sasl_initial() == none
    resp = m.SASLResponse(b"c=biws,r=abc,p=xyz")
    assert codec.decode_frontend(*split(codec.encode(resp))).sasl_response() == resp
    assert m.PasswordMessage(b"md5abcdef\0").password() == "md5abcdef"


# ---- captures built by hand from the "Message Formats" page -----------------------------------


def test_capture_startup_3_0():
    body = b"\x00\x03\x00\x00user\0postgres\0database\0bench\0\0"
    data = struct.pack("!I", len(body) + 4) + body
    assert codec.decode_startup(data[4:]) == m.StartupMessage({"user": "postgres", "database": "bench"}, 3, 0)
    assert codec.encode(m.StartupMessage({"user": "postgres", "database": "bench"})) == data


def test_capture_ssl_request_and_cancel():
    assert codec.encode(m.SSLRequest()) == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert codec.encode(m.GSSENCRequest()) == b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    cancel = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x10\x92\xde\xad\xbe\xef"
    assert codec.decode_startup(cancel[4:]) == m.CancelRequest(4242, b"\xde\xad\xbe\xef")


def test_capture_simple_query_reply():
    # SELECT 1 as psql sees it: RowDescription, DataRow, CommandComplete, ReadyForQuery
    row_desc = frame("T", b"\x00\x01?column?\0" + struct.pack("!IhIhih", 0, 0, 23, 4, -1, 0))
    data_row = frame("D", b"\x00\x01\x00\x00\x00\x011")
    done = frame("C", b"SELECT 1\0")
    ready = frame("Z", b"I")
    r = codec.FrameReader()
    r.feed(row_desc + data_row + done + ready)
    msgs = [codec.decode_backend(f.type, f.payload) for f in r]
    assert msgs == [
        m.RowDescription((m.FieldDescription("?column?", 0, 0, 23, 4, -1, 0),)),
        m.DataRow(b"\x00\x01\x00\x00\x00\x011"),
        m.CommandComplete("SELECT 1"),
        m.ReadyForQuery(b"I"),
    ]
    assert msgs[1].values() == (b"1",)
    assert msgs[1].column_count == 1


def test_capture_error_response_fields_and_helpers():
    body = b"SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0Fparse_relation.c\0L1449\0\0"
    err = codec.decode_backend(ord("E"), body)
    assert isinstance(err, m.ErrorResponse)
    assert (err.severity, err.sqlstate, err.message) == ("ERROR", "42P01", 'relation "nope" does not exist')
    assert err.detail is None and err.hint is None
    assert err.fields["P"] == "15"
    assert codec.encode(err) == frame("E", body)


def test_capture_bind_with_null_and_binary_param():
    body = b"\0stmt\0\x00\x02\x00\x01\x00\x00\x00\x02\x00\x00\x00\x04\x00\x00\x00\x07\xff\xff\xff\xff\x00\x00"
    assert codec.decode_frontend(ord("B"), body) == m.Bind("", "stmt", (1, 0), (b"\x00\x00\x00\x07", None), ())


def test_capture_negotiate_protocol_version_is_a_whole_version_code():
    # PostgreSQL sends FrontendProtocol (3 << 16 | 2) in the Int32 the documentation calls the minor
    body = b"\x00\x03\x00\x02\x00\x00\x00\x01_pq_.test_protocol_negotiation\0"
    msg = codec.decode_backend(ord("v"), body)
    assert msg == m.NegotiateProtocolVersion(2, ("_pq_.test_protocol_negotiation",), 3)
    assert codec.encode(msg) == frame("v", body)


def test_error_constructor_and_error_from():
    err = m.error("FATAL", "08P01", "bad")
    assert err.fields == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "bad"}
    with pytest.raises(ValueError):
        m.error("ERROR", "4250", "short sqlstate")
    exc = ProtocolViolation("truncated", "Query: message ends early")
    out = m.error_from(exc, "FATAL")
    assert out.sqlstate == "08P01" and out.severity == "FATAL" and out.message == "Query: message ends early"
    assert out.hint


def test_errors_are_pgwarden_protocol_violations():
    assert issubclass(ProtocolViolation, base_errors.ProtocolViolation)
    assert issubclass(MessageTooLarge, ProtocolViolation)
    assert ProtocolViolation("x", "y").sqlstate == "08P01"
    assert UnsupportedProtocol(2, 0).sqlstate == "0A000"


def test_invalid_utf8_survives_a_round_trip():
    body = b"SELECT '\xff\xfe'\0"
    q = codec.decode_frontend(ord("Q"), body)
    assert codec.encode(q) == frame("Q", body)


# ---- malformed input ------------------------------------------------------------------------------

MALFORMED_FRONTEND = [
    ("Q", b"SELECT 1", "missing_nul"),
    ("Q", b"SELECT 1\0extra", "trailing_bytes"),
    ("P", b"s1\0SELECT 1\0\xff\xff", "negative_count"),
    ("P", b"s1\0SELECT 1\0\x00\x02\x00\x00\x00\x17", "truncated"),
    ("P", b"s1\0", "missing_nul"),
    ("B", b"\0s\0\x00\x00\x00\x01\x00\x00\x00\x10ab\x00\x00", "truncated"),
    ("B", b"\0s\0\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00", "bad_length"),
    ("B", b"\0s\0\x00\x02\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00",
     "bad_count"),
    ("B", b"\0s\0\x80\x00", "negative_count"),
    ("D", b"X\0", "bad_value"),
    ("D", b"S", "missing_nul"),
    ("D", b"", "truncated"),
    ("C", b"Pname", "missing_nul"),
    ("E", b"\0\x00\x00", "truncated"),
    ("S", b"\0", "trailing_bytes"),
    ("H", b"x", "trailing_bytes"),
    ("X", b"xx", "trailing_bytes"),
    ("f", b"oops", "missing_nul"),
    ("F", b"\x00\x00\x06\x3e\x00\x00\x00\x01\x00\x00\x00\x05ab", "truncated"),
    ("Z", b"", "unknown_type"),  # ReadyForQuery is a backend message
    ("\x00", b"", "unknown_type"),
]


@pytest.mark.parametrize(("kind", "body", "code"), MALFORMED_FRONTEND)
def test_malformed_frontend(kind, body, code):
    with pytest.raises(ProtocolViolation) as info:
        codec.decode_frontend(ord(kind), body)
    assert info.value.code == code
    assert info.value.sqlstate == "08P01"


MALFORMED_BACKEND = [
    ("R", b"\x00\x00", "truncated"),
    ("R", b"\x00\x00\x00\x05\x01\x02", "truncated"),
    ("R", b"\x00\x00\x00\x00\x00", "trailing_bytes"),
    ("R", b"\x00\x00\x00\x63", "bad_value"),
    ("R", b"\x00\x00\x00\x0aSCRAM-SHA-256\0", "missing_nul"),
    ("R", b"\x00\x00\x00\x0a\0", "bad_value"),
    ("S", b"name\0value", "missing_nul"),
    ("K", b"\x00\x00\x00\x01\x02", "bad_length"),
    ("K", b"\x00\x00\x00\x01" + bytes(257), "bad_length"),
    ("Z", b"X", "bad_value"),
    ("Z", b"II", "bad_value"),
    ("T", b"\xff\xff", "negative_count"),
    ("T", b"\x00\x01id\0\x00\x00", "truncated"),
    ("T", b"\x00\x00x", "trailing_bytes"),
    ("D", b"\x00", "truncated"),
    ("C", b"SELECT 1", "missing_nul"),
    ("I", b"\0", "trailing_bytes"),
    ("E", b"SERROR\0", "truncated"),
    ("E", b"SERROR", "missing_nul"),
    ("t", b"\x00\x02\x00\x00\x00\x17", "truncated"),
    ("G", b"\x02\x00\x00", "bad_value"),
    ("H", b"\x00\xff\xfe", "negative_count"),
    ("v", b"\x00\x03\x00\x02\xff\xff\xff\xff", "negative_count"),
    ("v", b"\x00\x03\x00\x02\x00\x00\x00\x02a\0", "missing_nul"),
    ("A", b"\x00\x00\x00\x01chan\0", "missing_nul"),
    ("V", b"\x00\x00\x00\x05ab", "truncated"),
    ("V", b"\xff\xff\xff\xf0", "bad_length"),
    ("Q", b"", "unknown_type"),  # Query is a frontend message
]


@pytest.mark.parametrize(("kind", "body", "code"), MALFORMED_BACKEND)
def test_malformed_backend(kind, body, code):
    with pytest.raises(ProtocolViolation) as info:
        codec.decode_backend(ord(kind), body)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00\x03", "truncated"),
        (b"\x00\x03\x00\x00", "missing_nul"),  # no terminator
        (b"\x00\x03\x00\x00user\0", "missing_nul"),  # name without value
        (b"\x00\x03\x00\x00user\0bob\0\0x", "trailing_bytes"),
        (b"\x00\x03\x00\x00user\0a\0user\0b\0\0", "duplicate_parameter"),
        (b"\x04\xd2\x16\x2fx", "trailing_bytes"),  # SSLRequest with a body
        (b"\x04\xd2\x16\x2e\x00\x00\x00\x01\x01\x02", "bad_length"),  # 2-byte cancel key
        (b"\x04\xd2\x16\x2e\x00\x00\x00\x01" + bytes(257), "bad_length"),
        (b"\x00\x02\x00\x00user\0a\0\0", "unsupported_protocol"),
        (b"\x04\xd2\x16\x31", "unsupported_protocol"),  # 1234.5681: no such request code
    ],
)
def test_malformed_startup(payload, code):
    with pytest.raises(ProtocolViolation) as info:
        codec.decode_startup(payload)
    assert info.value.code == code


def test_data_row_values_are_checked_when_read():
    for payload, code in [
        (b"\xff\xff", "negative_count"),
        (b"\x00\x01\x00\x00", "truncated"),
        (b"\x00\x01\x00\x00\x00\x05ab", "truncated"),
        (b"\x00\x01\xff\xff\xff\xfe", "bad_length"),
        (b"\x00\x01\x00\x00\x00\x01ab", "trailing_bytes"),
    ]:
        row = codec.decode_backend(ord("D"), payload)  # lazy: decoding the message does not read values
        with pytest.raises(ProtocolViolation) as info:
            row.values()
        assert info.value.code == code


def test_password_readers_refuse_malformed_payloads():
    for call in (
        lambda: m.PasswordMessage(b"abc").password(),
        lambda: m.PasswordMessage(b"a\0b\0").password(),
        lambda: m.PasswordMessage(b"SCRAM").sasl_initial(),
        lambda: m.PasswordMessage(b"SCRAM\0\x00\x00").sasl_initial(),
        lambda: m.PasswordMessage(b"SCRAM\0\x00\x00\x00\x05ab").sasl_initial(),
        lambda: m.PasswordMessage(b"SCRAM\0\xff\xff\xff\xffab").sasl_initial(),
    ):
        with pytest.raises(ProtocolViolation):
            call()


@pytest.mark.parametrize(
    "msg",
    [
        m.Query("a\0b"),
        m.ReadyForQuery(b"X"),
        m.Describe("X", ""),
        m.BackendKeyData(1, b"\x01"),
        m.AuthenticationMD5Password(b"\x01"),
        m.Execute("", 2**31),
        m.Parse("", "", (-1,)),
        m.Bind("", "", (), (b"",) * 40000, ()),
        m.ErrorResponse({"SS": "x"}),
    ],
    ids=lambda x: type(x).__name__,
)
def test_encoding_values_the_protocol_cannot_carry_is_a_value_error(msg):
    with pytest.raises(ValueError):
        codec.encode(msg)


def test_encode_refuses_non_messages():
    with pytest.raises(TypeError):
        codec.encode("SELECT 1")
    with pytest.raises(ValueError):
        codec.encode(m.DirectTLS())


# ---- frame readers --------------------------------------------------------------------------------


def test_frame_reader_byte_by_byte():
    stream = b"".join(codec.encode(x) for x in FRONTEND)
    r = codec.FrameReader()
    out = []
    for i in range(len(stream)):
        r.feed(stream[i : i + 1])
        out.extend(r)
    assert [codec.decode_frontend(f.type, f.payload) for f in out] == FRONTEND
    assert r.buffered == 0
    r.at_eof()


def test_frame_reader_refuses_oversized_length_before_the_body():
    r = codec.FrameReader(max_message_size=1024)
    with pytest.raises(MessageTooLarge) as info:
        r.feed(b"D\x00\x00\x04\x01")  # 1025 announced; nothing of the body sent yet
    assert (info.value.length, info.value.limit) == (1025, 1024)
    with pytest.raises(MessageTooLarge):
        r.feed(b"more")  # stays broken
    assert r.buffered == 0


def test_frame_reader_accepts_exactly_the_limit():
    r = codec.FrameReader(max_message_size=10)
    r.feed(b"d\x00\x00\x00\x0a123456")
    assert r.next_frame() == codec.Frame(ord("d"), b"123456")
    assert r.next_frame() is None


@pytest.mark.parametrize("length", [0, 1, 3])
def test_frame_reader_refuses_lengths_below_4(length):
    r = codec.FrameReader()
    with pytest.raises(ProtocolViolation) as info:
        r.feed(b"S" + struct.pack("!I", length))
    assert info.value.code == "bad_length"


def test_frame_reader_known_types():
    r = codec.FrameReader(known_types=codec.FRONTEND_TYPES)
    with pytest.raises(ProtocolViolation) as info:
        r.feed(b"Z")  # refused on its type byte alone
    assert info.value.code == "unknown_type"


def test_frame_reader_eof_mid_message():
    r = codec.FrameReader()
    r.feed(b"Q\x00\x00\x00\x09SEL")
    with pytest.raises(ProtocolViolation):
        r.at_eof()


def test_startup_reader_ssl_then_startup_and_leftover_check():
    r = codec.StartupReader()
    r.feed(codec.encode(m.SSLRequest())[:3])
    assert r.next_message() is None
    r.feed(codec.encode(m.SSLRequest())[3:] + b"\x00\x00")
    assert r.next_message() == m.SSLRequest()
    assert r.take_rest() == b"\x00\x00"  # bytes ahead of the TLS handshake: the server refuses them
    start = m.StartupMessage({"user": "u"}, 3, 2)
    r.feed(codec.encode(start))
    assert r.next_message() == start
    assert r.next_message() is None


def test_startup_reader_direct_tls_only_first():
    r = codec.StartupReader()
    r.feed(b"\x16\x03\x01\x02\x00")
    assert r.next_message() == m.DirectTLS()
    assert r.take_rest() == b"\x16\x03\x01\x02\x00"


@pytest.mark.parametrize(
    ("data", "exc"),
    [
        (b"\x00\x00\x00\x07", ProtocolViolation),  # below 8
        (b"\x00\x00\x27\x11", MessageTooLarge),  # 10001 > PostgreSQL's 10000
        (b"GET / HTTP/1.1\r\n", MessageTooLarge),
    ],
)
def test_startup_reader_length_checks(data, exc):
    r = codec.StartupReader()
    with pytest.raises(exc):
        r.feed(data)


def test_startup_reader_configurable_limit():
    r = codec.StartupReader(max_packet_size=64 * 1024 * 1024)
    r.feed(b"\x00\x00\x27\x11")
    assert r.next_message() is None


# ---- scanner --------------------------------------------------------------------------------------


def test_scan_finds_boundaries_without_copying():
    msgs = [codec.encode(x) for x in BACKEND]
    stream = bytearray(b"".join(msgs))
    partial = codec.encode(m.DataRow.from_values((b"x" * 50,)))[:20]
    stream += partial
    spans, consumed = codec.scan(stream)
    assert consumed == len(stream) - len(partial)
    assert [t for t, _, _ in spans] == [x.TYPE for x in BACKEND]
    view = memoryview(stream)
    for (kind, start, end), msg in zip(spans, BACKEND, strict=True):
        assert codec.decode_backend(kind, view[start + 5 : end]) == msg


def test_scan_with_offsets_and_errors():
    stream = codec.encode(m.Sync()) + codec.encode(m.Flush())
    assert codec.scan(stream, 5) == ([(ord("H"), 5, 10)], 5)
    assert codec.scan(stream, 0, 7) == ([(ord("S"), 0, 5)], 5)
    assert codec.scan(b"S\x00\x00") == ([], 0)
    with pytest.raises(ProtocolViolation):
        codec.scan(b"S\x00\x00\x00\x03")
    with pytest.raises(MessageTooLarge):
        codec.scan(b"D\x00\x01\x00\x00", max_message_size=1000)


# ---- the fast readers of Bind and Execute agree with the checked ones ------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _outcome(decode, data: bytes):
    try:
        return ("ok", decode(data))
    except ProtocolViolation as exc:
        return ("violation", exc.code, str(exc))


_VALUES = st.one_of(st.none(), st.binary(max_size=12))


@st.composite
def _bind_payloads(draw) -> bytes:
    n = draw(st.integers(0, 4))
    names = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=4)
    msg = m.Bind(draw(names), draw(names),
                 tuple(draw(st.lists(st.sampled_from([0, 1]), max_size=n + 1))),
                 tuple(draw(st.lists(_VALUES, min_size=n, max_size=n))),
                 tuple(draw(st.lists(st.sampled_from([0, 1, 7]), max_size=3))))
    data = codec.encode(msg)[5:]
    cut = draw(st.one_of(st.none(), st.integers(0, max(len(data), 1))))
    if cut is not None:  # truncated, or with bytes flipped: the readers must agree on those too
        data = data[:cut] + draw(st.binary(max_size=3))
    return data


@settings(max_examples=1500)
@given(st.one_of(_bind_payloads(), st.binary(max_size=40)))
def test_the_fast_bind_reader_agrees_with_the_checked_one(data: bytes) -> None:
    assert _outcome(codec._d_bind, data) == _outcome(codec._d_bind_checked, data)


@settings(max_examples=500)
@given(st.one_of(st.builds(lambda p, n: codec.encode(m.Execute(p, n))[5:],
                           st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=6),
                           st.integers(-2**31, 2**31 - 1)), st.binary(max_size=12)))
def test_the_fast_execute_reader_agrees_with_the_checked_one(data: bytes) -> None:
    assert _outcome(codec._d_execute, data) == _outcome(codec._d_execute_checked, data)


@settings(max_examples=500)
@given(st.one_of(st.builds(lambda k, n: codec.encode(m.Describe(k, n))[5:], st.sampled_from("SP"),
                           st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                                   max_size=6)), st.binary(max_size=8)))
def test_the_fast_describe_reader_agrees_with_the_checked_one(data: bytes) -> None:
    assert _outcome(codec._d_describe, data) == _outcome(codec._d_describe_checked, data)
