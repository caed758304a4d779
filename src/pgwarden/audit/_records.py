"""The journal's line format, shared by the writer, verify and review.

One record per line, UTF-8 JSON: ``{"seq", "prev", "kind", "body", "hash"}``. ``hash`` is the SHA-256 (hex)
of ``rfc8785.dumps`` of the record without ``hash``; ``prev`` is the previous record's ``hash``
(:data:`GENESIS` for seq 1); ``seq`` counts from 1 across all files. The line is not itself canonical
(``hash`` comes last), verifiers re-canonicalise.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

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


def canonical(value: Any) -> bytes:
    return rfc8785.dumps(value)


def encode_record(seq: int, prev: str, kind: str, body: Mapping[str, Any]) -> tuple[bytes, str]:
    """The line (with its newline) and the record's hash."""
    core = canonical({"seq": seq, "prev": prev, "kind": kind, "body": body})
    digest = hashlib.sha256(core).hexdigest()
    return core[:-1] + b',"hash":"' + digest.encode() + b'"}\n', digest


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def json_value(value: Any) -> Any:
    """An OpenTelemetry attribute value as I-JSON (what RFC 8785 accepts): big ints and NaN become text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
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
