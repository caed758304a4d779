"""Lineage values, FROM-item entries and scopes: the data the query walker resolves names in.

A :class:`Value` is the lineage of one value (the base columns it derives from,
and whether it is one column's value exactly). An :class:`Entry` is one FROM
item — a relation, a sub-query, a CTE reference, a function, a join — with its
columns when they are known. A :class:`Scope` is one query level's entries and
CTEs, chained to the enclosing level for correlated references. :class:`Facts`
accumulates what one top-level statement touches while it is walked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis import ColumnId, FunctionCall, OutputColumn, RelationAccess, StatementClass

WILDCARD = "*"
SYSTEM_COLUMNS = frozenset({"tableoid", "ctid", "xmin", "xmax", "cmin", "cmax"})


@dataclass(slots=True)
class Value:
    """Lineage of one value: the base columns it derives from."""

    sources: frozenset[ColumnId]
    plain: bool
    whole_row: bool = False
    origin: tuple[int, int] | None = None
    expands: bool = False  # stands for an unknown number of output columns (``*`` over a function)


EMPTY = Value(frozenset(), plain=False)


def union(values: list[Value]) -> Value:
    if not values:
        return EMPTY
    if len(values) == 1:
        v = values[0]
        return Value(v.sources, plain=False, whole_row=v.whole_row)
    sources: set[ColumnId] = set()
    whole = False
    for v in values:
        sources |= v.sources
        whole = whole or v.whole_row
    return Value(frozenset(sources), plain=False, whole_row=whole)


@dataclass(slots=True)
class Entry:
    """One FROM item: a relation, subquery, CTE reference, function or join.

    ``_as_hidden`` copies every field: a field added here must be added there.
    """

    name: str | None  # how it is referenced (alias, else relation name)
    schema: str | None = None  # for relations: lets schema.table.column references match
    columns: list[tuple[str, Value]] | None = None  # None: column set unknown
    open_table: tuple[str, str] | None = None  # unresolved relation: (schema, table)
    open_value: Value | None = None  # function/values item whose columns are unknown
    hidden: bool = False  # a join's side: reachable by its name, not by unqualified names or *
    parts: list[Entry] | None = None  # a join: its two sides
    using: list[tuple[str, Value]] | None = None  # a join: merged USING / NATURAL columns
    system_columns: bool = False  # a table: tableoid, ctid, xmin… may be referenced
    width_unknown: bool = False  # names known (aliases), but the column count may be larger

    @property
    def known(self) -> bool:
        """Whether the exact column list is known (so positions of * are exact)."""
        if self.parts is not None:
            return all(p.known for p in self.parts)
        return self.columns is not None

    def column(self, name: str) -> Value | None:
        if self.system_columns and name in SYSTEM_COLUMNS:
            return EMPTY  # tableoid, ctid, xmin…: row bookkeeping, no user data
        if self.parts is not None:
            for uname, value in self.using or ():
                if uname == name:
                    return value
            found = [v for p in self.parts for v in [p.column(name)] if v is not None]
            exact = [v for p in self.parts if p.known for v in [p.column(name)] if v is not None]
            found = exact or found
            if not found:
                return None
            return found[0] if len(found) == 1 else union(found)
        if self.columns is not None:
            for cname, value in self.columns:
                if cname == name:
                    return value
            return None
        if self.open_table is not None:
            schema, table = self.open_table
            return Value(frozenset({ColumnId(schema, table, name)}), plain=True)
        if self.open_value is not None:
            return union([self.open_value])
        return None

    def all_columns(self) -> list[tuple[str, Value]]:
        if self.width_unknown:
            # Aliases name the first columns exactly; more may follow, how many is unknown.
            merged = union([v for _, v in self.columns or ()])
            return [*(self.columns or ()),
                    ("?column?", Value(merged.sources, plain=False, whole_row=True, expands=True))]
        if self.parts is not None:
            merged = {n for n, _ in self.using or ()}
            out = list(self.using or ())
            for p in self.parts:
                out.extend((n, v) for n, v in p.all_columns() if n not in merged)
            return out
        if self.columns is not None:
            return self.columns
        if self.open_table is not None:
            schema, table = self.open_table
            return [(WILDCARD, Value(frozenset({ColumnId(schema, table, WILDCARD)}), plain=False, whole_row=True,
                                     expands=True))]
        if self.open_value is not None:
            merged = union([self.open_value])
            return [("?column?", Value(merged.sources, plain=False, whole_row=True, expands=True))]
        return []

    def whole_row(self) -> Value:
        values = [v for _, v in self.all_columns()]
        merged = union(values)
        return Value(merged.sources, plain=False, whole_row=True)


@dataclass(slots=True, init=False)
class Scope:
    """One query level's FROM items and CTEs. (``__init__`` by hand: one is built per query level.)"""

    entries: list[Entry]
    parent: Scope | None
    ctes: dict[str, list[tuple[str, Value]]]

    def __init__(self, entries: list[Entry] | None = None, parent: Scope | None = None) -> None:
        self.entries = [] if entries is None else entries
        self.parent = parent
        self.ctes = {}

    def find_cte(self, name: str) -> list[tuple[str, Value]] | None:
        scope: Scope | None = self
        while scope is not None:
            cols = scope.ctes.get(name)
            if cols is not None:
                return cols
            scope = scope.parent
        return None


@dataclass(slots=True, init=False)
class Facts:
    """Accumulated facts of one top-level statement (mutable while walking).

    Built once per statement: the hand-written ``__init__`` (literals instead of
    ten ``default_factory`` calls) is a measurable share of a verdict's cost.
    """

    relations: list[RelationAccess]
    functions: list[FunctionCall]
    predicate_sources: set[ColumnId]
    written_sources: set[ColumnId]
    whole_row_refs: set[str]
    classes: set[StatementClass]
    nested: list[str]
    unknown: list[str]
    missing_where: bool
    referenced: set[ColumnId]  # every column read anywhere
    relation_refs: list  # RelationRef of every relation read by reference (the mask rewrite's splice points)
    written_columns: list  # (schema | None, table, columns) INSERT / UPDATE / MERGE / COPY FROM assign

    def __init__(self) -> None:
        self.relations = []
        self.functions = []
        self.predicate_sources = set()
        self.written_sources = set()
        self.whole_row_refs = set()
        self.classes = set()
        self.nested = []
        self.unknown = []
        self.missing_where = False
        self.referenced = set()
        self.relation_refs = []
        self.written_columns = []


def _as_hidden(entry: Entry) -> Entry:
    # What dataclasses.replace(entry, hidden=True) gives, at a fraction of its cost: every field of Entry.
    return Entry(entry.name, entry.schema, entry.columns, entry.open_table, entry.open_value, True,
                 entry.parts, entry.using, entry.system_columns, entry.width_unknown)


def _rename(cols: list[tuple[str, Value]], names: list[str]) -> list[tuple[str, Value]]:
    if not names:
        return cols
    out = [(names[i] if i < len(names) else n, v) for i, (n, v) in enumerate(cols)]
    return out


def to_outputs(cols: list[tuple[str, Value]]) -> tuple[OutputColumn, ...]:
    out = []
    for n, v in cols:
        out.append(OutputColumn(n, v.sources, v.plain, v.whole_row, v.origin, v.expands))
    return tuple(out)
