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

Binary-format columns are refused whenever anything would have to look at them: a detector
cannot read a binary value, and a masker must not guess its layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pgwarden.errors import PgwardenError

from .detectors import Detector
from .verdict import MaskAction, StatementPlan

__all__ = ["ColumnInfo", "ResultScreen", "ResultShapeMismatch", "screen_error_fields", "screen_text"]

Masker = Callable[[object], "str | None"]

# Types whose text form cannot carry what the detectors look for (a 16-digit card number does
# not fit an int4; a boolean holds no e-mail): the detectors skip these and read everything
# else — text, numeric, json, arrays, and any domain or user-defined type, whose OIDs are unknown.
_PLAIN_OIDS = frozenset({
    16, 21, 23, 26, 28, 29, 700, 701,  # bool, int2, int4, oid, xid, cid, float4, float8
    1082, 1083, 1114, 1184, 1186, 1266,  # date, time, timestamp, timestamptz, interval, timetz
    2950, 3220,  # uuid, pg_lsn
})


class ResultShapeMismatch(PgwardenError):
    """PostgreSQL returned a result the analysis did not predict: it is withheld whole."""

    sqlstate = "XX000"

    def __init__(self, message: str) -> None:
        super().__init__("result_shape_mismatch", message + "; the result is withheld", hint=(
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

    __slots__ = ("_detect", "_detector", "_maskers", "column_names", "gated", "masked_positions", "passthrough",
                 "raw_hits")

    def __init__(self, column_names: tuple[str, ...], maskers: tuple[Masker | None, ...],
                 detect: tuple[bool, ...], detector: Detector | None) -> None:
        self.column_names = column_names
        self._maskers = maskers
        self._detect = detect
        self._detector = detector
        self.masked_positions = tuple(i for i, m in enumerate(maskers) if m is not None)
        self.passthrough = not self.masked_positions and not any(detect)
        # Only detectors read values: a row whose bytes ``raw_hits`` (Detector.raw_hits) finds nothing in
        # comes out of ``row`` unchanged, so a door may forward it as it came without decoding it
        self.gated = not self.masked_positions
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
        for i, col in enumerate(columns):
            if col.format != 0 and (maskers[i] is not None or detect[i]):
                raise ResultShapeMismatch(f"column {i + 1} was requested in binary format, which the gateway "
                                          "cannot screen; request text format")
        names = tuple(detector.redact(c.name) if detector is not None else c.name for c in columns)
        return cls(names, tuple(maskers), detect, detector)

    def row(self, values: Sequence[bytes | None]) -> list[bytes | None]:
        """The values of one row the client may receive."""
        out = list(values)
        if self.passthrough:
            return out
        maskers = self._maskers
        detect = self._detect
        detector = self._detector
        for i, value in enumerate(out):
            if value is None:
                continue
            masker = maskers[i]
            if masker is not None:
                masked = masker(value.decode("utf-8", errors="replace"))
                out[i] = None if masked is None else masked.encode()
            elif detect[i] and detector is not None:
                text = value.decode("utf-8", errors="replace")
                clean = detector.redact(text)
                if clean is not text and clean != text:
                    out[i] = clean.encode()
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
