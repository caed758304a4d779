"""Storage for the lineage of views and base tables, living on the catalog snapshot it came from.

A view's output lineage comes from analysing its definition (``pg_get_viewdef``) with the same
walker as any query (:meth:`~pgwarden.policy.sql._lineage.QueryWalker.view_columns`), so a masked
column stays masked through any chain of views; reading a view also reads its base relations,
whose deny lists must hold. What is computed is stored on the :class:`~pgwarden.policy.catalog.Catalog`
snapshot (``Catalog.memo``): it is valid exactly as long as that snapshot, is dropped with it when
the catalog reloads, and is never shared between two snapshots. Values are immutable once built,
so several threads may read and fill the store at once (a race computes a value twice, harmlessly).
"""

from __future__ import annotations

from ..analysis import ColumnId, FunctionCall, RelationAccess
from ..catalog import Catalog, Relation
from ._scope import Value

ViewEntry = tuple[list[tuple[str, Value]], list[RelationAccess], list[FunctionCall]]


def _store(catalog: Catalog, name: str) -> dict:
    memo = catalog.memo
    found = memo.get(name)
    if found is None:
        found = memo.setdefault(name, {})
    return found


def table_columns(rel: Relation, catalog: Catalog) -> list[tuple[str, Value]]:
    """A base table's columns as lineage values, built once per snapshot (the list is a copy)."""
    tables = _store(catalog, "tables")
    key = (rel.schema, rel.name)
    cols = tables.get(key)
    if cols is None:
        parents = [tuple(a.split(".", 1)) for a in rel.ancestors]
        cols = [
            (c.name, Value(frozenset({ColumnId(rel.schema, rel.name, c.name)}
                                     | {ColumnId(ps, pn, c.name) for ps, pn in parents}),
                           plain=True, origin=(rel.oid, c.attnum) if rel.oid else None))
            for c in rel.columns
        ]
        tables[key] = cols
    return list(cols)


def cached_view(rel: Relation, catalog: Catalog) -> ViewEntry | None:
    return _store(catalog, "views").get((rel.schema, rel.name))


def store_view(rel: Relation, catalog: Catalog, entry: ViewEntry) -> None:
    _store(catalog, "views")[(rel.schema, rel.name)] = entry


def ref_columns(rel: Relation, catalog: Catalog, cols: list[tuple[str, Value]]) -> tuple:
    """(name, type, sources, plain) of each column, for the mask rewrite; a table's built once per snapshot."""
    if rel.is_view:
        # shorter than the catalog's columns only when the view failed (unknown is set then)
        return tuple((c.name, c.type_name, v.sources, v.plain) for c, (_, v) in zip(rel.columns, cols, strict=False))
    refs = _store(catalog, "refs")
    key = (rel.schema, rel.name)
    found = refs.get(key)
    if found is None:
        found = tuple((c.name, c.type_name, v.sources, v.plain)
                      for c, (_, v) in zip(rel.columns, cols, strict=True))
        refs[key] = found
    return found
