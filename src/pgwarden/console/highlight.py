"""Server-side SQL highlighting for the console: keywords, strings, comments, numbers — everything escaped.

A small lexer of PostgreSQL's surface syntax (not a parser): ``--`` and nested ``/* */`` comments,
``'…'`` / ``E'…'`` strings (``''`` inside), dollar-quoted ``$tag$…$tag$`` bodies, ``"quoted"``
identifiers, numbers, ``$1`` parameters and keywords. Unterminated constructs run to the end of
the text. Every piece of text goes through :func:`html.escape`, so the output is safe whatever the SQL holds.
"""

from __future__ import annotations

import html
import re

__all__ = ["highlight_sql"]

KEYWORDS = frozenset(["add", "all", "alter", "analyze", "and", "any", "as", "asc", "begin", "between", "by", "cascade", "case", "cast", "check", "column", "commit", "constraint", "copy", "create", "cross", "current_date", "current_timestamp", "current_user", "database", "default", "delete", "desc", "distinct", "do", "drop", "else", "end", "except", "exists", "explain", "false", "fetch", "for", "foreign", "from", "full", "function", "grant", "group", "having", "if", "ilike", "in", "index", "inner", "insert", "intersect", "into", "is", "join", "key", "language", "lateral", "left", "like", "limit", "lock", "not", "null", "nulls", "offset", "on", "only", "or", "order", "outer", "over", "partition", "policy", "primary", "procedure", "references", "rename", "replace", "restrict", "returning", "revoke", "right", "role", "rollback", "row", "rows", "schema", "select", "sequence", "session", "set", "show", "table", "tablespace", "temp", "temporary", "then", "to", "transaction", "trigger", "true", "truncate", "type", "union", "unique", "update", "user", "using", "vacuum", "values", "view", "when", "where", "window", "with"])

_TOKEN = re.compile(r"""
    (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*)
  | (?P<string>[eE]?'(?:[^']|'')*(?:'|$))
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$)
  | (?P<ident>"(?:[^"]|"")*(?:"|$))
  | (?P<param>\$\d+)
  | (?P<number>\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
""", re.VERBOSE | re.DOTALL)


def _span(kind: str, text: str) -> str:
    return f'<span class="sql-{kind}">{html.escape(text)}</span>'


def _block_comment_end(sql: str, start: int) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(sql)


def highlight_sql(sql: str) -> str:
    """HTML for ``sql`` (to put inside ``<pre><code>``): escaped text with ``sql-*`` spans."""
    out: list[str] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.search(sql, pos)
        if m is None:
            out.append(html.escape(sql[pos:]))
            break
        out.append(html.escape(sql[pos:m.start()]))
        kind = m.lastgroup if m.lastgroup != "tag" else "dollar"
        end = m.end()
        if m.group("block_comment"):
            end = _block_comment_end(sql, m.start())
            out.append(_span("comment", sql[m.start():end]))
        elif m.group("line_comment"):
            out.append(_span("comment", m.group()))
        elif m.group("string"):
            out.append(_span("string", m.group()))
        elif m.group("dollar"):
            delimiter = m.group("dollar")
            close = sql.find(delimiter, m.end())
            end = len(sql) if close < 0 else close + len(delimiter)
            out.append(_span("string", sql[m.start():end]))
        elif m.group("ident"):
            out.append(_span("ident", m.group()))
        elif m.group("param"):
            out.append(_span("param", m.group()))
        elif m.group("number"):
            out.append(_span("number", m.group()))
        elif m.group("word") and m.group().lower() in KEYWORDS:
            out.append(_span("keyword", m.group()))
        else:
            assert kind is not None
            out.append(html.escape(m.group()))
        pos = end
    return "".join(out)
