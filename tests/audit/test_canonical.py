"""The journal's canonical JSON: the orjson fast path is ``rfc8785.dumps`` byte for byte, or not taken.

Bodies are generated the way the journal builds them (``span_body`` of a recorder's span: schema attribute
names, any text including control characters, non-BMP characters and invalid surrogates, safe and unsafe
integers, booleans, lists of text, floats, events and links) and also as free JSON values with non-ASCII
keys, floats and tuples, which must leave the fast path and still come out as the reference does.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.audit import AuditRecorder, AuditSettings, ResultDigest, schema, verify
from pgwarden.audit._records import (
    NOT_READY,
    NotCanonical,
    _fast_domain,
    canonical,
    canonical_reference,
    encode_record,
    json_value,
    ready_value,
)
from pgwarden.audit.digest import _U32, _U64, _value

_NAMES = sorted(
    {v for k, v in vars(schema).items() if k.isupper() and isinstance(v, str) and "." in v and " " not in v}
)
_SAFE = 2**53 - 1

texts = st.text(st.characters(codec=None), max_size=40)  # everything, lone surrogates included
valid_texts = st.text(st.characters(codec="utf-8"), max_size=40)
ascii_keys = st.one_of(st.sampled_from(_NAMES), st.text(st.characters(codec="ascii"), max_size=12))
any_keys = st.one_of(ascii_keys, valid_texts)
ints = st.one_of(st.integers(-_SAFE, _SAFE), st.integers(), st.sampled_from([_SAFE, -_SAFE, _SAFE + 1, -_SAFE - 1]))
floats = st.floats(allow_nan=False, allow_infinity=False)
otel_values = st.one_of(
    texts, valid_texts, st.booleans(), ints, floats,
    st.lists(valid_texts, max_size=5).map(tuple), st.lists(ints, max_size=3).map(tuple),
)


def _hex(n: int) -> str:
    return format(n, "x")


@st.composite
def span_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """What ``span_body`` returns for a statement or session span, attribute values from OpenTelemetry."""
    attrs = draw(st.dictionaries(ascii_keys, otel_values, max_size=25))
    events = draw(st.lists(st.fixed_dictionaries({
        "name": st.sampled_from([schema.EVENT_APPROVAL_REQUESTED, schema.EVENT_APPROVAL_DECIDED]),
        "time_ns": st.integers(0, 2**63).map(str),
        "attributes": st.dictionaries(ascii_keys, otel_values, max_size=4).map(json_value),
    }), max_size=2))
    return {
        "name": draw(valid_texts),
        "trace_id": format(draw(st.integers(0, 2**128 - 1)), "032x"),
        "span_id": format(draw(st.integers(0, 2**64 - 1)), "016x"),
        "parent_span_id": draw(st.one_of(st.none(), st.integers(0, 2**64 - 1).map(lambda n: format(n, "016x")))),
        "kind": draw(st.sampled_from(["CLIENT", "SERVER", "INTERNAL"])),
        "start_ns": str(draw(st.integers(0, 2**63))),
        "end_ns": str(draw(st.integers(0, 2**63))),
        "status": {"code": draw(st.sampled_from(["UNSET", "OK", "ERROR"])), "description": draw(st.none() | texts)},
        "attributes": json_value(attrs),
        "events": events,
        "links": draw(st.lists(st.fixed_dictionaries({"trace_id": st.just("0" * 32), "span_id": st.just("1" * 16)}),
                               max_size=2)),
        "service": draw(st.one_of(st.none(), valid_texts)),
    }


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, floats, texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(any_keys, inner, max_size=4),
    ),
    max_leaves=20,
)


def _same(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        with pytest.raises(type(exc)):
            canonical(value)
        return
    assert canonical(value) == expected


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(body=span_bodies(), seq=st.integers(1, _SAFE), kind=st.sampled_from(["span", "checkpoint", "rotate"]))
def test_records_are_canonicalised_as_rfc8785_does(body: dict[str, Any], seq: int, kind: str) -> None:
    record = {"seq": seq, "prev": "0" * 64, "kind": kind, "body": body}
    _same(record)
    try:
        core = rfc8785.dumps(record)
    except rfc8785.CanonicalizationError:
        return
    line, digest = encode_record(seq, "0" * 64, kind, body)
    assert digest == hashlib.sha256(core).hexdigest()
    assert line == core[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


@settings(max_examples=600)
@given(json_values)
def test_any_json_value_is_canonicalised_as_rfc8785_does(value: Any) -> None:
    _same(value)


@settings(max_examples=300)
@given(st.dictionaries(ascii_keys, st.one_of(valid_texts, st.booleans(), st.integers(-_SAFE, _SAFE),
                                             st.lists(valid_texts, max_size=4)), max_size=20))
def test_the_fast_path_is_taken_for_statement_shaped_bodies(attrs: dict[str, Any]) -> None:
    """Realistic statement attributes are inside the fast domain (else the speed-up would be imaginary)."""
    assert _fast_domain({"seq": 1, "prev": "0" * 64, "kind": "span", "body": {"attributes": attrs}})
    assert orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(attrs)


def test_what_leaves_the_fast_path() -> None:
    assert not _fast_domain({"x": 1.5})
    assert not _fast_domain({"é": 1})
    assert not _fast_domain({"x": (1, 2)})
    assert not _fast_domain({"x": _SAFE + 1})
    assert not _fast_domain({1: "x"})
    for value in ({"\U0001f600": 1, "\uffff": 2}, {"x": 1e21, "y": 1.0, "z": -0.0}, {"s": "\ud800"}):
        _same(value)
    assert canonical_reference({"b": 1, "a": 2}) == canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


@settings(max_examples=200)
@given(st.lists(st.lists(st.one_of(st.none(), valid_texts), max_size=6), max_size=6),
       st.lists(valid_texts, max_size=4))
def test_the_result_digest_follows_its_encoding(rows: list[list[str | None]], columns: list[str]) -> None:
    """``update``/``update_many`` hash exactly the bytes the module docstring gives, in both versions, and
    version 2's ``update_wire`` over the DataRow messages a server would send gives the same digest."""
    h = hashlib.sha256(b"pgwarden.result.v1\n")
    h.update(b"C" + _U32.pack(len(columns)) + b"".join(_value(c) for c in columns))
    for row in rows:
        h.update(b"R" + _U32.pack(len(row)) + b"".join(_value(v) for v in row))
    h.update(b"E" + _U64.pack(len(rows)))
    one, many = ResultDigest(columns, 1), ResultDigest(columns, 1)
    for row in rows:
        one.update(row)
    many.update_many(rows)
    assert one.hexdigest() == many.hexdigest() == h.hexdigest()

    def data_row(row: list[str | None]) -> bytes:
        body = struct.pack(">h", len(row)) + b"".join(
            struct.pack(">i", -1) if v is None else struct.pack(">i", len(v.encode())) + v.encode() for v in row)
        return b"D" + struct.pack(">i", len(body) + 4) + body

    wire = b"".join(data_row(r) for r in rows)
    h = hashlib.sha256(b"pgwarden.result.v2\n")
    h.update(b"C" + _U32.pack(len(columns)) + b"".join(_value(c) for c in columns))
    h.update(wire + b"E" + _U64.pack(len(rows)))
    one, many, raw, halves = (ResultDigest(columns) for _ in range(4))
    for row in rows:
        one.update(row)
    many.update_many(rows)
    raw.update_wire(memoryview(wire), len(rows))
    cut = len(data_row(rows[0])) if rows else 0
    halves.update_wire(wire[:cut], 1 if rows else 0)
    halves.update_wire(bytearray(wire[cut:]), max(len(rows) - 1, 0))
    assert one.hexdigest() == many.hexdigest() == raw.hexdigest() == halves.hexdigest() == h.hexdigest()
    assert one.version == 2


@settings(max_examples=300)
@given(st.lists(st.lists(st.one_of(st.none(), valid_texts), max_size=5), max_size=5))
def test_the_recorded_sample_is_the_json_text_the_format_names(rows: list[list[str | None]]) -> None:
    """``pgwarden.result.sample`` is json.dumps(ensure_ascii=False, separators=(",", ":")) of the sample (the
    recorder writes it with orjson, which must give the same text: replay and readers parse it)."""
    recorder = AuditRecorder(AuditSettings(journal_enabled=False, sample_rows=10, sample_value_max_length=1000))
    session = recorder.start_session("s", [], "wire", "t")
    st_ = recorder.open_statement(session, "SELECT 1")
    st_.result(["c"], rows, len(rows), None)
    assert st_._attrs[schema.RESULT_SAMPLE] == json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    # digests of one shape share a cached head: two results of the same columns, the second one different
    a, b = ResultDigest(["c", "d"]), ResultDigest(["c", "d"])
    a.update(["1", None])
    assert b.hexdigest() == ResultDigest(["c", "d"]).hexdigest() != a.hexdigest()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(valid_texts, min_size=1, max_size=4), wait=st.floats(0, 1e9))  # a wait in ms
def test_recorded_journals_verify_and_match_the_reference(tmp_path_factory: pytest.TempPathFactory,
                                                          texts: list[str], wait: float) -> None:
    """End to end: every line the recorder writes hashes, under the reference, to its own ``hash``."""
    d: Path = tmp_path_factory.mktemp("j") / "journal"
    with AuditRecorder(AuditSettings(journal_dir=d, fsync="batch", checkpoint_every=3)) as recorder:
        session = recorder.start_session(texts[0], texts, "wire", texts[-1])
        for text in texts:
            with recorder.statement(session, text, attributes={schema.DB_NAMESPACE: text}) as st_:
                st_.decided({schema.DECISION: "allow", schema.REASONS: [text]})
                st_.approval_decided("a1", text, "approved", wait)
                st_.result(["c"], [[text], [None]], 2, ResultDigest(["c"]))
        session.end()
    report = verify(d)
    assert report.ok and report.sealed
    for line in (d / "journal-000001.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        digest = record.pop("hash")
        assert hashlib.sha256(rfc8785.dumps(record)).hexdigest() == digest


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(attrs=st.one_of(st.dictionaries(ascii_keys, otel_values, max_size=25), json_values),
       seq=st.integers(1, _SAFE))
def test_the_ready_form_encodes_as_rfc8785_does(attrs: Any, seq: int) -> None:
    """``ready_value`` + ``encode_record(..., ready=True)`` (the recorder's path) is the reference byte for byte
    when it is taken, and leaves (NOT_READY / NotCanonical) for anything it cannot vouch for."""
    body = {"name": "x", "attributes": attrs}
    ready = ready_value(body)
    if ready is NOT_READY:
        return
    reference_body = json_value(body)
    try:
        core = rfc8785.dumps({"seq": seq, "prev": "0" * 64, "kind": "span", "body": reference_body})
    except rfc8785.CanonicalizationError:
        with pytest.raises(NotCanonical):
            encode_record(seq, "0" * 64, "span", ready, ready=True)
        return
    try:
        line, digest = encode_record(seq, "0" * 64, "span", ready, ready=True)
    except NotCanonical:
        return  # refused by orjson (lone surrogates): the recorder then encodes the plain body
    assert digest == hashlib.sha256(core).hexdigest()
    assert line == core[:-1] + b',"hash":"' + digest.encode() + b'"}\n'


def test_the_ready_form_refuses_what_it_cannot_vouch_for() -> None:
    assert ready_value({"é": 1}) is NOT_READY
    assert ready_value({1: "a"}) is NOT_READY

    class Text(str):
        pass

    assert ready_value({"a": [Text("x")]}) is NOT_READY
    assert ready_value({"a": b"bytes"}) is NOT_READY
    assert ready_value({"f": 1.0, "g": 1e21, "n": float("nan"), "big": 2**60}) is not NOT_READY
    line, _ = encode_record(1, "0" * 64, "span", ready_value({"f": 1.0, "g": 1e21, "big": 2**60}), ready=True)
    assert b'"f":1,' in line and b'"g":1e+21' in line and b'"big":"1152921504606846976"' in line
