"""Properties of the codec under arbitrary input: nothing but ProtocolViolation ever escapes, readers never
hold more than the size cap, the relay scanner and FrameReader agree on every stream, and generated
messages round-trip. Optionally cross-checked against ``pygwire`` when it is importable (not a dependency)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.wire_proxy import codec
from pgwarden.wire_proxy import messages as m
from pgwarden.wire_proxy.errors import ProtocolViolation

CAP = 64
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chunked(draw, data_strategy=None):
    data = draw(data_strategy if data_strategy is not None else st.binary(max_size=600))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces, last = [], 0
    for c in cuts:
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    return data, pieces


def plausible_stream():
    """Bytes that look like frames often enough to get past the header checks."""
    frame = st.builds(
        lambda kind, body, fudge: bytes([kind]) + struct.pack("!I", max(0, len(body) + 4 + fudge)) + body,
        st.sampled_from(sorted(codec.BACKEND_TYPES | codec.FRONTEND_TYPES)),
        st.binary(max_size=40),
        st.sampled_from([0, 0, 0, 0, 1, -1, -5, 30, 10_000]),
    )
    return st.lists(frame, max_size=10).map(b"".join) | st.binary(max_size=300)


def frames_via_reader(pieces, cap):
    """(frames, error?) from FrameReader, fed the pieces; checks the buffering cap on the way."""
    r = codec.FrameReader(max_message_size=cap)
    out = []
    try:
        for p in pieces:
            r.feed(p)
            assert r.buffered <= cap + 1
            out.extend((f.type, f.payload) for f in r)
    except ProtocolViolation:
        return out, True
    return out, False


def frames_via_scan(pieces, cap):
    """(frames, error?) the way the relay uses scan: append, scan, forward consumed, keep the rest."""
    buf = bytearray()
    out = []
    try:
        for p in pieces:
            buf += p
            spans, consumed = codec.scan(buf, max_message_size=cap)
            view = memoryview(buf)
            out.extend((kind, bytes(view[start + 5 : end])) for kind, start, end in spans)
            view.release()
            del buf[:consumed]
    except ProtocolViolation:
        return out, True
    return out, False


@FUZZ
@given(chunked(plausible_stream()))
def test_frame_reader_only_raises_protocol_violation_and_respects_the_cap(case):
    _, pieces = case
    frames_via_reader(pieces, CAP)


@FUZZ
@given(chunked(plausible_stream()))
def test_scanner_and_frame_reader_agree(case):
    _, pieces = case
    assert frames_via_scan(pieces, CAP) == frames_via_reader(pieces, CAP)


@FUZZ
@given(chunked(plausible_stream()))
def test_every_frame_decodes_or_raises_protocol_violation(case):
    _, pieces = case
    frames, _ = frames_via_reader(pieces, 10_000)
    for kind, payload in frames:
        for decode in (codec.decode_frontend, codec.decode_backend):
            try:
                msg = decode(kind, payload)
            except ProtocolViolation:
                continue
            if isinstance(msg, m.DataRow):
                with contextlib.suppress(ProtocolViolation):
                    msg.values()
            if isinstance(msg, m.PasswordMessage):
                for read in (msg.password, msg.sasl_initial, msg.sasl_response):
                    with contextlib.suppress(ProtocolViolation):
                        read()


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=200))
def test_decoders_on_arbitrary_payloads(kind, payload):
    for decode in (codec.decode_frontend, codec.decode_backend):
        try:
            msg = decode(kind, payload)
        except ProtocolViolation:
            continue
        # what decodes re-encodes to the very same bytes (DataRow and raw payloads as received)
        assert codec.encode(msg)[5:] == payload


def startup_stream():
    body = st.one_of(
        st.binary(max_size=60),
        st.builds(lambda code, rest: struct.pack("!I", code) + rest,
                  st.sampled_from([80877102, 80877103, 80877104, 196608, 196610, 0x0003270F, 131072]),
                  st.binary(max_size=40)),
        st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4).map(
            lambda d: b"\x00\x03\x00\x00" + b"".join(
                k.encode("utf-8", "surrogatepass") + b"\0" + v.encode("utf-8", "surrogatepass") + b"\0"
                for k, v in d.items()
            ) + b"\0"
        ),
    )
    packet = st.builds(lambda b, fudge: struct.pack("!I", max(0, len(b) + 4 + fudge)) + b, body,
                       st.sampled_from([0, 0, 0, 1, -1, -9, 20_000]))
    return st.lists(packet, min_size=1, max_size=3).map(b"".join) | st.binary(max_size=100)


@FUZZ
@given(chunked(startup_stream()))
def test_startup_reader_only_raises_protocol_violation_and_respects_the_cap(case):
    _, pieces = case
    r = codec.StartupReader(max_packet_size=256)
    try:
        for p in pieces:
            r.feed(p)
            while True:
                msg = r.next_message()
                if msg is None:
                    break
                assert isinstance(msg, m.StartupMessage | m.SSLRequest | m.GSSENCRequest | m.CancelRequest
                                  | m.DirectTLS)
                if isinstance(msg, m.DirectTLS):
                    r.take_rest()
                    return
            assert r.buffered < 256
    except ProtocolViolation:
        pass


# ---- generated valid messages ------------------------------------------------------------------------

text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)
value = st.none() | st.binary(max_size=20)
fmt = st.sampled_from([0, 1])
oid = st.integers(0, 2**32 - 1)


def frontend_messages():
    return st.one_of(
        st.builds(m.Query, text),
        st.builds(m.Parse, text, text, st.lists(oid, max_size=5).map(tuple)),
        st.integers(0, 5).flatmap(
            lambda n: st.builds(
                m.Bind, text, text, st.sampled_from([(), (0,), (1,), tuple([1] * n)]),
                st.lists(value, min_size=n, max_size=n).map(tuple), st.lists(fmt, max_size=4).map(tuple),
            )
        ),
        st.builds(m.Describe, st.sampled_from("SP"), text),
        st.builds(m.Execute, text, st.integers(-(2**31), 2**31 - 1)),
        st.builds(m.Close, st.sampled_from("SP"), text),
        st.just(m.Sync()), st.just(m.Flush()), st.just(m.Terminate()), st.just(m.CopyDone()),
        st.builds(m.CopyData, st.binary(max_size=30)),
        st.builds(m.CopyFail, text),
        st.builds(m.PasswordMessage, st.binary(max_size=30)),
        st.integers(0, 3).flatmap(
            lambda n: st.builds(m.FunctionCall, oid, st.sampled_from([(), (0,), (1,)]),
                                st.lists(value, min_size=n, max_size=n).map(tuple), fmt)
        ),
    )


def backend_messages():
    field = st.builds(m.FieldDescription, text, oid, st.integers(-(2**15), 2**15 - 1), oid,
                      st.integers(-(2**15), 2**15 - 1), st.integers(-(2**31), 2**31 - 1), fmt)
    diag = st.dictionaries(st.sampled_from(list("SVCMDHPpqWstcdnFLR")), text, max_size=6)
    return st.one_of(
        st.builds(m.RowDescription, st.lists(field, max_size=4).map(tuple)),
        st.lists(value, max_size=6).map(m.DataRow.from_values),
        st.builds(m.CommandComplete, text),
        st.builds(m.ErrorResponse, diag),
        st.builds(m.NoticeResponse, diag),
        st.builds(m.ParameterStatus, text, text),
        st.builds(m.BackendKeyData, st.integers(-(2**31), 2**31 - 1), st.binary(min_size=4, max_size=256)),
        st.builds(m.ReadyForQuery, st.sampled_from([b"I", b"T", b"E"])),
        st.builds(m.ParameterDescription, st.lists(oid, max_size=5).map(tuple)),
        st.builds(m.CopyOutResponse, fmt, st.lists(fmt, max_size=4).map(tuple)),
        st.builds(m.NegotiateProtocolVersion, st.integers(0, 0xFFFF), st.lists(text, max_size=3).map(tuple)),
        st.builds(m.NotificationResponse, st.integers(-(2**31), 2**31 - 1), text, text),
        st.builds(m.FunctionCallResponse, value),
        st.builds(m.AuthenticationSASL, st.lists(text.filter(bool), min_size=1, max_size=3).map(tuple)),
        st.builds(m.AuthenticationSASLContinue, st.binary(max_size=30)),
        st.sampled_from([m.ParseComplete(), m.BindComplete(), m.CloseComplete(), m.NoData(),
                         m.PortalSuspended(), m.EmptyQueryResponse(), m.AuthenticationOk()]),
    )


@FUZZ
@given(st.lists(frontend_messages(), max_size=8), st.data())
def test_generated_frontend_streams_round_trip_in_any_chunking(msgs, data):
    stream = b"".join(codec.encode(x) for x in msgs)
    _, pieces = data.draw(chunked(st.just(stream)))
    frames, failed = frames_via_reader(pieces, codec.DEFAULT_MAX_MESSAGE_SIZE)
    assert not failed
    assert [codec.decode_frontend(k, p) for k, p in frames] == msgs
    assert frames_via_scan(pieces, codec.DEFAULT_MAX_MESSAGE_SIZE) == (frames, False)


@FUZZ
@given(st.lists(backend_messages(), max_size=8), st.data())
def test_generated_backend_streams_round_trip_in_any_chunking(msgs, data):
    stream = b"".join(codec.encode(x) for x in msgs)
    _, pieces = data.draw(chunked(st.just(stream)))
    frames, failed = frames_via_reader(pieces, codec.DEFAULT_MAX_MESSAGE_SIZE)
    assert not failed
    decoded = [codec.decode_backend(k, p) for k, p in frames]
    assert decoded == msgs
    for msg in decoded:
        if isinstance(msg, m.DataRow):
            assert m.DataRow.from_values(msg.values()) == msg


@FUZZ
@given(st.dictionaries(text.filter(bool), text, max_size=5), st.sampled_from([0, 2, 9999]))
def test_generated_startup_messages_round_trip(params, minor):
    msg = m.StartupMessage(params, 3, minor)
    r = codec.StartupReader(max_packet_size=codec.DEFAULT_MAX_MESSAGE_SIZE)
    r.feed(codec.encode(msg))
    assert r.next_message() == msg


# ---- cross-check against pygwire (optional) ------------------------------------------------------------


@FUZZ
@given(st.lists(backend_messages() | frontend_messages(), min_size=1, max_size=6))
def test_pygwire_reads_what_we_write(msgs):
    pygwire = pytest.importorskip("pygwire")
    backend = [x for x in msgs if type(x) in _PYGWIRE_BACKEND]
    frontend = [x for x in msgs if type(x) in _PYGWIRE_FRONTEND]
    for decoder_cls, chosen, table in (
        (pygwire.BackendMessageDecoder, backend, _PYGWIRE_BACKEND),
        (pygwire.FrontendMessageDecoder, frontend, _PYGWIRE_FRONTEND),
    ):
        d = decoder_cls()
        d.phase = pygwire.ConnectionPhase.READY
        d.feed(b"".join(codec.encode(x) for x in chosen))
        theirs = list(d)
        assert len(theirs) == len(chosen)
        for ours, other in zip(chosen, theirs, strict=True):
            assert table[type(ours)](ours) == table[type(ours)](other), (ours, other)


def _rowdesc(x):
    fields = x.fields
    return [(f.name, f.table_oid, getattr(f, "attnum", getattr(f, "column_attr", None)), f.type_oid,
             getattr(f, "type_len", getattr(f, "type_size", None)),
             getattr(f, "type_mod", getattr(f, "type_modifier", None)),
             getattr(f, "format", getattr(f, "format_code", None))) for f in fields]


_PYGWIRE_BACKEND = {
    m.RowDescription: _rowdesc,
    m.DataRow: lambda x: list(x.values()) if isinstance(x, m.DataRow) else list(x.columns),
    m.CommandComplete: lambda x: x.tag,
    m.ErrorResponse: lambda x: dict(x.fields),
    m.ReadyForQuery: lambda x: x.status if isinstance(x.status, bytes) else x.status.value.encode(),
}
_PYGWIRE_FRONTEND = {
    m.Query: lambda x: x.sql if isinstance(x, m.Query) else x.query_string,
    m.Parse: lambda x: (
        (x.name, x.query, list(x.param_types)) if isinstance(x, m.Parse)
        else (x.statement, x.query, list(x.param_types))
    ),
    m.Bind: lambda x: (
        x.portal, x.statement, list(x.param_formats),
        list(x.params if isinstance(x, m.Bind) else x.param_values), list(x.result_formats),
    ),
}
