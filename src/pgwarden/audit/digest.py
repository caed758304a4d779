"""The digest of a whole (masked) result, computed while it streams and again at replay.

Encoding, version 1 — SHA-256 over these bytes, in order (``u32``/``u64`` big-endian):

* the prefix ``b"pgwarden.result.v1\\n"``;
* the columns: ``b"C"``, ``u32`` number of columns, then each column name as a *value*;
* each row: ``b"R"``, ``u32`` number of values, then each value;
* at the end (when the digest is read): ``b"E"``, ``u64`` number of rows.

A *value* is ``b"N"`` for SQL NULL (``None``), or ``b"S"``, ``u64`` length of its UTF-8 bytes and the
bytes, for text (``str``). Values are the text form the client received, after masking, so a replay
recomputes the same digest from fresh rows that go through the same masking. Length prefixes make
the encoding unambiguous (no separator can be forged inside a value; ``NULL`` differs from ``''`` and
from ``'NULL'``). Anything but ``str`` or ``None`` is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

__all__ = ["ResultDigest", "result_digest"]

_PREFIX = b"pgwarden.result.v1\n"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _value(value: str | None) -> bytes:
    if value is None:
        return b"N"
    if not isinstance(value, str):
        raise TypeError(f"result values are digested as text: expected str or None, got {type(value).__name__}")
    data = value.encode("utf-8")
    return b"S" + _U64.pack(len(data)) + data


class ResultDigest:
    """Streaming SHA-256 of a result: ``ResultDigest(columns)``, ``update(row)`` per row, ``hexdigest()``."""

    __slots__ = ("_hash", "rows")

    def __init__(self, columns: Sequence[str]) -> None:
        self._hash = hashlib.sha256(_PREFIX)
        self.rows = 0
        self._hash.update(b"C" + _U32.pack(len(columns)) + b"".join(_value(c) for c in columns))

    def update(self, row: Sequence[str | None]) -> None:
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
        self._hash.update(out)
        self.rows += 1

    def update_many(self, rows: Iterable[Sequence[str | None]]) -> None:
        update = self._hash.update
        pack = _U64.pack
        u32 = _U32.pack
        count = 0
        try:
            for row in rows:
                out = b"R" + u32(len(row))
                for value in row:
                    if value is None:
                        out += b"N"
                    elif type(value) is str:
                        data = value.encode("utf-8")
                        out += b"S" + pack(len(data)) + data
                    else:
                        out += _value(value)
                update(out)
                count += 1
        finally:
            self.rows += count

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"E" + _U64.pack(self.rows))
        return final.hexdigest()


def result_digest(columns: Sequence[str], rows: Iterable[Sequence[str | None]]) -> str:
    digest = ResultDigest(columns)
    digest.update_many(rows)
    return digest.hexdigest()
