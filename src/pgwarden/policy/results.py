"""Result screening, shared by both doors: confirm a result against its plan, screen each row.

Pure: no I/O, no psycopg. A door hands :meth:`ResultScreen.build` the statement's
:class:`~pgwarden.policy.verdict.StatementPlan` and the result's column descriptions as
PostgreSQL sent them (RowDescription: name, type OID, table OID, attribute number, format),
and gets back either a typed :class:`ResultShapeMismatch` — the result contradicts what the
analysis planned, so it is withheld whole — or a screen whose :meth:`~ResultScreen.row` takes
one row of raw values (bytes in PostgreSQL's text form, or None for NULL) and returns the
values the client may receive: any mask the plan still applies to outputs, then the content
detectors over text. ``passthrough`` is true when nothing applies, so a relay may forward
DataRow bytes untouched; ``gated`` is true when only the detectors apply, and then a row in whose
raw bytes ``raw_hits`` finds nothing comes out of ``row`` unchanged and may be forwarded untouched
too. :func:`screen_text` does the same for error and notice fields: a
statement that reads masked columns loses their text (PostgreSQL quotes values in errors:
``invalid input syntax for type bigint: "4111…"``), everything else goes through the detectors.

Binary format. A column the detectors read may come in binary format when its binary form can be
read exactly as the text PostgreSQL would have sent (:data:`_BINARY_TEXT`): the text types, whose
binary form *is* their text, json, jsonb (a version byte, then the text), int8 and numeric (decoded
to their text form), and float8 (read with every digit it holds). A redacted text value goes back in
the same binary form; a finding in an int8, numeric or float8 value cannot be written back in binary,
so the result is withheld
(:class:`ValueWithheld`), as a text-format client would have failed to parse the redaction. Any
other binary column that needs screening is refused, and a masker never reads binary values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pgwarden.errors import PgwardenError

from .detectors import Detector
from .verdict import MaskAction, StatementPlan

__all__ = ["ColumnInfo", "ResultScreen", "ResultShapeMismatch", "ValueWithheld", "diagnostic_withheld",
           "screen_error_fields", "screen_text"]

Masker = Callable[[object], "str | None"]

# Types whose text form cannot carry what the detectors look for (a 16-digit card number does
# not fit an int4; a boolean holds no e-mail): the detectors skip these and read everything
# else — text, numeric, json, arrays, and any domain or user-defined type, whose OIDs are unknown.
# (Not float8: it prints whole numbers below 1e15 in full, a 15-digit card number among them; float4 keeps
# 6-9 significant digits and prints larger numbers with an exponent.)
_PLAIN_OIDS = frozenset({
    16, 21, 23, 26, 28, 29, 700,  # bool, int2, int4, oid, xid, cid, float4
    1082, 1083, 1114, 1184, 1186, 1266,  # date, time, timestamp, timestamptz, interval, timetz
    2950, 3220,  # uuid, pg_lsn
})


class ValueWithheld(PgwardenError):
    """A value holds what the content detectors mask, in a binary form the redaction cannot be written in."""

    sqlstate = "22000"

    def __init__(self, column: int, name: str) -> None:
        super().__init__("value_withheld", f"pgwarden: column {column} ({name!r}) holds a value the content "
                         "detectors mask, which cannot be written in binary format; the result is withheld",
                         hint="request this column in text format, or cast it to text")


def _numeric_text(data: bytes) -> str:
    """numeric's binary form (numeric_send) as numeric_out writes it."""
    if len(data) < 8:
        raise ValueError("numeric: short value")
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(data)
    if sign == 0xC000:
        return "NaN"
    if sign == 0xD000:
        return "Infinity"
    if sign == 0xF000:
        return "-Infinity"
    if sign not in (0, 0x4000) or ndigits < 0 or len(data) != 8 + 2 * ndigits:
        raise ValueError("numeric: malformed value")
    digits = struct.unpack_from(f"!{ndigits}H", data, 8)
    if any(d > 9999 for d in digits):
        raise ValueError("numeric: digit out of range")

    def group(j: int) -> int:
        return digits[j] if 0 <= j < ndigits else 0

    if weight >= 0:
        whole = str(group(0)) + "".join(f"{group(j):04d}" for j in range(1, weight + 1))
    else:
        whole = "0"
    text = whole
    if dscale > 0:
        text += "." + "".join(f"{group(j):04d}" for j in range(weight + 1, weight + 1 + (dscale + 3) // 4))[:dscale]
    return "-" + text if sign == 0x4000 else text


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _jsonb_text(data: bytes) -> str:
    if not data or data[0] != 1:
        raise ValueError("jsonb: unknown binary version")
    return data[1:].decode("utf-8", errors="replace")


def _float8_text(data: bytes) -> str:
    # Python's shortest repr shows every digit PostgreSQL's float8out shows, and more (it turns to an
    # exponent later): a finding is never missed, and a binary float8 is never rewritten, only withheld
    if len(data) != 8:
        raise ValueError("float8: not 8 bytes")
    return repr(struct.unpack("!d", data)[0])


def _int8_text(data: bytes) -> str:
    if len(data) != 8:
        raise ValueError("int8: not 8 bytes")
    return str(int.from_bytes(data, "big", signed=True))


_NUMERIC_HEAD = struct.Struct("!hhHH")
# type OID → (binary bytes → the text PostgreSQL would send, text → binary again or None when it cannot be,
# whether the text's UTF-8 bytes appear in the binary form as they are — the raw gate's premise)
_BINARY_TEXT: dict[int, tuple[Callable[[bytes], str], Callable[[str], bytes] | None, bool]] = {
    **{oid: (_utf8, str.encode, True) for oid in (25, 1043, 1042, 19, 18, 705, 114)},
    3802: (_jsonb_text, lambda t: b"\x01" + t.encode(), True),
    20: (_int8_text, None, False),
    701: (_float8_text, None, False),
    1700: (_numeric_text, None, False),
}


class ResultShapeMismatch(PgwardenError):
    """PostgreSQL returned a result the analysis did not predict: it is withheld whole."""

    sqlstate = "XX000"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__("result_shape_mismatch", message + "; the result is withheld", hint=hint or (
            "send the statement with explicit column lists, or report it to the gateway's administrators"))


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """One column of a result as RowDescription describes it."""

    name: str
    type_oid: int = 0
    table_oid: int = 0
    attnum: int = 0
    format: int = 0  # 0 text, 1 binary


class ResultScreen:
    """The per-row screen of one result (see the module docstring)."""

    __slots__ = ("_binary", "_detect", "_detector", "_maskers", "column_names", "gated", "masked_positions",
                 "passthrough", "raw_hits")

    def __init__(self, column_names: tuple[str, ...], maskers: tuple[Masker | None, ...],
                 detect: tuple[bool, ...], detector: Detector | None,
                 binary: tuple[tuple[Callable[[bytes], str], Callable[[str], bytes] | None, bool] | None, ...]
                 | None = None) -> None:
        self.column_names = column_names
        self._maskers = maskers
        self._detect = detect
        self._detector = detector
        self._binary = binary or (None,) * len(column_names)  # per column: how to read its binary form
        self.masked_positions = tuple(i for i, m in enumerate(maskers) if m is not None)
        self.passthrough = not self.masked_positions and not any(detect)
        # Only detectors read values: a row whose bytes ``raw_hits`` (Detector.raw_hits) finds nothing in
        # comes out of ``row`` unchanged, so a door may forward it as it came without decoding it — as long
        # as every value the detectors read carries its text's bytes as they are (not an int8 in binary)
        self.gated = not self.masked_positions and all(
            b is None or b[2] for b, d in zip(self._binary, detect, strict=True) if d)
        self.raw_hits = detector.raw_hits if detector is not None else None

    @classmethod
    def build(cls, plan: StatementPlan | None, columns: Sequence[ColumnInfo], *, detector: Detector | None,
              masker_for: Callable[[MaskAction], Masker] | None = None,
              raw_masked: frozenset[tuple[int, int]] = frozenset()) -> ResultScreen:
        """Confirm ``columns`` against ``plan``; raise :class:`ResultShapeMismatch` when they disagree.

        ``raw_masked`` holds the (table OID, attnum) of every column masked for this principal:
        a result column that PostgreSQL reports as coming straight from one of them carries a raw
        value, whatever the plan says, and is never released.
        """
        width = len(columns)
        if plan is None:
            raise ResultShapeMismatch("PostgreSQL returned more results than the analysis predicted")
        if plan.width is not None and plan.width != width:
            raise ResultShapeMismatch(f"PostgreSQL returned {width} columns where the analysis predicted "
                                      f"{plan.width}")
        maskers: list[Masker | None] = [None] * width
        for action in plan.masks:
            if action.position >= width:
                raise ResultShapeMismatch("a masked column is missing from the result")
            col = columns[action.position]
            if action.origin is not None and col.table_oid and (col.table_oid, col.attnum) != action.origin:
                raise ResultShapeMismatch(f"column {action.position + 1} does not come from the column the "
                                          "policy expected")
            if plan.masked_upstream:
                continue  # masked inside the statement already (policy/_rewrite.py): never masked twice
            if masker_for is None:
                raise ResultShapeMismatch("the plan masks an output but no masker is available")
            maskers[action.position] = masker_for(action)
        for i, col in enumerate(columns):
            if col.table_oid and maskers[i] is None and ((col.table_oid, col.attnum) in raw_masked
                                                         or (col.table_oid, col.attnum) in plan.raw_origins):
                raise ResultShapeMismatch(f"column {i + 1} ({col.name!r}) comes straight from a masked column "
                                          "that was not masked")
        detect = tuple(detector is not None and maskers[i] is None and col.type_oid not in _PLAIN_OIDS
                       for i, col in enumerate(columns))
        binary: list[tuple[Callable[[bytes], str], Callable[[str], bytes] | None, bool] | None] = [None] * width
        for i, col in enumerate(columns):
            if col.format == 0 or (maskers[i] is None and not detect[i]):
                continue
            readable = _BINARY_TEXT.get(col.type_oid) if maskers[i] is None else None
            if readable is None:
                raise ResultShapeMismatch(
                    f"column {i + 1} ({col.name!r}) was requested in binary format, which the gateway cannot "
                    "screen for its type", hint="request this column in text format, or cast it to text (the "
                    "gateway reads text types, json, jsonb, int8 and numeric in binary)")
            binary[i] = readable
        names = tuple(detector.redact(c.name) if detector is not None else c.name for c in columns)
        return cls(names, tuple(maskers), detect, detector, tuple(binary))

    def row(self, values: Sequence[bytes | None]) -> list[bytes | None]:
        """The values of one row the client may receive."""
        out = list(values)
        if self.passthrough:
            return out
        maskers = self._maskers
        detect = self._detect
        detector = self._detector
        binary = self._binary
        for i, value in enumerate(out):
            if value is None:
                continue
            masker = maskers[i]
            if masker is not None:
                masked = masker(value.decode("utf-8", errors="replace"))
                out[i] = None if masked is None else masked.encode()
            elif detect[i] and detector is not None:
                form = binary[i]
                if form is None:
                    text = value.decode("utf-8", errors="replace")
                else:
                    try:
                        text = form[0](bytes(value))
                    except ValueError:
                        raise ValueWithheld(i + 1, self.column_names[i]) from None
                clean = detector.redact(text)
                if clean is not text and clean != text:
                    if form is None:
                        out[i] = clean.encode()
                    elif form[1] is None:
                        raise ValueWithheld(i + 1, self.column_names[i])
                    else:
                        out[i] = form[1](clean)
        return out


def screen_text(text: str | None, *, scrub: bool, detector: Detector | None, what: str = "error") -> str | None:
    """One error or notice field as the client may see it."""
    if text is None:
        return None
    if scrub:
        return f"{what} text withheld because the statement reads masked columns"
    return detector.redact(text) if detector is not None else text


# ErrorResponse / NoticeResponse fields that carry free text (PostgreSQL protocol field codes):
# message, detail, hint, context, internal query, where, and the names of schema objects.
_TEXT_FIELDS = frozenset("MDHWqstcdn")
_POSITION_FIELDS = frozenset("Pp")  # positions into a text the client did not send (it was rewritten)


def diagnostic_withheld(fields: Mapping[str, str]) -> bool:
    """A DEBUG or LOG message: the server's own tracing, which can quote the statement as rewritten upstream
    (the masks' derived keys in it). Neither door passes one on; ``client_min_messages`` is bounded to
    notice and up (policy/builtins.py ``BOUNDED_SETTINGS``), so this is the second net."""
    severity = (fields.get("V") or fields.get("S") or "").upper()
    return severity.startswith("DEBUG") or severity == "LOG"


def screen_error_fields(fields: Mapping[str, str], *, scrub: bool, detector: Detector | None,
                        what: str = "error") -> dict[str, str]:
    """Every field of an ErrorResponse/NoticeResponse screened the same way for both doors.

    Severity, SQLSTATE, file/line/routine pass; positions are dropped (they point into the text
    the gateway sent upstream); text fields go through :func:`screen_text`, and when ``scrub``
    holds only the message survives, as a sentence saying the text was withheld.
    """
    out: dict[str, str] = {}
    for code, value in fields.items():
        if code in _POSITION_FIELDS:
            continue
        if code in _TEXT_FIELDS:
            if scrub and code != "M":
                continue
            screened = screen_text(value, scrub=scrub, detector=detector, what=what)
            if screened is not None:
                out[code] = screened
        else:
            out[code] = value
    return out
