"""The journal's line format, shared by the writer, verify and review.

One record per line, UTF-8 JSON: ``{"seq", "prev", "kind", "body", "hash"}``. ``hash`` is the SHA-256 (hex)
of ``rfc8785.dumps`` of the record without ``hash``; ``prev`` is the previous record's ``hash``
(:data:`GENESIS` for seq 1); ``seq`` counts from 1 across all files. The line is not itself canonical
(``hash`` comes last), verifiers re-canonicalise.

:func:`canonical` is RFC 8785 byte for byte. Its fast path is ``orjson`` with sorted keys, taken only for
values inside the domain where the two are identical (see :func:`_fast_domain`): ``dict``/``list`` of
exactly ``str``, ``bool``, ``None`` and integers within ±(2**53 - 1), every key an ASCII ``str`` (for
ASCII, orjson's byte order is RFC 8785's UTF-16 order). Anything else — a float, a tuple, a subclass, a
non-ASCII key, nesting orjson refuses, text that is not valid Unicode — goes to the ``rfc8785`` package,
the reference. ``tests/audit/test_canonical.py`` checks the equality with hypothesis.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785

GENESIS = "0" * 64
KINDS = ("span", "checkpoint", "rotate")
FILE_PATTERN = re.compile(r"^journal-(\d{6,})\.jsonl$")
HEAD_FILE = "journal.head"
_SAFE_INT = 2**53 - 1


def file_name(number: int) -> str:
    return f"journal-{number:06d}.jsonl"


def file_number(name: str) -> int | None:
    match = FILE_PATTERN.match(name)
    return int(match.group(1)) if match else None


def _fast_domain(value: Any) -> bool:
    """True if ``orjson.dumps(value, option=OPT_SORT_KEYS)`` is exactly ``rfc8785.dumps(value)``."""
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    if t is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _fast_domain(item):
                return False
        return True
    if t is list:
        for item in value:  # noqa: SIM110 - all() over a generator is slower here
            if not _fast_domain(item):
                return False
        return True
    return False


# ``_fast_domain`` is also exactly where :func:`ready_value` gives back an equal value (no float, tuple,
# big int, subclass, non-``str`` or non-ASCII key): such a value is its own ready form, and orjson writes
# it as it stands. The recorder checks what it puts in a statement record against it once, where it is
# made (session attributes once per session, a verdict's fields once per verdict), not per record.
plain_value = _fast_domain

_SORT_KEYS = orjson.OPT_SORT_KEYS


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON of ``value``, as ``rfc8785.dumps`` gives it."""
    if _fast_domain(value):
        try:
            return orjson.dumps(value, option=_SORT_KEYS)
        except orjson.JSONEncodeError:  # lone surrogates, nesting too deep: let the reference decide
            pass
    return rfc8785.dumps(value)


def canonical_reference(value: Any) -> bytes:
    """The reference implementation (``rfc8785``), for tests and comparisons."""
    return rfc8785.dumps(value)


class NotCanonical(ValueError):
    """A body from :func:`ready_value` that orjson cannot encode after all (a lone surrogate in a text)."""


def encode_record(seq: int, prev: str, kind: str, body: Mapping[str, Any], *,
                  ready: bool = False) -> tuple[bytes, str]:
    """The line (with its newline) and the record's hash.

    ``ready``: ``body`` came from :func:`ready_value` (floats as RFC 8785 fragments, every key ASCII), so
    orjson's sorted output is RFC 8785 as it stands, without the domain walk; raises :class:`NotCanonical`
    when orjson refuses it (the caller encodes the plain body instead).
    """
    record = {"seq": seq, "prev": prev, "kind": kind, "body": body}
    if ready:
        try:
            core = orjson.dumps(record, option=_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise NotCanonical(str(exc)) from None
    else:
        core = canonical(record)
    digest = hashlib.sha256(core).hexdigest()
    return core[:-1] + b',"hash":"' + digest.encode() + b'"}\n', digest


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def json_value(value: Any) -> Any:
    """An OpenTelemetry attribute value as I-JSON (what RFC 8785 accepts): big ints and NaN become text."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is tuple or t is list:  # OpenTelemetry keeps sequences as tuples
        return [json_value(v) for v in value]
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [json_value(v) for v in value]
    return str(value)


NOT_READY = object()


def ready_value(value: Any) -> Any:
    """:func:`json_value` of ``value`` in the form ``encode_record(..., ready=True)`` takes, in one pass:
    each finite float an ``orjson.Fragment`` of its RFC 8785 text, so orjson writes exactly what RFC 8785
    does. :data:`NOT_READY` for anything outside that domain (a non-ASCII or non-``str`` key, a subclass,
    another type): the caller then uses :func:`json_value` and :func:`canonical`."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        return value if -_SAFE_INT <= value <= _SAFE_INT else str(value)
    if t is list or t is tuple:
        out: list[Any] = []
        append = out.append
        for item in value:
            if type(item) is str:
                append(item)
                continue
            item = ready_value(item)
            if item is NOT_READY:
                return NOT_READY
            append(item)
        return out
    if t is dict:
        result: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return NOT_READY
            ti = type(item)
            if ti is not str and ti is not bool and item is not None:
                item = ready_value(item)
                if item is NOT_READY:
                    return NOT_READY
            result[key] = item
        return result
    if t is float:
        return orjson.Fragment(rfc8785.dumps(value)) if math.isfinite(value) else str(value)
    return NOT_READY


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def ns_to_iso(ns: int | str | None) -> str | None:
    if ns is None:
        return None
    ns = int(ns)
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def checkpoint_payload(body: Mapping[str, Any]) -> bytes:
    """What a checkpoint's signature covers: its body without the signature."""
    return canonical({k: v for k, v in body.items() if k != "signature"})


def head_payload(head: Mapping[str, Any]) -> bytes:
    return canonical({k: head[k] for k in ("seq", "hash", "file", "key_id", "time")})
