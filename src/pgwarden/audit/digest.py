"""The digest of a whole (masked) result, computed while it streams and again at replay.

Two encodings, told apart by their prefix; a statement record names the one it used
(``pgwarden.result.digest_version``; a record without it is version 1). SHA-256 over, in order
(``u32``/``u64`` big-endian, ``i16``/``i32`` signed big-endian):

* the prefix ``b"pgwarden.result.v1\n"`` or ``b"pgwarden.result.v2\n"``;
* the columns: ``b"C"``, ``u32`` number of columns, then each column name as a *value* (below);
* each row —
  version 1: ``b"R"``, ``u32`` number of values, then each value as a *value*;
  version 2: the row as PostgreSQL's protocol carries it in text format, a whole DataRow message:
  ``b"D"``, ``i32`` length of what follows plus 4, ``i16`` number of values, then per value ``i32 -1``
  for NULL or ``i32`` length of its UTF-8 bytes and the bytes;
* at the end (when the digest is read): ``b"E"``, ``u64`` number of rows.

A *value* is ``b"N"`` for SQL NULL (``None``), or ``b"S"``, ``u64`` length of its UTF-8 bytes and the
bytes, for text (``str``). Values are the text form the client received, after masking, so a replay
recomputes the same digest from fresh rows that go through the same masking. Length prefixes make
both encodings unambiguous (no separator can be forged inside a value; ``NULL`` differs from ``''``
and from ``'NULL'``). Anything but ``str`` or ``None`` is refused rather than guessed at.

Version 2 is what both doors write: the wire door hashes the DataRow bytes it forwards as they are,
a whole run of rows in one call (:meth:`ResultDigest.update_wire`), instead of decoding every value;
the MCP door and a replay build the same bytes from text values. The two agree because both doors pin
``client_encoding`` to UTF8 (the wire proxy refuses any other).
Version 1 stays readable so older journals still replay.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

__all__ = ["DIGEST_VERSION", "DIGEST_VERSIONS", "ResultDigest", "result_digest"]

DIGEST_VERSION = 2  # what new records use
DIGEST_VERSIONS = (1, 2)
_PREFIXES = {1: b"pgwarden.result.v1\n", 2: b"pgwarden.result.v2\n"}
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_NULL32 = _I32.pack(-1)


def _value(value: str | None) -> bytes:
    if value is None:
        return b"N"
    if not isinstance(value, str):
        raise TypeError(f"result values are digested as text: expected str or None, got {type(value).__name__}")
    data = value.encode("utf-8")
    return b"S" + _U64.pack(len(data)) + data


def _row_v1(row: Sequence[str | None]) -> bytes:
    pack = _U64.pack
    out = b"R" + _U32.pack(len(row))
    for value in row:
        if value is None:
            out += b"N"
        elif type(value) is str:
            data = value.encode("utf-8")
            out += b"S" + pack(len(data)) + data
        else:
            out += _value(value)  # str subclasses pass, anything else raises TypeError
    return out


def _row_v2(row: Sequence[str | None]) -> bytes:
    pack = _I32.pack
    parts = [_I16.pack(len(row))]
    append = parts.append
    for value in row:
        if value is None:
            append(_NULL32)
            continue
        if not isinstance(value, str):
            _value(value)  # raises TypeError
        data = value.encode("utf-8")
        append(pack(len(data)))
        append(data)
    body = b"".join(parts)
    return b"D" + pack(len(body) + 4) + body


_HEADS: dict[tuple, hashlib._Hash] = {}  # (version, *columns) → the hash state after the columns
_HEADS_KEPT = 512
_STR_ONLY = frozenset({str})


class ResultDigest:
    """Streaming SHA-256 of a result: ``ResultDigest(columns)``, ``update(row)`` per row, ``hexdigest()``."""

    __slots__ = ("_hash", "_row", "rows", "version")

    def __init__(self, columns: Sequence[str], version: int = DIGEST_VERSION) -> None:
        if version not in _PREFIXES:
            raise ValueError(f"unknown result digest version {version!r} (known: {DIGEST_VERSIONS})")
        self.version = version
        self._row = _row_v1 if version == 1 else _row_v2
        self.rows = 0
        key = (version, *columns) if _STR_ONLY.issuperset(map(type, columns)) else None
        head = _HEADS.get(key) if key is not None else None
        if head is None:
            head = hashlib.sha256(_PREFIXES[version])
            head.update(b"C" + _U32.pack(len(columns)) + b"".join(_value(c) for c in columns))
            if key is not None:
                if len(_HEADS) >= _HEADS_KEPT:
                    _HEADS.pop(next(iter(_HEADS)))
                _HEADS[key] = head
        self._hash = head.copy()  # a statement of a known shape does not hash its column names again

    def update(self, row: Sequence[str | None]) -> None:
        self._hash.update(self._row(row))
        self.rows += 1

    def update_many(self, rows: Iterable[Sequence[str | None]]) -> None:
        update = self._hash.update
        encode = self._row
        count = 0
        try:
            for row in rows:
                update(encode(row))
                count += 1
        finally:
            self.rows += count

    def update_wire(self, messages: bytes | bytearray | memoryview, rows: int) -> None:
        """Version 2: ``messages`` are ``rows`` whole DataRow messages (type byte and length included),
        text format, exactly as the client received them."""
        if self.version != 2:
            raise ValueError("raw DataRow bytes are digested by version 2 only")
        self._hash.update(messages)
        self.rows += rows

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"E" + _U64.pack(self.rows))
        return final.hexdigest()


def result_digest(columns: Sequence[str], rows: Iterable[Sequence[str | None]],
                  version: int = DIGEST_VERSION) -> str:
    digest = ResultDigest(columns, version)
    digest.update_many(rows)
    return digest.hexdigest()
