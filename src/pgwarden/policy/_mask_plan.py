"""Mask planning: which masks a principal's outputs need, and how they reach the statement sent upstream.

:class:`MaskSet` holds the masks that apply to one principal (``unless_groups`` already applied),
with lookups memoised. :class:`MaskPlanning` is the part of a statement's checks that plans the
masks: for a statement the rewrite can reach, the masks are substituted inside the statement
(``masking_upstream``: derived tables spliced in by :mod:`pgwarden.policy.sql`); otherwise the
outputs are masked by the door (``masking``), with filters on masked columns refused as oracles.
Pure, like the rest of the policy core.
"""
from __future__ import annotations

import fnmatch

from pglast import parser
from pglast.parser import ParseError

from . import builtins
from .analysis import (
    WRITE_ACCESSES,
    Access,
    ColumnId,
    StatementAnalysis,
    StatementClass,
)
from .catalog import Relation
from .language import ColumnMask, MaskStrategy
from .verdict import (
    MaskAction,
)

_UNSEEN = object()
_MAY_WRITE_ELSEWHERE = frozenset({"trigger", "rule"})  # Relation.texts: code that runs when the table is written

_READ = Access.READ  # (an enum member read from its class goes through a descriptor: hoisted)


class MaskSet:
    """The masks that apply to one principal, with lookups memoised (they repeat on every statement)."""

    __slots__ = ("_found", "_parts", "_tables", "masks", "reach", "writes")

    def __init__(self, masks: tuple[ColumnMask, ...]) -> None:
        self.masks = masks
        self._parts = [tuple(m.column.split(".")) for m in masks]
        self._found: dict[ColumnId, ColumnMask | None] = {}
        self._tables: dict[tuple[str, str], bool] = {}
        # (catalog version, schema, table[, columns, update]) → what a write there means: whether its errors
        # are scrubbed, and its existence probes (pure functions of the catalog snapshot and these masks)
        self.writes: dict[tuple, object] = {}
        # (catalog version, schema, table) → whether a mask may cover the table or a descendant of it
        self.reach: dict[tuple[str, str, str], bool] = {}

    def reaches(self, key: tuple[str, str, str], below: dict) -> bool:
        """Whether a mask may cover the table of ``key`` or one of its descendants (``below``: the
        catalog's descendants by table), remembered in ``reach``."""
        _, schema, name = key
        hit = self.may_cover_table(schema, name) or any(self.may_cover_table(s, t)
                                                        for s, t in below.get((schema, name), ()))
        if len(self.reach) < 100_000:
            self.reach[key] = hit
        return hit

    def find(self, column: ColumnId) -> ColumnMask | None:
        try:
            return self._found[column]
        except KeyError:
            pass
        text = str(column)
        found = next((m for m in self.masks if m.covers(text)), None)
        if len(self._found) < 100_000:
            self._found[column] = found
        return found

    def any_masked(self, columns: set[ColumnId] | frozenset[ColumnId]) -> bool:
        """Whether a mask may cover one of ``columns`` (as ``masked``, without building the list)."""
        known = self._found
        for column in columns:
            # (the common case, one lookup: a column already known to have no mask)
            if known.get(column, _UNSEEN) is None and column.column != "*":
                continue
            if self._may_mask(column):
                return True
        return False

    def masked(self, columns: set[ColumnId] | frozenset[ColumnId]) -> list[ColumnId]:
        """The columns of ``columns`` a mask may cover (``schema.table.*``: when one may cover that table)."""
        return [column for column in columns if self._may_mask(column)] if columns else []

    def _may_mask(self, column: ColumnId) -> bool:
        if column.column == "*":
            return self.may_cover_table(column.schema, column.table)
        mask = self._found.get(column, _UNSEEN)
        if mask is _UNSEEN:
            mask = self.find(column)
        return mask is not None

    def may_cover_table(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._tables.get(key)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(schema, ms) and fnmatch.fnmatchcase(table, mt)
                      for ms, mt, _ in self._parts)
            if len(self._tables) < 100_000:
                self._tables[key] = hit
        return hit

    def __bool__(self) -> bool:
        return bool(self.masks)


class MaskPlanning:
    """Mask planning of :class:`~pgwarden.policy._checks.StatementCheck` (a mixin: it uses its state)."""

    __slots__ = ()

    def _output_mask(self, position: int, out, source: ColumnId, mask: ColumnMask,
                     found: list[tuple[ColumnId, ColumnMask]], refused_hint: str) -> None:
        """Record how output ``position`` is masked: by its mask when it is the column itself, whole
        otherwise (or refused under ``masking.on_expression: deny``)."""
        same = len(found) == 1 or all(m is mask for _, m in found)
        if out.plain and same and not out.whole_row:
            self.masks.append(MaskAction(position, out.name, mask.strategy.value, source, False, mask.keep,
                                         out.origin, mask))
        elif self.policy.masking.on_expression == "deny":
            self.deny("masked_expression", f"output {out.name!r} is computed from masked column {source}; "
                      f"{refused_hint}")
        else:
            self.masks.append(MaskAction(position, out.name, MaskStrategy.REDACT.value, source, True, 0,
                                         out.origin))

    # -- masking ---------------------------------------------------------------------

    def _masks_of(self, out) -> list[tuple[ColumnId, ColumnMask]]:
        """The (source, mask) pairs of one output; a ``*`` a mask may cover is refused (catalog needed)."""
        masks = self.mask_set
        found: list[tuple[ColumnId, ColumnMask]] = []
        for source in out.sources:
            if source.column == "*":
                if masks.may_cover_table(source.schema, source.table):
                    self.deny("catalog_needed", f"cannot tell which columns of {source.schema}.{source.table} "
                              "are masked without the target's catalog; name the columns you need instead of "
                              "* or whole rows")
                continue
            mask = masks.find(source)
            if mask is not None:
                found.append((source, mask))
        return found

    def _unreached(self, st: StatementAnalysis, used: set[ColumnId]) -> bool:
        """True when no mask of this principal can cover a relation the statement reads, a descendant
        of one (partitions, inheritance children), or a column it reads: planning would find nothing."""
        masks = self.mask_set
        catalog = self.catalog
        reach = masks.reach
        for rel in st.relations:
            key = (catalog.version, rel.schema, rel.name)
            hit = reach.get(key)
            if hit is None:
                hit = masks.reaches(key, self.rewriter.descendants(catalog))  # type: ignore[union-attr]
            if hit:
                return False
        for ref in st.relation_refs:
            if masks.may_cover_table(ref.schema, ref.name):
                return False
        return not (masks.any_masked(used) or masks.any_masked(st.referenced))

    def _masked(self, rel: Relation, column: str) -> bool:
        """``column`` of ``rel`` is masked for this principal: by a mask on the table, or on a table it
        inherits from or is a partition of (masks written for a parent hold for its children)."""
        masks = self.mask_set
        if masks.find(ColumnId(rel.schema, rel.name, column)) is not None:
            return True
        for ancestor in rel.ancestors:
            schema, _, table = ancestor.partition(".")
            if masks.find(ColumnId(schema, table, column)) is not None:
                return True
        return False

    def _masked_table(self, rel_schema: str, rel_name: str) -> bool:
        masks = self.mask_set
        if masks.may_cover_table(rel_schema, rel_name):
            return True
        rel = self.catalog.resolve_relation(rel_schema, rel_name)
        return rel is not None and any(masks.may_cover_table(*a.partition(".")[::2]) for a in rel.ancestors)

    def _writes_masked_table(self, st: StatementAnalysis) -> bool:
        """The statement writes a table with masked columns — or where it cannot tell that it does not: a
        view (its base table), a table with triggers or rules (they may write one). PostgreSQL's errors
        about the row written print it, masked values included ("Failing row contains (…)" of a NOT NULL or
        CHECK violation, a trigger's RAISE), so they are withheld whatever the statement reads."""
        if not st.written and StatementClass.WRITE not in st.classes:
            return False
        catalog = self.catalog
        memo = self.mask_set.writes
        for r in st.relations:
            if r.access not in WRITE_ACCESSES:
                continue
            key = (catalog.version, r.schema, r.name)
            hit = memo.get(key)
            if hit is None:
                rel = catalog.resolve_relation(r.schema, r.name)
                hit = (self._masked_table(r.schema, r.name) or rel is None or rel.kind in ("v", "m")
                       or bool(rel.texts & _MAY_WRITE_ELSEWHERE))
                if len(memo) < 100_000:
                    memo[key] = hit
            if hit:
                return True
        return False

    def existence_probes(self, st: StatementAnalysis) -> None:
        """A write that assigns a column of a unique index or exclusion constraint holding a masked column
        (key, expression, predicate or generated-from column), or a column of a foreign key referencing a
        masked column, is an existence oracle: it fails (23505, 23P01, 23503) or not, and ``ON CONFLICT DO
        NOTHING`` counts the rows it inserts, by whether a matching masked value is stored — one guess per
        statement at a value the agent may never see. A write through a view is judged as writing every
        column of the tables the view reads. Refused."""
        if not st.written:
            return
        catalog = self.catalog
        found: list[str] = []
        memo = self.mask_set.writes
        for written_schema, written_table, columns, update in st.written:
            key = (catalog.version, written_schema, written_table, columns, update)
            probes = memo.get(key)
            if probes is None:
                rel = catalog.resolve_relation(written_schema, written_table)
                probes = []
                if rel is not None:
                    targets = (self._view_bases(rel, columns) if rel.kind == "v" and rel.view_sql
                               else [(rel, columns)])
                    for target, cols in targets:
                        probes.extend(self._probes_of(target, cols, update))
                if len(memo) < 100_000:
                    memo[key] = probes
            found.extend(probes)  # type: ignore[arg-type]
        if found:
            self.deny("masked_existence_probe", f"this write assigns {', '.join(dict.fromkeys(found))}: whether it "
                      "fails would tell whether a matching value is stored in a masked column; leave the column "
                      "out, or ask a DBA to make the change")

    def _probes_of(self, rel: Relation, columns: tuple[str, ...], update: bool) -> list[str]:
        """What writing ``columns`` of ``rel`` can tell: a group (index, constraint) with a masked column
        is a probe when the write assigns one of its masked columns, or — for an UPDATE, where the others
        keep their stored values — any of its columns (``SET tenant = 'b'`` under UNIQUE (tenant, email)
        fails iff two rows' e-mails are equal); a foreign key to a masked column when the write assigns
        one of its columns. An INSERT leaves unassigned columns to their defaults (NULL: distinct)."""
        if not rel.probes:
            return []
        groups: dict[int, list[tuple[str, str, str, str]]] = {}
        for col, ref_schema, ref_table, ref_col, group in rel.probes:
            groups.setdefault(group, []).append((col, ref_schema, ref_table, ref_col))
        everything = columns == ("*",)
        out = []
        for members in groups.values():
            if not everything and not any(col in columns for col, _, _, _ in members):
                continue
            if members[0][1]:  # a foreign key: an oracle on the referenced columns
                masked = [f"{rs}.{rt}.{rc}" for _, rs, rt, rc in members
                          if (ref := self.catalog.resolve_relation(rs, rt)) is not None and self._masked(ref, rc)]
                via = "its foreign key to masked column(s) "
            else:
                hidden = [col for col, _, _, _ in members if self._masked(rel, col)]
                if not update and not everything and not any(col in columns for col in hidden):
                    continue  # an INSERT that leaves the masked columns to their defaults
                masked = [f"{rel.schema}.{rel.name}.{col}" for col in hidden]
                via = "a unique index or exclusion constraint over masked column(s) "
            if masked:
                written = [col for col, _, _, _ in members if everything or col in columns]
                out.append(f"{rel.schema}.{rel.name}.{'/'.join(dict.fromkeys(written))} ({via}"
                           f"{', '.join(dict.fromkeys(masked))})")
        return out

    def _view_bases(self, view: Relation, columns: tuple[str, ...]) -> list[tuple[Relation, tuple[str, ...]]]:
        """Where a write of ``columns`` through a view lands: each base table with the columns the view's
        outputs of those names come from (a view PostgreSQL can write through is a plain projection); any
        column it cannot trace makes that write count as one of every column of every base table."""
        from .sql import analyse  # (the analyser imports nothing of this module; imported when needed)

        try:
            analysis = analyse(view.view_sql or "", self.catalog)
        except Exception:
            analysis = None
        if analysis is None or len(analysis.statements) != 1:
            return [(view, ("*",))]  # no base known: judged on the view (it has no probes) — and scrubbed
        st = analysis.statements[0]
        bases = {}
        for r in st.relations:
            base = self.catalog.resolve_relation(r.schema, r.name)
            if base is not None and base is not view and base.kind in ("r", "p", "f"):
                bases[(base.schema, base.name)] = base
        names = [c.name for c in view.columns]
        mapped: dict[tuple[str, str], list[str]] = {key: [] for key in bases}
        for position, out in enumerate(st.outputs):
            name = names[position] if position < len(names) else out.name
            if columns != ("*",) and name not in columns:
                continue
            sources = [s for s in out.sources if (s.schema, s.table) in bases]
            if not out.plain or len(sources) != 1 or sources[0].column == "*":
                return [(base, ("*",)) for base in bases.values()]
            mapped[(sources[0].schema, sources[0].table)].append(sources[0].column)
        return [(bases[key], tuple(cols)) for key, cols in mapped.items() if cols]

    def masking(self, st: StatementAnalysis, used: set[ColumnId]) -> None:
        masks = self.mask_set
        if not masks.masks:
            return
        self.existence_probes(st)
        if self.rewriter is not None and (st.node in _REWRITTEN or (st.node == "CopyStmt"
                                                                   and st.copy_target == "stdout")):
            if self._unreached(st, used):
                # no mask can reach anything this statement reads; its errors may still print a stored row
                self.scrub_errors = self._writes_masked_table(st)
                return
            self.masking_upstream(st, used)
            return
        # Statements the rewrite does not touch (EXPLAIN, PREPARE / EXECUTE, DECLARE / FETCH, DDL that
        # stores its query): their text persists or is shown upstream, so masks are placed on outputs
        # and masked columns stay out of their predicates, as before the rewrite.
        # Most statements read no masked column at all: one look at each distinct column
        # read anywhere settles that, and then nothing below could mask, deny or scrub.
        read = used | st.referenced
        # Every check below is about masked columns of these sets (all subsets of ``read``):
        # intersecting with the few masked ones spares a mask lookup per column and check.
        masked = masks.masked(read)
        if not masked:
            self.scrub_errors = self._writes_masked_table(st)
            return
        hit = frozenset(masked)
        masking = self.policy.masking
        touched = False
        shifted = False  # an earlier output expanded to an unknown number of columns
        for position, out in enumerate(st.outputs):
            after_unknown, shifted = shifted, shifted or out.expands
            if hit.isdisjoint(out.sources):
                continue  # no masked column, and no '*' a mask may cover
            found = self._masks_of(out)
            if not found:
                continue
            touched = True
            if out.expands or after_unknown:
                self.deny("unknown_columns", f"cannot tell how many columns output {position + 1} expands to, "
                          f"so masks for {source_list(found)} cannot be placed; select named columns, or give "
                          "set-returning functions a column definition list")
                continue
            source, mask = found[0] if len(found) == 1 else min(found)
            self._output_mask(position, out, source, mask, found,
                              "select the column itself (it is masked) or leave it out")
        # The server runs these statements on raw values: anything computed from a masked column
        # before the output — an aggregate, a function in FROM, DISTINCT, a set operation, a window —
        # is an oracle through row counts, errors or timing, whatever the output mask. Only the masked
        # column itself, selected as it is, may pass.
        plain_sources = {m.source for m in self.masks if not m.whole}
        computed = sorted(str(c) for c in (hit & (st.referenced | used)) - plain_sources - st.predicate_sources)
        if computed or (self.masks and _computes_over_rows(st.text)):
            shown = ", ".join(computed) or ", ".join(sorted(str(m.source) for m in self.masks))
            self.deny("masked_not_rewritten", f"{st.command_tag} keeps or shows its query upstream, so the "
                      f"gateway cannot mask inside it, and it computes on masked column(s) {shown}; run the "
                      "query directly (masked values are computed inside it), or select masked columns only "
                      "as they are")
        predicate = st.predicate_sources & hit
        if predicate:
            touched = True
            if not masking.allow_in_predicates:
                cols = ", ".join(str(c) for c in sorted(predicate))
                self.deny("masked_predicate", f"masked column(s) {cols} may not be used to filter, join, group or "
                          "sort: that would reveal their values; filter on other columns")
        written = st.written_sources & hit
        if written:
            cols = ", ".join(str(c) for c in sorted(written))
            self.deny("masked_data_laundering", f"this statement would copy masked column(s) {cols} into a "
                      "table (or pass them to an execution), where they would no longer be masked")
        if not hit.isdisjoint(st.referenced):
            touched = True  # e.g. ssn::int in a sub-query the output never shows: its error would
        if st.node == "CopyStmt" and any(m for m in self.masks):
            self.deny("copy_masked", "COPY output is not masked by the gateway; use SELECT for tables with "
                      "masked columns (its results are masked)")
        self.scrub_errors = touched or bool(self.masks)


    def masking_upstream(self, st: StatementAnalysis, used: set[ColumnId]) -> None:
        """Masks substituted inside the statement (policy/_rewrite.py): every read reference to a
        relation carrying a masked column becomes a masking derived table, so predicates, aggregates,
        joins and functions see masked values and nothing needs denying for reads. What stays refused:
        masked data written into tables, and a DML target's masked columns in its predicates or
        RETURNING (a target cannot be wrapped)."""
        masks = self.mask_set
        rewriter = self.rewriter
        catalog = self.catalog
        copy_relation = st.node == "CopyStmt" and st.details.copy_relation
        covered: set[tuple[str, str]] = set()  # tables whose masked values the wrapped references mask
        referenced: set[tuple[str, str]] = set()
        origins: set[tuple[int, int]] = set()
        wrap = rewriter.wrap  # type: ignore[union-attr]
        for ref in st.relation_refs:
            referenced.add((ref.schema, ref.name))
            body, raw, refusal, covers = wrap(ref, masks, catalog)
            if refusal:
                self.deny("mask_key_unavailable", f"{ref.schema}.{ref.name}: {refusal}, so its masks cannot be "
                          "applied; ask the gateway's administrators")
                continue
            if body is None:
                continue
            covered |= covers
            if raw:
                origins |= raw
            self.rewrites.append((ref, body, [o.name for o in st.outputs] if copy_relation else None))
        for rel in st.relations:
            # A relation read through a path the rewrite has no splice point for: refuse, never guess.
            if (rel.access is _READ and rel.via_view is None and rel.resolved
                    and (rel.schema, rel.name) not in referenced and rel.schema not in builtins.SYSTEM_SCHEMAS):
                found = catalog.resolve_relation(rel.schema, rel.name)
                if found is not None and any(masks.find(ColumnId(rel.schema, rel.name, c.name))
                                             for c in found.columns):
                    self.deny("rewrite_incomplete", f"{rel.qualified} has masked columns and is read where the "
                              "gateway cannot place its masks; read it in a FROM clause")
        if self.rewrites and st.node == "CopyStmt":
            options = st.details.copy_options or {}
            if str(options.get("format", "")).lower() == "binary":  # type: ignore[union-attr]
                self.deny("copy_binary_masked", "binary COPY of a table with masked columns is refused; use "
                          "FORMAT text or csv (masked values are text)")
        read = used | st.referenced
        masked = masks.masked(read)
        if not masked and not self.rewrites:
            self.scrub_errors = self._writes_masked_table(st)
            return
        hit = frozenset(masked)
        masking = self.policy.masking
        targets = {(r.schema, r.name) for r in st.relations if r.access in WRITE_ACCESSES}
        for position, out in enumerate(st.outputs):
            if hit.isdisjoint(out.sources):
                continue
            found = self._masks_of(out)
            if not found:
                continue
            source, mask = found[0] if len(found) == 1 else min(found)
            tables = {(c.schema, c.table) for c, _ in found}
            if targets and not tables.isdisjoint(targets):
                self.deny("masked_returning", f"output {out.name!r} returns masked column {source} of the "
                          "table this statement writes, which cannot be masked inside the statement; leave it "
                          "out of RETURNING")
                continue
            if not tables <= covered:
                self.deny("rewrite_incomplete", f"output {out.name!r} derives from masked column {source}, "
                          "whose masks the gateway could not place; select it from a table in FROM")
                continue
            self._output_mask(position, out, source, mask, found,
                              "this policy refuses it (masking.on_expression: deny); select the column itself")
        predicate = st.predicate_sources & hit
        if predicate:
            exposed = sorted(c for c in predicate if (c.schema, c.table) in targets or (c.schema, c.table)
                             not in covered)
            if exposed and not masking.allow_in_predicates:
                cols = ", ".join(str(c) for c in exposed)
                self.deny("masked_predicate", f"masked column(s) {cols} of the table this statement writes may "
                          "not be used to filter, join or sort: they cannot be masked inside the statement, so "
                          "the predicate would reveal their values; filter on other columns")
        written = st.written_sources & hit
        if written:
            cols = ", ".join(str(c) for c in sorted(written))
            self.deny("masked_data_laundering", f"this statement would copy masked column(s) {cols} into a "
                      "table (or pass them to an execution), where they would no longer be masked")
        self.upstream = bool(self.rewrites)
        self.raw_origins = frozenset(origins)
        # Errors over masked values quote masked values only, but stay withheld as before whenever the
        # statement uses a masked column: a second net, should a value ever escape the rewrite.
        self.scrub_errors = bool(masked) or bool(self.masks)


_REWRITTEN = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def _has_literal(sql: str) -> bool:
    try:
        text = parser.parse_sql_json(sql)
    except ParseError:
        return True
    return '"A_Const"' in text and ('"sval"' in text or '"ival"' in text or '"fval"' in text
                                    or '"bsval"' in text)


def source_list(found: list[tuple[ColumnId, ColumnMask]]) -> str:
    return ", ".join(sorted({str(c) for c, _ in found}))


_ROW_COMPUTING = ('"distinctClause"', '"groupClause"', '"groupingSets"', '"windowClause"', '"havingClause"',
                  '"over"', '"SETOP_UNION"', '"SETOP_INTERSECT"', '"SETOP_EXCEPT"')


def _computes_over_rows(sql: str) -> bool:
    """Whether a statement de-duplicates, groups, windows or combines rows (its row count says something)."""
    try:
        text = parser.parse_sql_json(sql)
    except ParseError:
        return True
    return any(key in text for key in _ROW_COMPUTING)
