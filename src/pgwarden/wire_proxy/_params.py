"""Bound parameter values in their PostgreSQL text form, for the audit record (sans-IO).

A client binds values in text or in binary format (asyncpg binds everything in binary, psycopg its
integers). The audit trail should say ``42``, not ``\\x0000002a``: a value of a common built-in type is
turned into the text PostgreSQL's output function gives for it, so ``replay --against`` can bind it again
as text. A value of any other type stays ``\\x`` hex and marks the list *opaque* (not replayable). Nothing
here decides anything: the server parses the values; this only describes them.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
import uuid
from collections.abc import Callable, Sequence

_EPOCH = _dt.datetime(2000, 1, 1)
_EPOCH_DATE = _dt.date(2000, 1, 1)
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)


def _utf8(v: bytes) -> str:
    return v.decode("utf-8", "replace")


def _int(fmt: str) -> Callable[[bytes], str]:
    size = struct.calcsize(fmt)

    def conv(v: bytes) -> str:
        if len(v) != size:
            raise ValueError
        return str(struct.unpack(fmt, v)[0])

    return conv


def _float(fmt: str) -> Callable[[bytes], str]:
    size = struct.calcsize(fmt)

    def conv(v: bytes) -> str:
        if len(v) != size:
            raise ValueError
        x = struct.unpack(fmt, v)[0]
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return repr(x)

    return conv


def _bool(v: bytes) -> str:
    if len(v) != 1:
        raise ValueError
    return "t" if v[0] else "f"


def _uuid(v: bytes) -> str:
    return str(uuid.UUID(bytes=bytes(v)))


def _jsonb(v: bytes) -> str:
    if not v or v[0] != 1:
        raise ValueError
    return _utf8(v[1:])


def _date(v: bytes) -> str:
    if len(v) != 4:
        raise ValueError
    (days,) = struct.unpack("!i", v)
    if days == _I32_MAX:
        return "infinity"
    if days == _I32_MIN:
        return "-infinity"
    return (_EPOCH_DATE + _dt.timedelta(days=days)).isoformat()


def _timestamp(zone: str) -> Callable[[bytes], str]:
    def conv(v: bytes) -> str:
        if len(v) != 8:
            raise ValueError
        (us,) = struct.unpack("!q", v)
        if us == _I64_MAX:
            return "infinity"
        if us == _I64_MIN:
            return "-infinity"
        return (_EPOCH + _dt.timedelta(microseconds=us)).isoformat(sep=" ") + zone

    return conv


def _numeric(v: bytes) -> str:
    if len(v) < 8:
        raise ValueError
    ndigits, weight, sign, dscale = struct.unpack("!hhHh", v[:8])
    if len(v) != 8 + 2 * ndigits or ndigits < 0 or dscale < 0:
        raise ValueError
    if sign == 0xC000:
        return "NaN"
    if sign == 0xD000:
        return "Infinity"
    if sign == 0xF000:
        return "-Infinity"
    if sign not in (0, 0x4000):
        raise ValueError
    digits = struct.unpack(f"!{ndigits}H", v[8:])
    if any(d > 9999 for d in digits):
        raise ValueError
    # the base-10000 digits as one integer, scaled: value = int(digits) * 10000^(weight - ndigits + 1)
    whole = "".join(f"{d:04d}" for d in digits) or "0"
    exp10 = 4 * (weight - ndigits + 1)
    if exp10 >= 0:
        int_part, frac = whole + "0" * exp10, ""
    else:
        cut = len(whole) + exp10
        int_part, frac = (whole[:cut], whole[cut:]) if cut > 0 else ("0", "0" * -cut + whole)
    int_part = int_part.lstrip("0") or "0"
    frac = (frac + "0" * dscale)[:dscale]
    text = int_part + ("." + frac if dscale else "")
    return "-" + text if sign == 0x4000 else text


_BINARY: dict[int, Callable[[bytes], str]] = {
    16: _bool,
    18: _utf8, 19: _utf8, 25: _utf8, 114: _utf8, 142: _utf8, 705: _utf8, 1042: _utf8, 1043: _utf8,
    20: _int("!q"), 21: _int("!h"), 23: _int("!i"), 26: _int("!I"), 28: _int("!I"),
    700: _float("!f"), 701: _float("!d"),
    1082: _date, 1114: _timestamp(""), 1184: _timestamp("+00"),
    1700: _numeric, 2950: _uuid, 3802: _jsonb,
}
_BYTEA = 17


WITHHELD = "<binary value withheld: its bytes hold what the content detectors mask>"


def text_forms(values: Sequence[bytes | None], formats: Sequence[int], types: Sequence[int], *,
               cap: int = 1024, count: int = 100,
               hides: Callable[[bytes], bool] | None = None) -> tuple[list[str | None], bool, bool]:
    """The first ``count`` of ``values`` (as bound) in text form, each cut to ``cap`` characters; whether
    any stayed opaque hex (a binary value of a type this cannot render, or one that does not parse as its
    type); whether anything was cut. ``formats`` as in Bind (none: all text, one: for all); ``types`` the
    parameter OIDs known (declared in Parse or described by the server). ``hides(value)``: the raw bytes hold
    what the content detectors mask — such a value that stays opaque is recorded as :data:`WITHHELD`, never
    as hex the redaction of the record cannot read (a card number bound in binary as text of a type only the
    server inferred)."""
    out: list[str | None] = []
    opaque = False
    truncated = len(values) > count
    one = formats[0] if len(formats) == 1 else None
    for i, value in enumerate(values[:count]):
        if value is None:
            out.append(None)
            continue
        binary = (one if one is not None else formats[i] if i < len(formats) else 0) == 1
        if not binary:
            text = _utf8(value[:cap * 4])
        else:
            oid = types[i] if i < len(types) else 0
            conv = _BINARY.get(oid)
            text = None
            if conv is not None and len(value) <= cap * 4:
                try:
                    text = conv(bytes(value))
                except (ValueError, struct.error, OverflowError):
                    text = None
            if text is None:
                if hides is not None and hides(bytes(value)):
                    text = WITHHELD
                else:
                    text = "\\x" + bytes(value[:cap // 2]).hex()
                    truncated = truncated or len(value) > cap // 2
                opaque = opaque or oid != _BYTEA
        if len(text) > cap:
            text, truncated = text[:cap], True
        out.append(text)
    return out, opaque, truncated
