"""Lineage of views and base tables, computed once per catalog version.

A view's output lineage comes from analysing its definition (``pg_get_viewdef``)
with the same walker as any query, so a masked column stays masked through any
chain of views; reading a view also reads its base relations, whose deny lists
must hold. Base tables' column values are built once per catalog version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from pglast import parser

from ._scope import Facts, Value, _rename
from ._tree import _node

if TYPE_CHECKING:
    from ._lineage import QueryWalker
from .analysis import ColumnId, FunctionCall, RelationAccess
from .catalog import Relation


class ViewLineage:
    """Output lineage of views, computed by analysing their definitions (cached per catalog)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], tuple[list[tuple[str, Value]], list[RelationAccess],
                                                      list[FunctionCall]]] = {}
        self._active: set[tuple[str, str]] = set()
        self._tables: dict[tuple[str, str, str], list[tuple[str, Value]]] = {}

    def table_columns(self, rel: Relation, version: str) -> list[tuple[str, Value]]:
        """A base table's columns as lineage values, built once per catalog version.

        Values are never mutated after creation, so sharing them between
        analyses is safe; the list itself is copied for each use.
        """
        key = (version, rel.schema, rel.name)
        cols = self._tables.get(key)
        if cols is None:
            parents = [tuple(a.split(".", 1)) for a in rel.ancestors]
            cols = [
                (c.name, Value(frozenset({ColumnId(rel.schema, rel.name, c.name)}
                                         | {ColumnId(ps, pn, c.name) for ps, pn in parents}),
                               plain=True, origin=(rel.oid, c.attnum) if rel.oid else None))
                for c in rel.columns
            ]
            if len(self._tables) > 50_000:
                self._tables.clear()
            self._tables[key] = cols
        return list(cols)

    def columns(self, rel: Relation, walker: QueryWalker) -> list[tuple[str, Value]]:
        key = (walker.catalog.version, rel.schema, rel.name)
        cached = self._cache.get(key)
        if cached is None:
            if (rel.schema, rel.name) in self._active:
                walker.facts.unknown.append(f"recursive view {rel.qualified}")
                return []
            self._active.add((rel.schema, rel.name))
            try:
                facts = Facts()
                inner = type(walker)(walker.catalog, facts, self)
                inner.via_view = rel.qualified
                tree = orjson.loads(parser.parse_sql_json(rel.view_sql or ""))
                kind, node = _node(tree["stmts"][0]["stmt"])
                cols = inner.query(kind, node, None, nested_label="view")
                names = [c.name for c in rel.columns]
                cols = _rename(cols, names)
                if facts.unknown:
                    walker.facts.unknown.extend(f"view {rel.qualified}: {u}" for u in facts.unknown)
                cached = (cols, facts.relations, facts.functions)
                self._cache[key] = cached
            except Exception as exc:
                walker.facts.unknown.append(f"view {rel.qualified} could not be analysed: {exc}")
                return []
            finally:
                self._active.discard((rel.schema, rel.name))
        cols, relations, functions = cached
        # Reading a view reads its base relations: deny lists must hold through views.
        walker.facts.relations.extend(
            RelationAccess(r.schema, r.name, r.access, r.resolved, r.via_view or rel.qualified, r.kind)
            for r in relations
        )
        walker.facts.functions.extend(functions)
        # A view's own output names must be the catalog's, but lineage is what matters.
        return [(n, Value(v.sources, plain=v.plain, whole_row=v.whole_row, origin=None)) for n, v in cols]
