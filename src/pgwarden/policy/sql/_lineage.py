"""Column lineage over pglast's JSON parse tree: the query walker (scopes and entries live in _scope).

The analyser walks libpg_query's JSON form (``pglast.parser.parse_sql_json``)
rather than pglast's Python AST objects: the JSON is about ten times cheaper to
obtain, and a decision must cost microseconds on the proxy's hot path.

A :class:`QueryWalker` turns one query (SELECT / INSERT / UPDATE / DELETE /
MERGE, at any depth) into output columns, each carrying the set of base columns
it derives from. Names resolve the way PostgreSQL resolves them: a FROM item is
reachable by its alias (or its relation name when it has none), an unqualified
column is looked for in the FROM items of the innermost query level first and
then outwards (correlated subqueries), a bare name that matches no column but a
FROM item is a whole-row reference. Where the catalog cannot say which columns
a relation has, references to it still carry ``schema.table.column`` lineage
built from the names, and ``*`` or a whole-row reference yields the wildcard
column ``schema.table.*`` so the decision can refuse rather than guess.

Expressions are walked generically — every key of every node — so a node type
this module has never heard of still contributes the columns and functions
inside it. Only nodes that change scope or meaning are special-cased.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from pglast import parser

from ..analysis import Access, ColumnId, FunctionCall, RelationAccess, RelationRef, StatementClass
from ..builtins import PINNED_CATALOGS
from ..catalog import Catalog, Relation
from . import _views
from ._scope import EMPTY, WILDCARD, Entry, Facts, Scope, Value, _as_hidden, _rename, union
from ._tree import (
    Node,
    _figure_name,
    _integer_constant,
    _is_column_ref,
    _is_constant,
    _known_width,
    _node,
    _strings,
    output_name,
)

# Functions whose arguments leave through a side channel rather than the result.
_SIDE_CHANNELS = frozenset({"pg_notify", "set_config"})
_CONST_TYPES = (("ival", "int4"), ("fval", "numeric"), ("boolval", "bool"), ("bsval", "bit"), ("sval", "unknown"))

# Keys whose values hold no column, function or sub-query: the walk skips them.
_LEAVES = frozenset({"location", "A_Const", "TypeName", "typeName", "ParamRef", "String", "Integer", "Float",
                     "Boolean", "funcname", "name", "opname", "kind", "funcformat", "limitOption", "op"})
_CONTAINERS = (dict, list)
_new_ref = tuple.__new__  # RelationRef without the Python __new__ a named tuple is given (one per reference)
# SelectStmt clauses walked after WHERE; most queries have none of them.
_LATER_CLAUSES = frozenset({"havingClause", "groupClause", "sortClause", "distinctClause", "windowClause",
                            "limitCount", "limitOffset", "lockingClause", "intoClause"})
# Keys _walk handles itself; every other key is a leaf (above) or plain structure to descend into.
_SPECIAL = frozenset({"ColumnRef", "FuncCall", "NullTest", "SubLink", "RangeVar", "SelectStmt", "InsertStmt",
                      "UpdateStmt", "DeleteStmt", "MergeStmt", "A_Expr", "TypeCast"})




def _names_read(node: Any, names) -> set[str]:
    """Unqualified relation names among ``names`` that a subtree reads (RangeVar), at any depth."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            rv = item.get("RangeVar")
            if isinstance(rv, dict) and rv.get("schemaname") is None and rv.get("relname") in names:
                found.add(rv["relname"])
            stack.extend(v for v in item.values() if isinstance(v, _CONTAINERS))
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _pin(where: Node | None, alias: str, keys: tuple[str, str, str | None]) -> dict[str, frozenset[str]] | None:
    """What the top-level AND-ed ``col = 'literal'`` / ``col IN (...)`` conjuncts of ``where`` pin ``keys`` to."""
    if not where:
        return None
    wanted = {k for k in keys if k}
    pins: dict[str, frozenset[str]] = {}
    stack = [where]
    while stack:
        node = stack.pop()
        boolean = node.get("BoolExpr") if isinstance(node, dict) else None
        if boolean is not None:
            if boolean.get("boolop") == "AND_EXPR":
                stack.extend(boolean.get("args") or ())
            continue
        expr = node.get("A_Expr") if isinstance(node, dict) else None
        if not expr or _strings(expr.get("name")) != ["="] or expr.get("kind") not in ("AEXPR_OP", "AEXPR_IN"):
            continue
        column = _pinned_column(expr.get("lexpr"), alias)
        if column not in wanted:
            continue
        right = expr.get("rexpr")
        items = right if isinstance(right, list) else [right]
        values = [_literal_text(v) if isinstance(v, dict) else None for v in items]
        if not values or any(v is None for v in values):
            continue
        found = frozenset(v for v in values if v is not None)
        pins[column] = pins[column] & found if column in pins else found
    return pins or None


def _pinned_column(node: Any, alias: str) -> str | None:
    ref = node.get("ColumnRef") if isinstance(node, dict) else None
    if not ref:
        return None
    fields = _strings(ref.get("fields"))
    if len(fields) == 1 or (len(fields) == 2 and fields[0] == alias):
        return fields[-1]
    return None


def _literal_text(node: Node) -> str | None:
    """A literal argument's text: 'x', 42, 'x'::regclass, '16385'::oid (what names an object); else None."""
    cast = node.get("TypeCast")
    if cast is not None:
        node = cast.get("arg") or {}
    const = node.get("A_Const")
    if not const:
        return None
    sval = const.get("sval")
    if sval is not None:
        return sval.get("sval")
    ival = const.get("ival")
    if ival is not None:
        return str(ival.get("ival", 0))
    return None


class QueryWalker:
    """Walks queries of one top-level statement, accumulating :class:`Facts`."""

    __slots__ = ("_next_pin", "active_views", "catalog", "facts", "pins", "via_view")

    def __init__(self, catalog: Catalog, facts: Facts, active_views: set[tuple[str, str]] | None = None) -> None:
        self.catalog = catalog
        self.facts = facts
        # Views being expanded in this walk (and the walks nested in it): the recursion guard
        # belongs to one walk, never to the process or another thread.
        self.active_views = set() if active_views is None else active_views
        self.via_view: str | None = None
        # Per read of a catalog view in builtins.PINNED_CATALOGS: the objects its WHERE pins it to
        # ({column: values}) or None; the decision allows the read only for permitted objects.
        self.pins: dict[str, list[dict[str, frozenset[str]] | None]] = {}
        self._next_pin: dict[str, frozenset[str]] | None = None

    # -- relations -------------------------------------------------------------------

    def note_relation(self, schema: str | None, name: str, access: Access,
                      persistence: str | None = None) -> Relation | None:
        if persistence == "t" and schema is None:
            schema = "pg_temp"  # CREATE TEMP … always lands in the session's temp schema
        rel = self.catalog.resolve_relation(schema, name)
        if rel is not None:
            self.facts.relations.append(
                RelationAccess(rel.schema, rel.name, access, True, self.via_view, rel.kind)
            )
            if rel.schema == "pg_catalog" and rel.name in PINNED_CATALOGS:
                self.pins.setdefault(rel.name, []).append(self._next_pin)
                self._next_pin = None
        else:
            guessed = schema or self.catalog.default_schema(name)
            self.facts.relations.append(RelationAccess(guessed, name, access, False, self.via_view, "?"))
        return rel

    def relation_entry(self, rv: Node, scope: Scope | None, access: Access = Access.READ) -> Entry:
        name = rv.get("relname", "")
        schema = rv.get("schemaname")
        alias_node = rv.get("alias")
        alias = alias_node.get("aliasname") if alias_node else None
        colaliases = _strings(alias_node.get("colnames")) if alias_node else []
        if schema is None and rv.get("catalogname") is None:
            # (a query level without CTEs of its own nor outer levels has none to find)
            cte = scope.find_cte(name) if scope is not None and access is Access.READ and (
                scope.ctes or scope.parent is not None) else None
            if cte is not None:
                return Entry(alias or name, columns=_rename(cte, colaliases))
        rel = self.note_relation(schema, name, access)
        if rel is None:
            guessed = schema or self.catalog.default_schema(name)
            entry = Entry(alias or name, schema=None if alias else guessed, open_table=(guessed, name))
            if colaliases:
                # aliased columns of an unknown relation: positions unknown, so each alias
                # may be any column of it
                wild = Value(frozenset({ColumnId(guessed, name, WILDCARD)}), plain=False, whole_row=True)
                entry.columns = [(c, wild) for c in colaliases]
                entry.open_table = None
            return entry
        if rel.view_sql is not None and rel.is_view and access in (Access.READ, Access.PLAN):
            cols = self.view_columns(rel)
        else:
            for ancestor in rel.ancestors:
                # A partition or child table holds its parent's rows: the parent's deny lists hold.
                schema_, name_ = ancestor.split(".", 1)
                self.facts.relations.append(RelationAccess(schema_, name_, access, True,
                                                           f"{rel.qualified} (inherits)", "r"))
            cols = _views.table_columns(rel, self.catalog)
        if access is Access.READ and self.via_view is None and "location" in rv:
            # Where the mask rewrite may splice a masking derived table (see policy/_rewrite.py).
            self.facts.relation_refs.append(_new_ref(RelationRef, (
                rv["location"], rel.schema, rel.name, rel.kind, bool(rv.get("inh")), alias is not None,
                _views.ref_columns(rel, self.catalog, cols))))
        return Entry(alias or rel.name, None if alias else rel.schema,
                     _rename(cols, colaliases) if colaliases else cols,
                     system_columns=rel.kind in ("r", "p", "m", "f"))

    def view_columns(self, rel: Relation) -> list[tuple[str, Value]]:
        """A view's output lineage, from analysing its definition with a walker of this walk."""
        cached = _views.cached_view(rel, self.catalog)
        if cached is None:
            key = (rel.schema, rel.name)
            if key in self.active_views:
                self.facts.unknown.append(f"recursive view {rel.qualified}")
                return []
            self.active_views.add(key)
            try:
                facts = Facts()
                inner = QueryWalker(self.catalog, facts, self.active_views)
                inner.via_view = rel.qualified
                tree = orjson.loads(parser.parse_sql_json(rel.view_sql or ""))
                kind, node = _node(tree["stmts"][0]["stmt"])
                cols = _rename(inner.query(kind, node, None, nested_label="view"), [c.name for c in rel.columns])
                if facts.unknown:
                    self.facts.unknown.extend(f"view {rel.qualified}: {u}" for u in facts.unknown)
                cached = (cols, facts.relations, facts.functions)
                if not facts.unknown:
                    _views.store_view(rel, self.catalog, cached)
            except Exception as exc:
                self.facts.unknown.append(f"view {rel.qualified} could not be analysed: {exc}")
                return []
            finally:
                self.active_views.discard(key)
        cols, relations, functions = cached
        # Reading a view reads its base relations: deny lists must hold through views.
        self.facts.relations.extend(
            RelationAccess(r.schema, r.name, r.access, r.resolved, r.via_view or rel.qualified, r.kind)
            for r in relations)
        self.facts.functions.extend(functions)
        # A view's own output names must be the catalog's, but lineage is what matters.
        return [(n, Value(v.sources, plain=v.plain, whole_row=v.whole_row, origin=None)) for n, v in cols]

    # -- queries ---------------------------------------------------------------------

    def select(self, stmt: Node, parent: Scope | None) -> list[tuple[str, Value]]:
        """A SelectStmt (possibly a set operation) → its output columns."""
        # Most clauses are absent: probing with a bound ``get`` and calling the walk
        # only for present ones saves a dozen calls per query on the hot path.
        get = stmt.get
        scope = Scope(parent=parent)
        with_clause = get("withClause")
        if with_clause:
            self.with_clause(with_clause, scope)
        op = get("op", "SETOP_NONE")
        if op != "SETOP_NONE":
            left = self.select(get("larg") or {}, scope)
            right = self.select(get("rarg") or {}, scope)
            outputs = []
            for i, (name, lv) in enumerate(left):
                rv = right[i][1] if i < len(right) else EMPTY
                outputs.append((name, Value(lv.sources | rv.sources, plain=lv.plain and rv.plain,
                                            whole_row=lv.whole_row or rv.whole_row)))
            self.predicates(get("sortClause"), scope, outputs)  # ORDER BY an output name or position
            self.expressions(get("limitCount"), scope)
            self.expressions(get("limitOffset"), scope)
            return outputs
        values_lists = get("valuesLists")
        if values_lists:
            return self.values(values_lists, scope)
        from_clause = get("fromClause")
        if from_clause:
            entries = scope.entries
            for item in from_clause:
                rv = item.get("RangeVar")
                if rv is not None and rv.get("relname") in PINNED_CATALOGS:
                    alias = (rv.get("alias") or {}).get("aliasname") or rv["relname"]
                    self._next_pin = _pin(get("whereClause"), alias, PINNED_CATALOGS[rv["relname"]])
                entries.append(self.from_item(item, scope))
                self._next_pin = None
        outputs = self.target_list(get("targetList") or (), scope)
        where = get("whereClause")
        if where:
            self.predicates(where, scope)
        if _LATER_CLAUSES.isdisjoint(stmt):
            return outputs  # the common case: nothing more to walk
        # In this order: facts (relations, functions, unknown) keep the order they were met in.
        having = get("havingClause")
        if having:
            self.predicates(having, scope)
        for clause in ("groupClause", "sortClause"):
            node = get(clause)
            if node:
                self.predicates(node, scope, outputs)
        for clause in ("distinctClause", "windowClause"):
            node = get(clause)
            if node:
                self.predicates(node, scope)
        for clause in ("limitCount", "limitOffset"):
            node = get(clause)
            if node:
                self.expressions(node, scope)
        if get("lockingClause"):
            self.facts.classes.add(StatementClass.LOCK)
        into = get("intoClause")
        if into:
            rel = into.get("rel") or {}
            self.note_relation(rel.get("schemaname"), rel.get("relname", ""), Access.DDL, rel.get("relpersistence"))
            self.facts.classes.add(StatementClass.DDL)
            self.facts.nested.append("select_into")
            for _, v in outputs:
                self.facts.written_sources |= v.sources
        return outputs

    def values(self, values_lists: list[Node], scope: Scope) -> list[tuple[str, Value]]:
        # A column's value is the union of its items' values in every row (never plain):
        # collecting what each item's walk finds gives that union without one per item.
        columns: list[list[Value]] = []
        for row in values_lists:
            items = (row.get("List") or {}).get("items") or []
            for i, item in enumerate(items):
                while len(columns) <= i:
                    columns.append([])
                self._walk(item, scope, columns[i], None)
        return [(f"column{i + 1}", union(found) if found else Value(frozenset(), plain=False))
                for i, found in enumerate(columns)]

    def with_clause(self, with_clause: Node | None, scope: Scope) -> None:
        if not with_clause:
            return
        recursive = with_clause.get("recursive", False)
        ctes = [wrapper.get("CommonTableExpr") or {} for wrapper in with_clause.get("ctes") or ()]
        if recursive and len(ctes) > 1:
            # In WITH RECURSIVE every name is visible to every item (PostgreSQL orders them by their
            # references): walk each after the ones it reads, so a forward reference finds its lineage.
            ctes = self._cte_order(ctes)
        for cte in ctes:
            name = cte.get("ctename", "")
            colnames = _strings(cte.get("aliascolnames"))
            kind, query = _node(cte.get("ctequery") or {})
            if recursive and kind == "SelectStmt" and query.get("op", "SETOP_NONE") != "SETOP_NONE":
                cols = self._recursive_cte(name, colnames, query, scope)
            else:
                cols = self.query(kind, query, scope, nested_label="cte")
            scope.ctes[name] = _rename(cols, colnames)

    def _cte_order(self, ctes: list[Node]) -> list[Node]:
        names = {cte.get("ctename", ""): cte for cte in ctes}
        reads = {name: _names_read(cte.get("ctequery"), names.keys()) - {name} for name, cte in names.items()}
        ordered: list[Node] = []
        done: set[str] = set()
        pending = list(names)
        while pending:
            ready = [n for n in pending if reads[n] <= done]
            if not ready:
                # PostgreSQL refuses mutual recursion between WITH items; so does the gateway.
                self.facts.unknown.append(f"WITH items {', '.join(pending)} refer to each other")
                ready = pending[:]
            for n in ready:
                ordered.append(names[n])
                done.add(n)
                pending.remove(n)
        return ordered

    def _recursive_cte(self, name: str, colnames: list[str], query: Node, scope: Scope):
        seed = self.select(query.get("larg") or {}, scope)
        cols = _rename(seed, colnames)
        # Iterate to a fixpoint: lineage only grows, and each round can add at most the sources
        # reachable in one more step through the self-reference, so it settles within one round per
        # (column, source) pair. Relations and other facts of every round are kept: each round walks
        # the same branches, and the decision de-duplicates.
        rounds = 2 + len(cols) * max(1, len({s for _, v in cols for s in v.sources}))
        for _ in range(min(rounds, 256)):
            scope.ctes[name] = cols
            new = _rename(self.select(query, scope), colnames)
            merged = [(n, Value(v.sources | nv.sources, plain=v.plain and nv.plain,
                                whole_row=v.whole_row or nv.whole_row))
                      for (n, v), (_, nv) in zip(cols, new, strict=False)]
            if all(a[1].sources == b[1].sources for a, b in zip(merged, cols, strict=False)):
                return merged
            cols = merged
        self.facts.unknown.append(f"the lineage of recursive WITH item {name!r} did not settle")
        return cols

    def query(self, kind: str, node: Node, scope: Scope | None, *, nested_label: str) -> list[tuple[str, Value]]:
        """Any query node at any depth (CTE body, subquery, EXPLAIN / COPY / PREPARE target)."""
        if kind == "SelectStmt":
            return self.select(node, scope)
        if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
            if nested_label == "cte":
                self.facts.nested.append("cte_dml")
            return self.modify(kind, node, scope)
        self.facts.unknown.append(f"unsupported query node {kind or 'empty'}")
        return []

    def modify(self, kind: str, stmt: Node, parent: Scope | None) -> list[tuple[str, Value]]:
        scope = Scope(parent=parent)
        with_clause = stmt.get("withClause")
        if with_clause:
            self.with_clause(with_clause, scope)
        rv = stmt.get("relation") or {}
        self.facts.classes.add(StatementClass.WRITE)
        if kind == "InsertStmt":
            target = self.relation_entry(rv, None, Access.INSERT)
            # no column list: every column, except INSERT … DEFAULT VALUES (no select), which assigns none
            self._assigns(rv, _target_names(stmt.get("cols")) or (("*",) if stmt.get("selectStmt") else ()))
            select = stmt.get("selectStmt")
            if select:
                skind, snode = _node(select)
                for _, v in self.query(skind, snode, scope, nested_label="insert"):
                    self.facts.written_sources |= v.sources
            conflict = stmt.get("onConflictClause")
            if conflict:
                excluded = Entry("excluded", columns=target.columns, open_table=target.open_table)
                scope.entries.extend([target, excluded])
                if conflict.get("action") == "ONCONFLICT_UPDATE":
                    self.note_relation(rv.get("schemaname"), rv.get("relname", ""), Access.UPDATE)
                    self._assigns(rv, _target_names(conflict.get("targetList")), update=True)
                    self.assignments(conflict.get("targetList") or (), scope)
                    self.predicates(conflict.get("whereClause"), scope)
                infer = conflict.get("infer") or {}
                self.predicates(infer.get("indexElems"), scope)
                self.predicates(infer.get("whereClause"), scope)
            else:
                scope.entries.append(target)
        elif kind == "UpdateStmt":
            target = self.relation_entry(rv, None, Access.UPDATE)
            scope.entries.append(target)
            self._assigns(rv, _target_names(stmt.get("targetList")), update=True)
            from_clause = stmt.get("fromClause")
            if from_clause:
                for item in from_clause:
                    scope.entries.append(self.from_item(item, scope))
            self.assignments(stmt.get("targetList") or (), scope)
            self._where(stmt.get("whereClause"), scope)
        elif kind == "DeleteStmt":
            target = self.relation_entry(rv, None, Access.DELETE)
            scope.entries.append(target)
            for item in stmt.get("usingClause") or ():
                scope.entries.append(self.from_item(item, scope))
            self._where(stmt.get("whereClause"), scope)
        else:  # MergeStmt
            rv = stmt.get("relation") or {}
            target = self.relation_entry(rv, None, Access.UPDATE)
            source = self.from_item(stmt.get("sourceRelation") or {}, scope)
            scope.entries.extend([target, source])
            self.predicates(stmt.get("joinCondition"), scope)
            for wrapper in stmt.get("mergeWhenClauses") or ():
                clause = wrapper.get("MergeWhenClause") or {}
                cmd = clause.get("commandType", "")
                access = {"CMD_INSERT": Access.INSERT, "CMD_DELETE": Access.DELETE}.get(cmd, Access.UPDATE)
                self.note_relation(rv.get("schemaname"), rv.get("relname", ""), access)
                self.predicates(clause.get("condition"), scope)
                if cmd == "CMD_INSERT":
                    self._assigns(rv, _target_names(clause.get("targetList")) or ("*",))
                    for item in clause.get("values") or ():
                        self.facts.written_sources |= self.expression(item, scope).sources
                else:
                    self._assigns(rv, _target_names(clause.get("targetList")), update=True)
                    self.assignments(clause.get("targetList") or (), scope)
        returning = stmt.get("returningClause")
        items = returning.get("exprs") if isinstance(returning, dict) else None
        if items is None and isinstance(stmt.get("returningList"), list):
            items = stmt.get("returningList")
        return self.target_list(items or (), scope) if items else []

    def _assigns(self, rv: Node, columns: tuple[str, ...], *, update: bool = False) -> None:
        """Note the columns a write assigns in its target (what a unique index or foreign key on them can
        tell: policy/_mask_plan.py ``existence_probes``); ``update``: the row's other columns keep their
        stored values (an UPDATE), instead of defaults (an INSERT)."""
        if columns:
            self.facts.written_columns.append((rv.get("schemaname"), rv.get("relname", ""), columns, update))

    def _where(self, where: Node | None, scope: Scope) -> None:
        if not where or _is_constant(where):
            self.facts.missing_where = True
        self.predicates(where, scope)

    def assignments(self, targets: list[Node] | tuple, scope: Scope) -> None:
        written = self.facts.written_sources
        for wrapper in targets:
            target = wrapper.get("ResTarget") or {}
            # Only the sources matter: no need to merge the values into one first.
            found: list[Value] = []
            self._walk(target.get("val") or {}, scope, found, None)
            for value in found:
                written |= value.sources
            indirection = target.get("indirection")
            if indirection:
                self.predicates(indirection, scope)

    # -- FROM ------------------------------------------------------------------------

    def from_item(self, wrapper: Node, scope: Scope) -> Entry:
        kind, node = _node(wrapper)
        if kind == "RangeVar":
            return self.relation_entry(node, scope)
        if kind == "RangeSubselect":
            alias = node.get("alias") or {}
            skind, sub = _node(node.get("subquery") or {})
            # LATERAL subqueries see the FROM items before them; others do not, but
            # resolving against more names can only add lineage, never lose it.
            cols = self.query(skind, sub, scope, nested_label="subquery")
            return Entry(alias.get("aliasname"), columns=_rename(cols, _strings(alias.get("colnames"))))
        if kind == "JoinExpr":
            left = self.from_item(node.get("larg") or {}, scope)
            # LATERAL items on the right see the left side: make it visible while walking them.
            scope.entries.append(left)
            try:
                right = self.from_item(node.get("rarg") or {}, scope)
            finally:
                for i in range(len(scope.entries) - 1, -1, -1):
                    if scope.entries[i] is left:
                        del scope.entries[i]
                        break
            quals = node.get("quals")
            if quals:
                self.predicates(quals, Scope(entries=[left, right], parent=scope))
            using_clause = node.get("usingClause")
            using_names = _strings(using_clause) if using_clause else []
            if node.get("isNatural"):
                if left.known and right.known:
                    right_names = {n for n, _ in right.all_columns()}
                    using_names = [n for n, _ in left.all_columns() if n in right_names]
                else:
                    self.facts.unknown.append("NATURAL JOIN over a relation the catalog does not know")
            using: list[tuple[str, Value]] = []
            for ucol in using_names:
                values = [v for v in (left.column(ucol), right.column(ucol)) if v is not None]
                for v in values:
                    self.facts.predicate_sources |= v.sources
                using.append((ucol, values[0] if len(values) == 1 else union(values)))
            alias = node.get("alias") or {}
            if not alias:
                # Without an alias the sides stay reachable by their own names.
                for side in (left, right):
                    if side.name is not None:
                        scope.entries.append(_as_hidden(side))
            joined = Entry(alias.get("aliasname"), parts=[left, right], using=using)
            colnames = _strings(alias.get("colnames")) if alias else []
            if colnames:
                return Entry(joined.name, columns=_rename(joined.all_columns(), colnames))
            return joined
        if kind == "RangeFunction":
            return self.range_function(node, scope)
        if kind in ("RangeTableFunc", "JsonTable", "RangeTableSample"):
            if kind == "RangeTableSample":
                inner = self.from_item(node.get("relation") or {}, scope)
                self.expressions(node.get("args"), scope)
                self.expressions(node.get("repeatable"), scope)
                return inner
            value = self.expression(node, scope)
            alias = node.get("alias") or {}
            return Entry(alias.get("aliasname"), open_value=value)
        self.facts.unknown.append(f"unsupported FROM item {kind or 'empty'}")
        return Entry(None, open_value=EMPTY)

    def range_function(self, node: Node, scope: Scope) -> Entry:
        values = []
        names = []
        widths: list[int | None] = []
        for item in node.get("functions") or ():
            parts = (item.get("List") or {}).get("items") or []
            if parts:
                values.append(self.expression(parts[0], scope))
                names.append(_figure_name(parts[0]) or "?column?")
                coldefs = [c for c in (parts[1] if len(parts) > 1 and isinstance(parts[1], list) else ())]
                widths.append(len(coldefs) if coldefs else _known_width(parts[0]))
        value = union(values)
        alias = node.get("alias") or {}
        coldefs = [(c.get("ColumnDef") or {}).get("colname", "?column?") for c in node.get("coldeflist") or ()]
        colnames = _strings(alias.get("colnames")) or coldefs
        entry_name = alias.get("aliasname") or (names[0] if names else None)
        width = len(coldefs) if coldefs else (sum(widths) if None not in widths else None)  # type: ignore[arg-type]
        if node.get("ordinality") and width is not None:
            width += 1
        if width is not None:
            default = [names[0]] if width == 1 and names else [f"column{i + 1}" for i in range(width)]
            cols = [(colnames[i] if i < len(colnames) else default[i], value) for i in range(width)]
            return Entry(entry_name, columns=cols)
        if colnames:
            return Entry(entry_name, columns=[(c, value) for c in colnames], width_unknown=True)
        return Entry(entry_name, open_value=value)

    # -- target lists ----------------------------------------------------------------

    def target_list(self, targets, scope: Scope) -> list[tuple[str, Value]]:
        outputs: list[tuple[str, Value]] = []
        for wrapper in targets:
            target = wrapper.get("ResTarget") or {}
            val = target.get("val") or {}
            ref = val.get("ColumnRef")
            if ref is not None:
                fields = _strings(ref.get("fields"))
                if fields and fields[-1] == WILDCARD:
                    outputs.extend(self.star(fields[:-1], scope))
                    continue
                if len(val) == 1:
                    # A bare column, the commonest target: what expression() would do,
                    # without splitting the names again (output_name's rule for a ColumnRef).
                    value = self.column_ref(ref, scope, None, fields)
                    self.facts.referenced |= value.sources
                    name = target.get("name") or (fields[-1] if fields else "") or "?column?"
                    outputs.append((name, value))
                    continue
            indirection = (val.get("A_Indirection") or {}).get("indirection") or []
            if indirection and "A_Star" in indirection[-1]:
                # (composite).* expands to as many columns as the composite has
                merged = self.expression(val, scope)
                outputs.append(("?column?", Value(merged.sources, plain=False, whole_row=True, expands=True)))
                continue
            outputs.append((output_name(target), self.expression(val, scope)))
        return outputs

    def star(self, qualifier: list[str], scope: Scope) -> list[tuple[str, Value]]:
        if not qualifier:
            out: list[tuple[str, Value]] = []
            for entry in scope.entries:
                if not entry.hidden:
                    out.extend(entry.all_columns())
            return out
        entry = self.find_entry(qualifier, scope)
        if entry is None:
            self.facts.unknown.append(f"'{'.'.join(qualifier)}.*' names no FROM item")
            return []
        return entry.all_columns()

    # -- expressions -----------------------------------------------------------------

    def predicates(self, node: Any, scope: Scope, outputs: list[tuple[str, Value]] | None = None) -> None:
        if not node:
            return
        sources = self.facts.predicate_sources
        if outputs is not None and isinstance(node, list):
            # ORDER BY / GROUP BY items; an integer names an output column by position.
            for item in node:
                expr = (item.get("SortBy") or {}).get("node", item) if isinstance(item, dict) else item
                position = _integer_constant(expr)
                if position is not None and 0 < position <= len(outputs):
                    sources |= outputs[position - 1][1].sources
                else:
                    sources |= self.expression(item, scope, outputs=outputs).sources
            return
        # Only the sources matter here: no need to merge the values into one first.
        found: list[Value] = []
        self._walk(node, scope, found, outputs)
        for value in found:
            sources |= value.sources

    def expressions(self, node: Any, scope: Scope) -> None:
        if node:
            found: list[Value] = []
            self._walk(node, scope, found, None)
            sources = self.facts.predicate_sources
            for value in found:
                sources |= value.sources

    def expression(self, node: Any, scope: Scope, *, outputs: list[tuple[str, Value]] | None = None) -> Value:
        """Lineage of an expression tree; records functions and sub-queries on the way."""
        found: list[Value] = []
        self._walk(node, scope, found, outputs)
        if len(found) == 1 and _is_column_ref(node):
            return found[0]
        return union(found)

    def _walk(self, node: Any, scope: Scope, found: list[Value], outputs) -> None:
        if not isinstance(node, dict):
            if isinstance(node, list):
                for item in node:
                    self._walk(item, scope, found, outputs)
            return
        for key, value in node.items():
            # Most keys are leaves or plain structure: two set lookups settle them.
            if key in _LEAVES:
                continue
            if key not in _SPECIAL:
                if isinstance(value, _CONTAINERS):
                    self._walk(value, scope, found, outputs)
                continue
            if key == "ColumnRef":
                ref = self.column_ref(value, scope, outputs)
                self.facts.referenced |= ref.sources
                found.append(ref)
            elif key == "A_Expr" or key == "TypeCast":  # (frequent: tested early)
                # Operators and casts may run user code: noted when the catalog has any (item 5).
                # (The common case, settled here: an unqualified operator, or a cast, and no user one.)
                if key == "A_Expr":
                    if self.catalog.operators or len(value.get("name") or ()) != 1:
                        self.user_code_node(key, value)
                elif self.catalog.user_cast_types:
                    self.user_code_node(key, value)
                self._walk(value, scope, found, outputs)
            elif key == "FuncCall":
                name = self.function_call(value)
                inner: list[Value] = []
                self._walk(value.get("args"), scope, inner, outputs)
                # ORDER BY / FILTER / OVER of an aggregate choose and order rows: predicates
                for clause in ("agg_order", "agg_filter", "over"):
                    if value.get(clause):
                        self.facts.predicate_sources |= self.expression(value[clause], scope).sources
                if name in _SIDE_CHANNELS:
                    # values handed to these leave the result set (a notification
                    # payload, a session setting): they are written, not returned
                    for v in inner:
                        self.facts.written_sources |= v.sources
                if name == "count" and len(value.get("args") or ()) <= 1:
                    # count(x) returns how many x are not NULL: no value of x
                    for v in inner:
                        self.facts.referenced |= v.sources
                    continue
                found.extend(inner)
            elif key == "NullTest" and _is_column_ref(value.get("arg")):
                # IS [NOT] NULL on a column reveals only NULL-ness, which masks keep too
                self.facts.referenced |= self.column_ref(value["arg"]["ColumnRef"], scope, outputs).sources
            elif key == "SubLink":
                self._walk(value.get("testexpr"), scope, found, outputs)
                skind, sub = _node(value.get("subselect") or {})
                cols = self.query(skind, sub, scope, nested_label="sublink")
                found.extend(v for _, v in cols)
            elif key in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
                found.extend(v for _, v in self.query(key, value, scope, nested_label="subquery"))
            elif key == "RangeVar":
                self.facts.unknown.append("relation reference inside an expression")
                self.note_relation(value.get("schemaname"), value.get("relname", ""), Access.READ)
            elif isinstance(value, _CONTAINERS):  # NullTest of an expression
                self._walk(value, scope, found, outputs)

    def function_call(self, call: Node) -> str | None:
        names = _strings(call.get("funcname"))
        if not names:
            return None
        schema = names[-2] if len(names) >= 2 else None
        name = names[-1]
        first = None
        args = call.get("args") or ()
        if args and isinstance(args[0], dict):
            first = _literal_text(args[0])
        nargs = -1 if call.get("func_variadic") else len(args)  # count(*): no arguments
        self.facts.functions.append(FunctionCall(schema, name, self.catalog.function_schemas(name), first, nargs))
        return name if schema in (None, "pg_catalog") else None

    def user_code_node(self, key: str, value: Node) -> None:
        catalog = self.catalog
        if key == "A_Expr":
            names = _strings(value.get("name"))
            if not names:
                return
            schema = names[-2] if len(names) >= 2 else None
            if schema in (None, "pg_catalog") and names[-1] not in catalog.operators:
                return  # the common case: a built-in operator no user operator shares a name with
            nargs = 2 if value.get("lexpr") is not None else 1
            self.facts.functions.append(FunctionCall(schema, names[-1], frozenset(), None, nargs, "operator"))
        elif catalog.user_cast_types:
            names = _strings((value.get("typeName") or {}).get("names"))
            if names and names[-1] != "regclass":
                # a literal's own type, as first_arg: a string literal is read by the type's input
                # function (no cast runs), a literal of the target type needs no cast at all
                const = value.get("arg") or {}
                const = const.get("A_Const") if isinstance(const, dict) else None
                literal = None
                if isinstance(const, dict):
                    literal = next((t for k, t in _CONST_TYPES if k in const), "unknown")
                self.facts.functions.append(FunctionCall(names[-2] if len(names) >= 2 else None, names[-1],
                                                         frozenset(), literal, 1, "cast"))

    def column_ref(self, ref: Node, scope: Scope, outputs, fields: list[str] | None = None) -> Value:
        """Lineage of a column reference; ``fields`` when the caller has split its names already."""
        if fields is None:
            fields = _strings(ref.get("fields"))
        if not fields:
            return EMPTY
        if fields[-1] == WILDCARD:
            # t.* inside an expression (row constructor, count(t.*)): the whole row
            values = [v for _, v in self.star(fields[:-1], scope)]
            whole = union(values)
            return Value(whole.sources, plain=False, whole_row=True)
        if len(fields) == 1:
            name = fields[0]
            s: Scope | None = scope
            while s is not None:
                # Exact column lists first: an unknown relation beside them is only a
                # candidate when no known one has the column.
                candidates: list[Value] = []
                unknown: list[Entry] | None = None
                for e in s.entries:
                    if e.hidden:
                        continue
                    if e.columns is not None if e.parts is None else e.known:  # Entry.known, without a call
                        v = e.column(name)
                        if v is not None:
                            candidates.append(v)
                    elif unknown is None:
                        unknown = [e]
                    else:
                        unknown.append(e)
                if not candidates and unknown:
                    candidates = [v for e in unknown for v in [e.column(name)] if v is not None]
                    # An unknown relation may or may not have a column of that name:
                    # if the name is also a FROM item's, it may be a whole-row reference.
                    if candidates:
                        candidates.extend(e.whole_row() for e in s.entries if e.name == name)
                if candidates:
                    return candidates[0] if len(candidates) == 1 else union(candidates)
                for e in s.entries:
                    if e.name == name:
                        self.facts.whole_row_refs.add(name)
                        return e.whole_row()
                s = s.parent
            if outputs is not None:  # ORDER BY / GROUP BY an output alias
                for oname, value in outputs:
                    if oname == name:
                        return value
            return self._unresolved(fields)
        entry = self.find_entry(fields[:-1], scope)
        if entry is None:
            composite = self._composite_column(fields, scope) if len(fields) == 2 else None
            return composite if composite is not None else self._unresolved(fields)
        value = entry.column(fields[-1])
        return value if value is not None else self._unresolved(fields)

    def _unresolved(self, fields: list[str]) -> Value:
        # Either PostgreSQL will reject the name too, or this walker misread the
        # scope: both are reasons to refuse, never to treat the value as clean.
        self.facts.unknown.append(f"column reference {'.'.join(fields)!r} could not be resolved; "
                                  "check the name and its FROM item")
        return EMPTY

    def _composite_column(self, fields: list[str], scope: Scope) -> Value | None:
        # "col.field" on a composite-typed column: lineage of the column, not plain
        s: Scope | None = scope
        while s is not None:
            for e in s.entries:
                v = e.column(fields[0]) if e.known and not e.hidden else None
                if v is not None:
                    return Value(v.sources, plain=False)
            s = s.parent
        return None

    def find_entry(self, qualifier: list[str], scope: Scope) -> Entry | None:
        table = qualifier[-1]
        schema = qualifier[-2] if len(qualifier) >= 2 else None
        s: Scope | None = scope
        while s is not None:
            for e in s.entries:
                if e.name == table and (schema is None or e.schema == schema):
                    return e
            s = s.parent
        return None

    def iter_entries(self, scope: Scope) -> Iterator[Entry]:
        s: Scope | None = scope
        while s is not None:
            yield from s.entries
            s = s.parent


def _target_names(targets: list[Node] | None) -> tuple[str, ...]:
    """The column names of an INSERT's column list or an UPDATE's SET list (ResTarget nodes)."""
    return tuple(name for t in targets or () if (name := (t.get("ResTarget") or {}).get("name")))
