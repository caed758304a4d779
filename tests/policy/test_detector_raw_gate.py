"""The detectors' raw gate: a bytes pattern that misses only where no finding can be.

The wire door runs it once over a whole run of DataRow messages and screens values one by one only
in rows it hits, so a finding the gate misses would reach the client unscreened: these tests try to
make it miss, on every sentinel of every kind, on any text hypothesis builds from finding-shaped
pieces, on raw bytes (invalid UTF-8 included), and with the value embedded in DataRow framing.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_detectors import SENTINELS, TEMPLATES, card_numbers

from pgwarden.policy.detectors import Detector
from pgwarden.policy.language import DetectorKind

ALL = Detector()


def _data_row(values: list[bytes | None]) -> bytes:
    body = struct.pack(">h", len(values)) + b"".join(
        struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v for v in values)
    return b"D" + struct.pack(">i", len(body) + 4) + body


def _covers(spots: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(a < hi and b > lo for a, b in spots)


def _sound(detector: Detector, raw: bytes) -> None:
    """If the value's text has a finding, a spot of the gate lies in or runs into the value's bytes, alone
    and inside a run of DataRow messages (where the wire door reads it), at any offset."""
    if not detector.find(raw.decode("utf-8", "replace")):
        return
    assert _covers(detector.raw_hits(raw), 0, len(raw)), raw
    head = _data_row([b"1", None])
    run = head + _data_row([b"x", raw, b"2024-01-01"]) + _data_row([b"y"])
    at = run.index(raw, len(head))  # the value's first byte inside the run
    assert _covers(detector.raw_hits(run), at, at + len(raw)), raw
    padded = b"\0" * 7 + run
    assert _covers(detector.raw_hits(padded, 7), at + 7, at + 7 + len(raw)), raw


@pytest.mark.parametrize(("secret", "kind"), SENTINELS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_sentinel_passes_the_gate_of_its_kind(secret: str, kind: DetectorKind, template: str) -> None:
    raw = template.format(secret).encode()
    for detector in (ALL, Detector([kind])):
        assert detector.find(raw.decode())
        _sound(detector, raw)


@pytest.mark.parametrize("kind", list(DetectorKind))
def test_a_kind_not_chosen_is_not_in_the_gate(kind: DetectorKind) -> None:
    others = [k for k in DetectorKind if k is not kind]
    only = Detector([kind])
    for secret, k in SENTINELS:
        if k is kind:
            assert only.raw_hits(secret.encode())
    assert Detector([]).raw_hits(b"4111111111111111 ada@example.com") == []
    assert Detector(others).kinds == frozenset(others)


def test_plain_rows_miss_the_gate() -> None:
    """What the gate is for: ordinary rows (ids, labels, dates, amounts, UUIDs) need no value read."""
    rows = b"".join(_data_row([str(i).encode(), f"row {i}".encode(), b"2024-06-01 12:34:56+00", b"1234.50",
                               b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", b"Ada Lovelace", None])
                    for i in range(1, 5000, 7))
    assert ALL.raw_hits(rows) == []


_PIECES = st.sampled_from([
    "4111", "1111", "0055", "5559", "4222222222222", "378282246310005", "-", " ", "@", ".", "_", "example",
    "com", "co", "DE89", "3704", "0044", "0532", "013000", "GB82", "WEST", "078", "05", "1120", "sk", "rk",
    "live", "test", "AKIA", "ASIA", "IOSFODNN7EXAMPLE", "ghp", "github", "pat", "xoxb", "eyJ", "hbGci",
    "-----BEGIN", "PRIVATE KEY", "-----", "\n", "é", "\ufffd", "+", "%", "a", "Z", "9",
])
_FINDING_SHAPED = st.lists(_PIECES, max_size=30).map("".join)


@settings(max_examples=600)
@given(_FINDING_SHAPED, st.sampled_from([None, *DetectorKind]))
def test_finding_shaped_texts_never_slip_past_the_gate(text: str, kind: DetectorKind | None) -> None:
    _sound(ALL if kind is None else Detector([kind]), text.encode())


@settings(max_examples=300)
@given(card_numbers(), st.binary(max_size=12), st.binary(max_size=12))
def test_cards_inside_arbitrary_bytes_pass_the_gate(card: tuple[str, str], before: bytes, after: bytes) -> None:
    _sound(ALL, before + card[1].encode() + after)


@settings(max_examples=300)
@given(st.binary(max_size=60) | st.text().map(str.encode))
def test_arbitrary_bytes_never_slip_past_the_gate(raw: bytes) -> None:
    _sound(ALL, raw)
