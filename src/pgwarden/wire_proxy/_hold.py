"""Holding an extended-protocol statement for approval: collect it up to Sync, answer it after release.

A client that sends parameters uses the extended protocol: ``Parse`` (unnamed) · ``Bind`` (the values) ·
``Describe`` · ``Execute`` · ``Sync`` (psycopg, JDBC, node-postgres…). An approval binds to the exact text
*and* its values, which only ``Bind`` brings, so when ``Parse`` needs approval nothing is forwarded: the
messages up to ``Sync`` are collected here, checked to be that one-shot shape, and become one
:class:`~pgwarden.wire_proxy.connection.Hold` with its parameters. After the release, the replies the
client expects are synthesised in order (ParseComplete, BindComplete, the Describe's answer, rows,
CommandComplete); an error is one ErrorResponse, as PostgreSQL answers a failed Parse.

Anything else inside that Sync (a named statement or portal, a second Parse, Flush, a binary value) is
refused: the client gets a clear error and the server never sees the statement. Pure, no I/O.
"""

from __future__ import annotations

import decimal
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import messages as m

_NOT_ONE_SHOT = ("send it on its own as an unnamed statement: Parse, Bind, Describe, Execute, Sync "
                 "(psycopg's conn.execute(sql, params) does), without preparing it or pipelining")


class HoldRefused(Exception):
    """The collected messages are not a statement that can wait for an approval."""

    def __init__(self, message: str, hint: str = _NOT_ONE_SHOT) -> None:
        super().__init__(message)
        self.error = m.error("ERROR", "55000", f"pgwarden: {message}", hint=hint)


@dataclass
class Collecting:
    """An unnamed Parse that needs approval, and what the client sent after it, until Sync."""

    sql: str
    verdict: Any  # the Verdict that said needs_approval
    param_types: tuple[int, ...]
    parameters: tuple[str | None, ...] | None = None
    describe: str | None = None  # "S" or "P": what the client asked to have described
    executed: bool = False
    order: list[str] = field(default_factory=list)

    def add(self, msg: object) -> None:
        """Take one message of the client's; raises :class:`HoldRefused` when it breaks the shape."""
        if isinstance(msg, m.Bind):
            if msg.statement or msg.portal or self.parameters is not None:
                raise HoldRefused("a statement that needs approval must use the unnamed statement and portal")
            if any(f != 0 for f in msg.result_formats):
                raise HoldRefused("the result of a statement released by an approval is returned as text only",
                                  "ask for text results (psycopg: not a binary cursor)")
            formats = msg.param_formats
            values: list[str | None] = []
            for i, raw in enumerate(msg.params):
                fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
                oid = self.param_types[i] if i < len(self.param_types) else 0
                values.append(None if raw is None else as_text(bytes(raw), fmt, oid))
            self.parameters = tuple(values)
            self.order.append("B")
        elif isinstance(msg, m.Describe):
            if msg.name or self.describe is not None or self.executed:
                raise HoldRefused("a statement that needs approval can be described once, unnamed, before it runs")
            if msg.kind == "P" and self.parameters is None:
                raise HoldRefused("the portal of a statement that needs approval is described after its Bind")
            self.describe = msg.kind
            self.order.append("D" + msg.kind)
        elif isinstance(msg, m.Execute):
            if msg.portal or self.parameters is None or self.executed:
                raise HoldRefused("a statement that needs approval must be bound, then executed once")
            self.executed = True
            self.order.append("E")
        else:
            raise HoldRefused(f"a statement that needs approval cannot be followed by {type(msg).__name__} "
                              "before Sync")

    def complete(self) -> tuple[str | None, ...]:
        """At Sync: the parameters to hold with the text; raises when the statement was never executed."""
        if not self.executed or self.parameters is None:
            raise HoldRefused("a statement that needs approval must be executed in the same Sync as its Parse "
                              "(it cannot be prepared now and run later)")
        return self.parameters


_INTS = {21: ">h", 23: ">i", 20: ">q", 26: ">I"}
_FLOATS = {700: ">f", 701: ">d"}
_TEXTS = {25, 1043, 1042, 19, 114, 142}  # text, varchar, bpchar, name, json, xml: binary = UTF-8 text


def as_text(raw: bytes, fmt: int, oid: int) -> str:
    """A parameter value as the text an approver reads and the statement later runs with.

    Text values are taken as sent; binary values of the common scalar types are turned into
    PostgreSQL's text form; any other binary value is refused (it cannot be shown faithfully).
    """
    try:
        if fmt == 0:
            return raw.decode()
        if oid in _INTS:
            return str(struct.unpack(_INTS[oid], raw)[0])
        if oid in _FLOATS:
            return repr(struct.unpack(_FLOATS[oid], raw)[0])
        if oid == 16 and len(raw) == 1:
            return "true" if raw[0] else "false"
        if oid in _TEXTS:
            return raw.decode()
        if oid == 3802 and raw[:1] == b"\x01":
            return raw[1:].decode()  # jsonb: a version byte, then the JSON text
        if oid == 17:
            return "\\x" + raw.hex()
        if oid == 2950 and len(raw) == 16:
            return str(uuid.UUID(bytes=raw))
        if oid == 1700:
            return _numeric(raw)
    except (UnicodeDecodeError, struct.error, ValueError):
        raise HoldRefused("a parameter of a statement that needs approval could not be read",
                          "send the values in text format") from None
    raise HoldRefused(f"a binary parameter of type OID {oid} cannot be shown to an approver",
                      "send the values in text format (psycopg: cast or use str values)")


def _numeric(raw: bytes) -> str:
    ndigits, weight, sign, dscale = struct.unpack(">hhHH", raw[:8])
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    digits = struct.unpack(f">{ndigits}H", raw[8:8 + 2 * ndigits])
    value = 0
    for d in digits:
        value = value * 10000 + d
    exponent = (weight - ndigits + 1) * 4  # value * 10^exponent
    # exact: never rounded to the default context's 28 digits
    ctx = decimal.Context(prec=4 * (abs(weight) + ndigits + 2) + dscale)
    number = decimal.Decimal(value).scaleb(exponent, ctx)
    text = f"{number.quantize(decimal.Decimal(1).scaleb(-dscale), context=ctx):f}" if ndigits else f"{0:.{dscale}f}"
    return ("-" if sign == 0x4000 else "") + text


def extended_replies(hold: Collecting, replies: Sequence[m.BackendMessage]) -> list[m.BackendMessage]:
    """What the client of an extended-protocol hold receives before ReadyForQuery.

    ``replies`` are the released statement's answer as a simple query would give it (notices,
    [RowDescription, DataRow…], CommandComplete) or an ErrorResponse.
    """
    notices = [r for r in replies if isinstance(r, m.NoticeResponse)]
    errors = [r for r in replies if isinstance(r, m.ErrorResponse)]
    if errors:
        return [*notices, errors[0]]
    described = next((r for r in replies if isinstance(r, m.RowDescription)), None)
    out: list[m.BackendMessage] = [*notices, m.ParseComplete()]
    for step in hold.order:
        if step == "B":
            out.append(m.BindComplete())
        elif step == "DS":
            out.append(m.ParameterDescription(hold.param_types[:len(hold.parameters or ())]
                                              + (0,) * max(0, len(hold.parameters or ()) - len(hold.param_types))))
            out.append(described if described is not None else m.NoData())
        elif step == "DP":
            out.append(described if described is not None else m.NoData())
        elif step == "E":
            out.extend(r for r in replies if isinstance(r, (m.DataRow, m.CommandComplete)))
    return out
