"""The mask rewrite: masked values substituted inside the statement, before any expression sees them.

Every read reference to a relation that carries a masked column for the principal (``FROM t``,
``JOIN t``, ``TABLE t``, ``COPY t TO STDOUT``, at any depth) is replaced in the text sent upstream
by a derived table of the same name and column order, in which each masked column is already
masked by its strategy::

    SELECT c.email FROM customers c WHERE …
    SELECT c.email FROM (SELECT "id", "full_name", <hash of "email"> AS "email", … FROM ONLY?
                         "public"."customers") c WHERE …

Conditions, aggregates, joins, set operations, functions, ordering, JSON and whole-row values
then all work on masked values: there is no oracle left to close, by construction. The
replacement is spliced at the byte offsets libpg_query reports for the RangeVar (so literals and
everything else stay as the client wrote them); the lexer (``pglast.parser.scan``) finds where the
qualified name ends and whether ``ONLY``/``TABLE`` precede it.

Everything spliced in is schema-qualified (``pg_catalog.sha256``, ``"public"."customers"``) and
avoids operators (resolved through the search_path) and backslashes (whose meaning depends on
``standard_conforming_strings``). Mask expressions per strategy and type are documented in
docs/policy.md, "Masking inside the query"; their semantics follow :mod:`pgwarden.policy.masking`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from pglast import parser

from ..analysis import ColumnId, RelationRef
from ..language import ColumnMask, MaskStrategy
from ..masking import HASH_HEX_CHARS, HASH_PREFIX, MASKED, hmac_pads

# format_type() names of the text-like types whose masked value keeps the column's (base) type.
_TEXT_LIKE = {"text": "pg_catalog.text", "character varying": "pg_catalog.varchar",
              "character": "pg_catalog.bpchar", "name": "pg_catalog.name", "bpchar": "pg_catalog.bpchar",
              "varchar": "pg_catalog.varchar"}
_TYPMOD = re.compile(r"\(.*\)")
_LABEL = "[[:alnum:]](?:[[:alnum:]_-]{0,61}[[:alnum:]])?"
_EMAIL = f"^.+@((?:{_LABEL}[.])+{_LABEL})$"
# Python's str.strip() whitespace, the ASCII part: built with chr() so no escape is needed.
_BLANKS = "pg_catalog.concat(' ', pg_catalog.chr(9), pg_catalog.chr(10), pg_catalog.chr(11), " \
          "pg_catalog.chr(12), pg_catalog.chr(13))"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def text_type(type_name: str) -> str | None:
    """The SQL type a text-like column's masked value keeps (typmod dropped), or None for other types."""
    if not type_name or type_name.endswith("]"):
        return None if type_name else "pg_catalog.text"
    base = _TYPMOD.sub("", type_name).strip()
    found = _TEXT_LIKE.get(base)
    if found is not None:
        return found
    if base == "citext" or base.endswith(".citext"):
        return type_name
    return None


def _null_of(type_name: str) -> str:
    return f"NULL::{type_name or 'pg_catalog.text'}"


def _not_null(col: str) -> str:
    # num_nulls sees SQL NULL only (a composite of NULL fields is not NULL to it, unlike IS NULL)
    return f"pg_catalog.int4eq(pg_catalog.num_nulls({col}), 0)"


def _text_of(col: str, type_name: str) -> str:
    # The value's text form, as the wire carries it and the Python maskers see it: the type's output
    # function (concat() calls it; bpchar keeps its padding, boolean gives t/f).
    # Types whose text form depends on session settings (DateStyle, IntervalStyle, TimeZone,
    # bytea_output, extra_float_digits) are rendered in a fixed form instead: otherwise a client could
    # change a setting and see another part of the value (keep_last of a date under ISO, then German).
    base = _TYPMOD.sub("", type_name).strip()
    if base in ("text", "character varying", "varchar"):
        return f"{col}::pg_catalog.text"
    fixed = _FIXED_TEXT.get(base)
    if fixed is not None:
        return fixed.format(col=col)
    return f"pg_catalog.concat({col})"


_FIXED_TEXT = {
    "date": "pg_catalog.to_char({col}, 'YYYY-MM-DD')",
    "timestamp without time zone": "pg_catalog.to_char({col}, 'YYYY-MM-DD HH24:MI:SS.US')",
    "timestamp with time zone": "pg_catalog.to_char(({col}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    "time without time zone": "pg_catalog.to_char({col}, 'HH24:MI:SS.US')",
    "interval": "(pg_catalog.extract(epoch FROM {col}))::pg_catalog.text",
    "bytea": "pg_catalog.encode({col}, 'hex')",
    "real": "(({col})::pg_catalog.numeric)::pg_catalog.text",
    "double precision": "(({col})::pg_catalog.numeric)::pg_catalog.text",
}


def mask_expression(col: str, type_name: str, strategy: MaskStrategy, *, keep: int = 4,
                    key: bytes | None = None) -> str:
    """The SQL expression masking column ``col`` (already quoted) of type ``type_name``."""
    keeps = text_type(type_name)
    if strategy is MaskStrategy.NULL:
        return _null_of(type_name)
    if strategy is MaskStrategy.REDACT:
        if keeps is None:
            return _null_of(type_name)
        return f"(CASE WHEN {_not_null(col)} THEN {_literal(MASKED)} END)::{keeps}"
    t = _text_of(col, type_name)
    if strategy is MaskStrategy.HASH:
        if not key:
            raise ValueError("the hash strategy needs a key")
        inner, outer = hmac_pads(key)
        body = (f"pg_catalog.textcat({_literal(HASH_PREFIX)}, pg_catalog.substr(pg_catalog.encode("
                f"pg_catalog.sha256(pg_catalog.byteacat(pg_catalog.decode('{outer}', 'hex'), "
                f"pg_catalog.sha256(pg_catalog.byteacat(pg_catalog.decode('{inner}', 'hex'), "
                f"pg_catalog.convert_to({t}, 'UTF8'))))), 'hex'), 1, {HASH_HEX_CHARS}))")
    elif strategy is MaskStrategy.KEEP_LAST:
        stars = f"pg_catalog.repeat('*', pg_catalog.length({t}))"
        if keep <= 0:
            body = stars
        else:
            pattern = "[^- ]" + (f"(?:[- ]*[^- ]){{{keep - 1}}}" if keep > 1 else "") + "[- ]*$"
            tail = f"pg_catalog.substring({t}, '{pattern}')"
            # The common case first, as masking.py's _keep_last_text takes it: longer than ``keep`` and
            # no separator among the last keep + 1 characters — stars, then the last ``keep`` as they
            # are; two regular expressions per row otherwise (PostgreSQL evaluates each occurrence of
            # ``t``, and the regex path cost a 10⁶-row read about a third of its speed).
            last = f"pg_catalog.\"right\"({t}, {keep + 1})"
            fast = (f"pg_catalog.int4gt(pg_catalog.length({t}), {keep}) AND "
                    f"pg_catalog.int4eq(pg_catalog.strpos({last}, '-'), 0) AND "
                    f"pg_catalog.int4eq(pg_catalog.strpos({last}, ' '), 0)")
            body = (f"CASE WHEN {fast} THEN pg_catalog.textcat(pg_catalog.repeat('*', pg_catalog.int4mi("
                    f"pg_catalog.length({t}), {keep})), pg_catalog.\"right\"({t}, {keep})) "
                    f"WHEN pg_catalog.int4gt(pg_catalog.length(pg_catalog.translate({t}, '- ', '')), "
                    f"{keep}) THEN pg_catalog.textcat(pg_catalog.repeat('*', pg_catalog.int4mi("
                    f"pg_catalog.length({t}), pg_catalog.length({tail}))), {tail}) ELSE {stars} END")
    else:  # EMAIL_DOMAIN
        domain = f"pg_catalog.substring(pg_catalog.btrim({t}, {_BLANKS}), '{_EMAIL}')"
        body = (f"CASE WHEN pg_catalog.int4le(pg_catalog.length({domain}), 253) "
                f"THEN pg_catalog.textcat('***@', {domain}) ELSE {_literal(MASKED)} END")
    expr = f"CASE WHEN {_not_null(col)} THEN {body} END"
    return f"({expr})::{keeps}" if keeps is not None else f"({expr})::pg_catalog.text"


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """How one column of a wrapped relation is selected: raw (None) or masked by ``mask``."""

    mask: ColumnMask | None
    whole: bool = False  # a view output computed from a masked column: NULL of its type


def derived_table(ref: RelationRef, plans: list[ColumnPlan], keys: dict[int, bytes]) -> str:
    """``(SELECT … FROM [ONLY] "schema"."name")`` with the masked columns masked."""
    items = []
    for (name, type_name, _, _), plan in zip(ref.columns, plans, strict=True):
        col = quote_ident(name)
        if plan.mask is None:
            items.append(col)
            continue
        if plan.whole:
            expr = _null_of(type_name)
        else:
            expr = mask_expression(col, type_name, plan.mask.strategy, keep=plan.mask.keep,
                                   key=keys.get(id(plan.mask)))
        items.append(f"{expr} AS {col}")
        # (a derived table must have at least one column; relations always do)
    only = "" if ref.inherit else "ONLY "
    return f"(SELECT {', '.join(items) or 'NULL'} FROM {only}{quote_ident(ref.schema)}.{quote_ident(ref.name)})"


class Splice(NamedTuple):
    """One replacement in the client's text: characters [start, end) become ``text``.

    A named tuple (immutable, compared by value) rather than a frozen dataclass: a shape-cache hit
    of a masked statement builds its splices anew, and a frozen dataclass costs a microsecond each."""

    start: int
    end: int
    text: str


_new_splice = tuple.__new__  # a Splice without the Python __new__ of a named tuple


class RewriteError(ValueError):
    """The text around a relation reference is not what the rewrite expects: refuse, never guess."""


def _tokens(sql: str):
    return parser.scan(sql)


def splices_for(sql: str, items: list[tuple[RelationRef, str, list[str] | None]]) -> list[Splice]:
    """Where each derived table goes in ``sql`` (character offsets), and what replaces what.

    ``items`` pairs each reference with its derived table, and for the relation of a
    ``COPY t [(cols)] TO STDOUT`` the columns copied: that becomes ``COPY (SELECT cols FROM (…) AS t)``.
    """
    found = _plain_splices(sql, items)
    return found if found is not None else scanned_splices(sql, items)


# -- splices found without the lexer, for plainly written references ------------------------------
#
# pglast's scan builds a Python object per token of the whole text, which costs more than the rest of
# a masked verdict. Most references are written plainly: ``[ONLY] [schema.]name`` on one line with its
# keyword, followed by an alias, a keyword, ``,``, ``)``, ``;`` or the end. For those, the tokens the
# splice depends on are read around the reference's location (a token start, from the parse tree):
# forwards, the qualified name, whose last part must be the relation's name and the one before its
# schema; backwards, over spaces and tabs only, the word before (ONLY, TABLE) or ``(``. Anything that
# could hide a token from that reading — a newline before the reference (a ``--`` comment may end
# there), a comment, a quote or operator next to a name, ``*``, a COPY column list, non-ASCII text —
# sends the whole text to the lexer instead (``scanned_splices``), and so does any disagreement with
# the parse tree (ONLY found but the reference inherits, or the reverse).

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_QUALIFIED = re.compile(rf"{_IDENT}(?:[ \t\n\r\f\v]*\.[ \t\n\r\f\v]*{_IDENT}){{0,2}}")
_PART = re.compile(_IDENT)
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
_BEFORE_WORD = frozenset(" \t\f\v(),;")
_AFTER_NAME = frozenset(" \t\n\r\f\v,;)")
_OTHER = ""


def _word_before(sql: str, j: int) -> tuple[int, str] | None:
    """The token just before position ``j``, skipping spaces and tabs: (start, upper-cased word), (start,
    "(") or (j, "") for any other token (or none); None when it cannot be told without the lexer."""
    while j > 0 and sql[j - 1] in " \t\f\v":
        j -= 1
    if j == 0:
        return (0, _OTHER)
    p = sql[j - 1]
    if p in "\n\r/":
        return None  # a comment may end here, and hide the real token before it
    if p == "(":
        return (j - 1, "(")
    if p in _WORD_CHARS:
        k = j - 1
        while k > 0 and sql[k - 1] in _WORD_CHARS:
            k -= 1
        if k > 0 and sql[k - 1] not in _BEFORE_WORD:
            return None
        return (k, sql[k:j].upper())
    return (j, _OTHER)


def _part_name(part: str) -> str:
    return part[1:-1].replace('""', '"') if part[0] == '"' else part.lower()


def _plain_splices(sql: str, items: list[tuple[RelationRef, str, list[str] | None]]) -> list[Splice] | None:
    if not sql.isascii():
        return None
    out: list[Splice] = []
    seen: set[int] = set()
    n = len(sql)
    for ref, body, copy_columns in items:
        if ref.location in seen:
            continue
        seen.add(ref.location)
        if copy_columns is not None:
            return None
        name = _QUALIFIED.match(sql, ref.location)
        if name is None:
            return None
        parts = _PART.findall(name.group())
        if _part_name(parts[-1]) != ref.name or (len(parts) > 1 and _part_name(parts[-2]) != ref.schema):
            return None
        start, end = name.start(), name.end()
        if end < n and sql[end] not in _AFTER_NAME:
            return None
        after = end
        while after < n and sql[after] in " \t\n\r\f\v":
            after += 1
        if after < n and (sql[after] in ".*(\"'" or sql.startswith(("--", "/*"), after)):
            return None
        before = _word_before(sql, start)
        if before is None:
            return None
        only = False
        if before[1] == "ONLY":
            only = True
            start = before[0]
            before = _word_before(sql, start)
        elif before[1] == "(" and after < n and sql[after] == ")":
            inner = _word_before(sql, before[0])
            if inner is None:
                return None
            if inner[1] == "ONLY":
                only = True
                start, end = inner[0], after + 1
                before = _word_before(sql, start)
        if before is None or only == ref.inherit:
            return None  # the parse tree says otherwise: let the lexer decide
        out.append(_reference_splice(ref, body, start, end, before[0] if before[1] == "TABLE" else None))
    return _in_order(out)


def scanned_splices(sql: str, items: list[tuple[RelationRef, str, list[str] | None]]) -> list[Splice]:
    """``splices_for`` with the whole text lexed: every token around each reference read as PostgreSQL does."""
    tokens = _tokens(sql)
    starts = {tok.start: i for i, tok in enumerate(tokens)}
    ascii_only = sql.isascii()
    encoded = None if ascii_only else sql.encode()
    out: list[Splice] = []
    seen: set[int] = set()
    for ref, body, copy_columns in items:
        if ref.location in seen:
            continue  # a recursive CTE walked twice: one reference
        seen.add(ref.location)
        loc = ref.location if ascii_only else len(encoded[:ref.location].decode(errors="replace"))
        i = starts.get(loc)
        if i is None:
            raise RewriteError(f"no token at the reference to {ref.schema}.{ref.name}")
        last = i
        while last + 2 < len(tokens) and tokens[last + 1].name == "ASCII_46":
            last += 2  # schema . name (. more)
        start, end = tokens[i].start, tokens[last].end + 1
        if ref.inherit and last + 1 < len(tokens) and tokens[last + 1].name == "ASCII_42":
            end = tokens[last + 1].end + 1  # legacy "t *": with descendants, as the default
            last += 1
        before = i - 1
        if before >= 0 and tokens[before].name == "ONLY":
            start = tokens[before].start
            before -= 1
        elif (before >= 1 and tokens[before].name == "ASCII_40" and tokens[before - 1].name == "ONLY"
              and last + 1 < len(tokens) and tokens[last + 1].name == "ASCII_41"):
            start, end = tokens[before - 1].start, tokens[last + 1].end + 1  # ONLY (t)
            before -= 2
        alias = quote_ident(ref.name)
        if copy_columns is not None:  # COPY t [(cols)] TO STDOUT
            if last + 1 < len(tokens) and tokens[last + 1].name == "ASCII_40":
                j = last + 1
                while j < len(tokens) and tokens[j].name != "ASCII_41":
                    j += 1
                if j >= len(tokens):
                    raise RewriteError("COPY column list is not closed")
                end = tokens[j].end + 1
            cols = ", ".join(quote_ident(c) for c in copy_columns) if copy_columns else "*"
            out.append(Splice(start, end, f"(SELECT {cols} FROM {body} AS {alias})"))
            continue
        table = tokens[before].start if before >= 0 and tokens[before].name == "TABLE" else None
        out.append(_reference_splice(ref, body, start, end, table))
    found = _in_order(out)
    if found is None:
        raise RewriteError("overlapping relation references")
    return found


def _reference_splice(ref: RelationRef, body: str, start: int, end: int, table: int | None) -> Splice:
    """The splice of one reference spanning [start, end); ``table``: where ``TABLE`` starts before it."""
    if table is not None:
        return _new_splice(Splice, (table, end, f"SELECT * FROM {body} AS {quote_ident(ref.name)}"))
    if ref.aliased:
        return _new_splice(Splice, (start, end, body))
    return _new_splice(Splice, (start, end, f"{body} AS {quote_ident(ref.name)}"))


def _in_order(out: list[Splice]) -> list[Splice] | None:
    """The splices sorted by position, or None when two overlap."""
    if len(out) < 2:
        return out
    out.sort()  # by start (then end): positions are distinct when nothing overlaps
    for a, b in itertools.pairwise(out):
        if b.start < a.end:
            return None
    return out


def apply(sql: str, splices: list[Splice] | tuple[Splice, ...]) -> str:
    parts = []
    pos = 0
    for s in splices:
        parts.append(sql[pos:s.start])
        parts.append(s.text)
        pos = s.end
    parts.append(sql[pos:])
    return "".join(parts)


def client_position(splices: tuple[Splice, ...], position: int) -> int | None:
    """Map a 1-based character position in the upstream text back to the client's text.

    None when it points inside spliced text, which the client never wrote (and must never see).
    """
    shift = 0
    for s in splices:
        up_start = s.start + shift
        up_end = up_start + len(s.text)
        if position - 1 < up_start:
            break
        if position - 1 < up_end:
            return None
        shift += len(s.text) - (s.end - s.start)
    return position - shift


__all__ = ["ColumnPlan", "RewriteError", "Splice", "SpliceTemplate", "apply", "client_position", "derived_table",
           "mask_expression", "quote_ident", "resplice", "splice_template", "splices_for", "text_type"]


class RewritePlanner:
    """Per principal's masks and catalog version: which relations are wrapped, and their derived tables.

    Memoised: the same relations recur in statement after statement. ``mask_key`` gives the derived
    key of a hash mask (see masking.derive_mask_key); without it hash masks cannot be placed.
    """

    def __init__(self, mask_key=None) -> None:
        self.mask_key = mask_key
        self._keys: dict[int, bytes | None] = {}
        self._key_errors: dict[int, str] = {}
        self._bodies: dict[tuple, tuple[str | None, frozenset[tuple[int, int]], str | None,
                                        frozenset[tuple[str, str]]]] = {}
        self._descendants: dict[str, dict[tuple[str, str], tuple[tuple[str, str], ...]]] = {}

    def key(self, mask: ColumnMask) -> bytes | None:
        k = id(mask)
        if k not in self._keys:
            try:
                self._keys[k] = self.mask_key(mask) if self.mask_key is not None else None
            except Exception as exc:  # a missing secret: the statement is refused, with the reason
                self._keys[k] = None
                self._key_errors[k] = str(exc)
        return self._keys[k]

    def descendants(self, catalog) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
        found = self._descendants.get(catalog.version)
        if found is None:
            below: dict[tuple[str, str], list[tuple[str, str]]] = {}
            for rel in catalog.relations.values():
                for ancestor in rel.ancestors:
                    schema, name = ancestor.split(".", 1)
                    below.setdefault((schema, name), []).append((rel.schema, rel.name))
            found = {k: tuple(v) for k, v in below.items()}
            if len(self._descendants) > 16:
                self._descendants.clear()
            self._descendants[catalog.version] = found
        return found

    def wrap(self, ref: RelationRef, mask_set,
             catalog) -> tuple[str | None, frozenset[tuple[int, int]], str | None, frozenset[tuple[str, str]]]:
        """(derived table or None when nothing is masked, raw masked origins, refusal or None, the tables
        whose masked values the derived table masks: the relation, its columns' sources, its descendants)."""
        key = (mask_set, catalog.version, ref.schema, ref.name, ref.inherit)
        hit = self._bodies.get(key)
        if hit is not None:
            return hit
        below = self.descendants(catalog).get((ref.schema, ref.name), ()) if ref.kind in ("r", "p") else ()
        rel = catalog.resolve_relation(ref.schema, ref.name)
        plans: list[ColumnPlan] = []
        origins: set[tuple[int, int]] = set()
        refusal = None
        any_masked = False
        for name, _type, sources, plain in ref.columns:
            found = [(src, m) for src in sources for m in [mask_set.find(src)] if m is not None]
            if ref.inherit:
                found += [(c, m) for s, t in below for c in [ColumnId(s, t, name)] for m in [mask_set.find(c)]
                          if m is not None]
            if not found:
                plans.append(ColumnPlan(None))
                continue
            any_masked = True
            _, mask = min(found, key=lambda f: f[0])
            same = all(m is mask for _, m in found)
            whole = not (plain and same)
            plans.append(ColumnPlan(mask, whole))
            if mask.strategy is MaskStrategy.HASH and not whole and self.key(mask) is None:
                why = self._key_errors.get(id(mask))
                refusal = f"no hash key is available for mask {mask.column!r}" + (f" ({why})" if why else "")
            if rel is not None and rel.oid:
                column = rel.column(name)
                if column is not None:
                    origins.add((rel.oid, column.attnum))
        body = None
        if any_masked and refusal is None:
            keys = {id(p.mask): self.key(p.mask) for p in plans
                    if p.mask is not None and p.mask.strategy is MaskStrategy.HASH and not p.whole}
            body = derived_table(ref, plans, keys)  # type: ignore[arg-type]
        covers = {(ref.schema, ref.name), *self.descendants(catalog).get((ref.schema, ref.name), ())}
        for _, _, sources, _ in ref.columns:
            covers.update((c.schema, c.table) for c in sources)
        result = (body, frozenset(origins), refusal, frozenset(covers))
        if len(self._bodies) > 50_000:
            self._bodies.clear()
        self._bodies[key] = result
        return result


_KEY_LITERAL = re.compile(r"pg_catalog\.decode\('[0-9a-f]{16,}', 'hex'\)")


def without_keys(upstream_text: str) -> str:
    """The upstream text as the audit trail may keep it: the derived hash keys spliced in are withheld."""
    return _KEY_LITERAL.sub("pg_catalog.decode('<derived key withheld>', 'hex')", upstream_text)


# -- the same rewrite for the same statement with other literals (the shape cache) -----------------
#
# A masked verdict is shared by every text of one shape (pg_query's normalisation: constants replaced
# by ``$n``, every other character kept as written), but its splices are character offsets, which move
# when a literal changes length. A SpliceTemplate keeps the client's text between its constants (the
# "segments", exactly the text the normalisation keeps) and each splice as (segment, start, end) inside
# one segment: a splice never covers a constant (it replaces names, dots, ``*``, ONLY, TABLE,
# parentheses, a COPY column list). Another text of the same shape is then split the same way, by a
# lexer for the plainest constants only, and its splices land at the same segment offsets.
#
# Why the offsets are right. Both texts must be ASCII (offsets in characters are then offsets in
# bytes, as libpg_query counts them) and hold no ``$`` (so every ``$`` of the normalisation is a
# placeholder, and the placeholders sit at the same places in both). A new text T is taken only when
# T = S0 c1 S1 … cn Sn exactly, with S0…Sn the stored segments and each ci a constant the lexer below
# accepts: then PostgreSQL's lexer sees ci as one constant token at that very place (the accepted forms
# are lexed identically by it, and nothing around them can extend them), and the segments, the same
# strings between the same token boundaries, lex to the same tokens as in the stored text. So the k-th
# structural token of T is the k-th of the stored text and every splice boundary moves by the length
# change of the constants before it. Anything else (E'' strings, booleans, exponents, a string followed
# by another on the next line, which PostgreSQL joins into one) is not taken: the text is analysed.

_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?![0-9A-Za-z_.$\x80-\uffff])")
_PLAIN_STRING = re.compile(r"'(?:[^']|'')*'")
_BLANK = re.compile(r"[ \t\n\r\f\v]*")


def _constant_end(sql: str, i: int) -> int | None:
    """End of the plain constant starting at ``sql[i]``: an integer or decimal (maybe negative), or a
    standard string; None for any other form (the caller then analyses the text)."""
    ch = sql[i:i + 1]
    if ch == "'":
        found = _PLAIN_STRING.match(sql, i)
        if found is None:
            return None
        end = found.end()
        after = _BLANK.match(sql, end).end()  # type: ignore[union-attr]
        # 'a'<newline>'b' is one constant to PostgreSQL ('--' comments may sit between): refuse both.
        if sql[after:after + 1] == "'" or sql[after:after + 2] == "--":
            return None
        return end
    if ch == "-" or "0" <= ch <= "9":
        found = _PLAIN_NUMBER.match(sql, i)
        return None if found is None else found.end()
    return None


# The same constants as one pattern, to split a whole text in one match. Each constant's extent is
# fixed by its first character (a number cannot stop before a digit, letter, '.' or '_'; a string
# cannot close on a quote followed by a quote or by a continuation), so the match, if any, is
# the one _constant_end finds constant by constant.
_CONSTANT = (r"(-?[0-9]+(?:\.[0-9]+)?(?![0-9A-Za-z_.$\x80-\uffff])"
             r"|'(?:[^']|'')*'(?![ \t\n\r\f\v]*(?:'|--)))")


@dataclass(frozen=True, slots=True)
class SpliceTemplate:
    """The splices of one masked text, placed relative to the text between its constants."""

    segments: tuple[str, ...]
    splices: tuple[tuple[int, int, int, str], ...]  # (segment index, start, end inside it, replacement)
    pattern: re.Pattern = field(compare=False)  # segments and constants: see resplice


def _segments(sql: str, normalized: str) -> list[tuple[int, int]] | None:
    """[start, end) of each segment of ``sql`` (the text between its constants), or None."""
    if not sql.isascii() or "$" in sql:
        return None
    spans: list[tuple[int, int]] = []
    i = j = 0
    while True:
        k = normalized.find("$", j)
        seg = normalized[j:] if k < 0 else normalized[j:k]
        if not sql.startswith(seg, i):
            return None
        spans.append((i, i + len(seg)))
        i += len(seg)
        if k < 0:
            return spans if i == len(sql) else None
        if len(spans) > 1 and not seg:
            return None  # two constants side by side: not a plain shape
        m = k + 1
        while m < len(normalized) and "0" <= normalized[m] <= "9":
            m += 1
        if m == k + 1:
            return None
        end = _constant_end(sql, i)
        if end is None:
            return None
        i, j = end, m


def splice_template(sql: str, normalized: str, splices: tuple[Splice, ...]) -> SpliceTemplate | None:
    """The template of ``sql``'s splices, or None when the text is not plain enough to share them."""
    spans = _segments(sql, normalized)
    if spans is None:
        return None
    placed = []
    for s in splices:
        index = next((n for n, (a, b) in enumerate(spans) if a <= s.start and s.end <= b), None)
        if index is None:
            return None  # a splice over a constant: never expected; refuse to share it
        a = spans[index][0]
        placed.append((index, s.start - a, s.end - a, s.text))
    segments = tuple(sql[a:b] for a, b in spans)
    pattern = re.compile(_CONSTANT.join(re.escape(seg) for seg in segments), re.DOTALL)
    return SpliceTemplate(segments, tuple(placed), pattern)


def resplice(template: SpliceTemplate, sql: str) -> tuple[Splice, ...] | None:
    """``template``'s splices placed in ``sql``, a text of the same shape; None when it cannot be
    split into the same segments around plain constants (the caller analyses it instead)."""
    if not sql.isascii() or "$" in sql:
        return None
    found = template.pattern.fullmatch(sql)
    if found is None:
        return None
    ends = found.regs  # (whole), then each constant's span: segment n starts where constant n ends
    return tuple([_new_splice(Splice, (a + (ends[n][1] if n else 0), b + (ends[n][1] if n else 0), text))
                  for n, a, b, text in template.splices])

