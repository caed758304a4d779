"""The compiled relay scanner (wire_proxy/_scan.pyx) gives exactly what the pure-Python one gives.

``make`` builds it when Cython and a C compiler are at hand (scripts/build_scanner.py); the proxy uses it
then, and ``scan_pure`` otherwise or under PGWARDEN_PURE_SCANNER=1. Both read one buffer of messages into
(type, start, end) spans and raise the same errors on a bad length header, so the tests here hold them to
each other on valid streams, on random bytes, at every cut, and on bad headers.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.wire_proxy import codec
from pgwarden.wire_proxy.errors import MessageTooLarge, ProtocolViolation

compiled = pytest.importorskip("pgwarden.wire_proxy._scan", reason="the compiled scanner is not built here")


def _compiled(buf, start=0, end=None, max_message_size=codec.DEFAULT_MAX_MESSAGE_SIZE):
    return compiled.scan(buf, start, end, max_message_size, codec._bad_length)


def _outcome(fn, *args, **kw):
    try:
        return ("ok", fn(*args, **kw))
    except (ProtocolViolation, MessageTooLarge) as exc:
        return ("error", type(exc).__name__, getattr(exc, "code", None), str(exc))


_message = st.builds(lambda kind, body: bytes([kind]) + struct.pack("!I", len(body) + 4) + body,
                     st.integers(0, 255), st.binary(max_size=40))


@settings(max_examples=1000)
@given(st.lists(_message, max_size=12).map(b"".join), st.binary(max_size=6), st.integers(0, 60), st.data())
def test_both_scanners_agree_on_streams_cut_anywhere(stream: bytes, tail: bytes, cap_extra: int, data) -> None:
    buf = bytearray(stream + tail)
    start = data.draw(st.integers(0, len(buf)))
    end = data.draw(st.integers(start, len(buf)))
    cap = 4 + cap_extra
    for args in ((buf,), (buf, start), (buf, start, end), (memoryview(buf), start, end), (bytes(buf), 0, None)):
        assert _outcome(_compiled, *args) == _outcome(codec.scan_pure, *args)
        assert _outcome(_compiled, *args, max_message_size=cap) == _outcome(codec.scan_pure, *args,
                                                                                 max_message_size=cap)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_both_scanners_agree_on_random_bytes(buf: bytes) -> None:
    assert _outcome(_compiled, buf, max_message_size=1 << 10) == _outcome(codec.scan_pure, buf,
                                                                           max_message_size=1 << 10)


def test_bad_headers_raise_the_same_errors() -> None:
    for buf in (b"S\x00\x00\x00\x03", b"D\x00\x01\x00\x00", b"D\xff\xff\xff\xff", b"Z\x00\x00\x00\x00"):
        assert _outcome(_compiled, buf, max_message_size=1000) == _outcome(codec.scan_pure, buf,
                                                                            max_message_size=1000)
        assert _outcome(_compiled, buf, max_message_size=1000)[0] == "error"
    with pytest.raises(ValueError):
        _compiled(b"S\x00\x00\x00\x04", 0, 9)  # a range past the buffer is refused, never read


def test_the_proxy_uses_the_compiled_scanner_when_it_is_built() -> None:
    assert codec.SCANNER == "compiled" and codec.scan is not codec.scan_pure
