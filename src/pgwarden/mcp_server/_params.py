"""Tool parameters bound into the statement text, so the policy decides the text that runs.

``params`` of ``query``/``execute`` fill ``$1 … $n``. They are spliced in as SQL literals (quoted by
psycopg, ``E''`` when needed) at the places the parser found the ``ParamRef`` nodes, never by text
search, so a ``$1`` inside a string literal or a comment is left alone. The policy then decides,
masks and audits the exact text sent upstream, and an approval binds to it: one text, one verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pglast
from pglast import ast
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
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, int) else pgsql.quote(repr(value)).strip()
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    return pgsql.quote(str(value)).strip()


def bind_parameters(text: str, params: Sequence[Any] | None) -> str:
    """``text`` with ``$n`` replaced by the literal of ``params[n-1]``; no params: ``text`` unchanged."""
    if not params:
        return text
    try:
        tree = pglast.parse_sql(text)
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
    data = text.encode()  # pglast locations are byte offsets
    out, last = [], 0
    for location, number in sorted(visitor.found):
        end = location + 1 + len(str(number))
        out.append(data[last:location])
        out.append(_literal(params[number - 1]).encode())
        last = end
    out.append(data[last:])
    return b"".join(out).decode()
