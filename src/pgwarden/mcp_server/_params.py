"""Tool parameters bound into the statement text, so the policy decides the text that runs.

``params`` of ``query``/``execute`` fill ``$1 … $n``. They are spliced in as SQL literals (quoted by
psycopg, ``E''`` when needed) at the places the parser found the ``ParamRef`` nodes, never by text
search, so a ``$1`` inside a string literal or a comment is left alone. The policy then decides,
masks and audits the exact text sent upstream, and an approval binds to it: one text, one verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pglast
from pglast import ast, parser
from pglast.visitors import Visitor
from psycopg import sql as pgsql

from pgwarden.errors import PgwardenError

__all__ = ["ParameterError", "bind_parameters"]


class ParameterError(PgwardenError):
    sqlstate = "08P01"


class _Params(Visitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, int]] = []  # (location, number)

    def visit_ParamRef(self, ancestors, node: ast.ParamRef) -> None:
        self.found.append((node.location, node.number))


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # a negative one bracketed: after a minus, "0-$1" with -1 must not read as "0--1", a comment
        return f"({value})" if value < 0 else str(value)
    if isinstance(value, float):
        return pgsql.quote(repr(value)).strip()
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    return pgsql.quote(str(value)).strip()


_PLACEHOLDER = re.compile(r"\$([0-9]+)")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")


def _tokens(text: str) -> list[str]:
    return [t.name for t in parser.scan(text)]


def bind_parameters(text: str, params: Sequence[Any] | None) -> str:
    """``text`` with ``$n`` replaced by the literal of ``params[n-1]``; no params: ``text`` unchanged.

    The placeholders are the scanner's PARAM tokens the parser took as parameters (never a ``$1`` inside a
    string, a comment or a name), spliced by character offset; the result is scanned again and must read
    as the statement with each placeholder replaced by its literal's tokens — nothing merged, commented
    out or split — or it is refused."""
    if not params:
        return text
    try:
        tree = pglast.parse_sql(text)
        scanned = parser.scan(text)
    except pglast.parser.ParseError as exc:
        raise ParameterError("syntax_error", f"the statement does not parse: {exc}", sqlstate="42601") from None
    visitor = _Params()
    visitor(tree)
    numbers = {n for _, n in visitor.found}
    if not numbers:
        raise ParameterError("parameters_unused", "params were given but the statement has no $1 … $n "
                             "placeholders; remove params or use $1, $2 … in the SQL")
    if max(numbers) > len(params) or min(numbers) < 1:
        raise ParameterError("parameters_missing", f"the statement uses ${max(numbers)} but {len(params)} "
                             "param(s) were given")
    if len(params) > max(numbers):
        raise ParameterError("parameters_extra", f"{len(params)} params given, the statement uses "
                             f"${max(numbers)} at most")
    params_at = {location for location, _ in visitor.found}
    placeholders = [t for t in scanned if t.name == "PARAM"]
    if {t.start for t in placeholders} != params_at:
        raise ParameterError("parameters_unclear", "the statement's $n placeholders could not be told apart "
                             "from the rest of its text; write each as $1, $2 … on its own")
    out: list[str] = []
    expected: list[str] = []
    last = 0
    for token in scanned:
        if token.name != "PARAM":
            expected.append(token.name)
            continue
        written = text[token.start:token.end + 1]
        match = _PLACEHOLDER.fullmatch(written)
        follows = text[token.end + 1:token.end + 2]
        if match is None or (follows and _NAME_CHAR.match(follows)):
            raise ParameterError("parameters_unclear", f"placeholder {written}{follows!s} runs into the text "
                                 "after it; put a space or an operator after $n")
        literal = _literal(params[int(match.group(1)) - 1])
        out.append(text[last:token.start])
        out.append(literal)
        expected.extend(_tokens(literal))
        last = token.end + 1
    out.append(text[last:])
    bound = "".join(out)
    try:
        reread = _tokens(bound)
    except pglast.parser.ParseError:
        reread = []
    if reread != expected:
        raise ParameterError("parameters_change_statement", "with these params spliced in, the statement would "
                             "not read as written (a value would run into the text around its placeholder); "
                             "put spaces around $n or pass the value differently")
    return bound
