"""The catalog snapshot the analyser resolves names against.

A :class:`Catalog` is plain data: relations with their columns, view
definitions, and which schemas define each function name. ``engine`` builds one
from a target's ``pg_catalog`` (and refreshes it after DDL); ``policy`` only
reads it, so analysis stays pure. When no database is reachable,
:func:`builtin_catalog` gives the system catalogs of a stock PostgreSQL, shipped
with the package, so offline checks still know ``pg_catalog`` from user names.

Resolution follows PostgreSQL's own rules: an unqualified relation is looked up
in ``pg_temp`` (when the session has temp relations), then ``pg_catalog``, then
the pinned ``search_path`` in order; an unqualified function likewise searches
``pg_catalog`` first.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    attnum: int
    type_name: str = ""


@dataclass(frozen=True, slots=True)
class Relation:
    """A table-like object: ``kind`` is pg_class.relkind (r, v, m, p, f, S, c)."""

    schema: str
    name: str
    kind: str
    columns: tuple[Column, ...]
    oid: int = 0
    view_sql: str | None = None  # pg_get_viewdef() for views and materialized views
    ancestors: tuple[str, ...] = ()  # 'schema.table' of inheritance parents / partitioned tables above
    # (for a sequence: the table owning it, so the table's deny lists hold for the sequence too)
    # Kinds of free text the catalogs attach to this relation, which other catalogs show to anyone:
    # "comment", "default", "check", "index" (partial/expression index text), "trigger", "rule",
    # "policy", "statistics" (extended statistics expressions). Only known in a live (complete) snapshot.
    texts: frozenset[str] = frozenset()
    # What a write can tell about stored values, by unique index, exclusion constraint or foreign key (the
    # last field, its oid, groups them): (column, "", "", "", group) for each column of a unique index or
    # exclusion constraint — key, expression, predicate and generated-from columns (the write fails iff
    # another row matches) — and (column, schema, table, referenced column, group) for each column of a
    # foreign key (it fails iff no row of the referenced table holds the value). Live snapshots only.
    probes: tuple[tuple[str, str, str, str, int], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None

    @property
    def is_view(self) -> bool:
        return self.kind in ("v", "m") and self.view_sql is not None


@dataclass(frozen=True, slots=True)
class Routine:
    """A function, procedure or aggregate outside ``pg_catalog``: user code, whatever its name."""

    schema: str
    name: str
    nargs: int
    nargs_min: int  # nargs minus the arguments with defaults
    variadic: bool
    arg_types: tuple[str, ...] = ()
    kind: str = "f"  # pg_proc.prokind
    extension: bool = False  # a member of an extension (installed by a DBA), not written by users
    language: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def accepts(self, nargs: int) -> bool:
        """Whether a call with ``nargs`` arguments may resolve to this routine (-1: count unknown)."""
        if nargs < 0:
            return True
        if self.variadic:
            return nargs >= self.nargs_min - 1
        return self.nargs_min <= nargs <= self.nargs


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator outside ``pg_catalog``: its function is user code."""

    schema: str
    name: str
    left: str  # type name, "" for a prefix operator
    right: str
    function: str  # schema.name of oprcode
    extension: bool = False

    @property
    def arity(self) -> int:
        return 1 if not self.left else 2


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot of one target's names.

    ``version`` changes whenever the snapshot is reloaded; verdict caches key on
    it. ``complete`` is True when the snapshot was read from the live target
    (every user relation and function is known); the builtin snapshot is not
    complete, so an unknown user name there means "cannot tell", not "absent".
    """

    relations: Mapping[tuple[str, str], Relation]
    functions: Mapping[str, frozenset[str]]  # function name -> schemas defining it
    search_path: tuple[str, ...] = ("public",)
    version: str = "builtin"
    complete: bool = False
    _by_name: Mapping[str, tuple[Relation, ...]] = field(default_factory=dict, repr=False, compare=False)
    # User code, by name: routines and operators defined outside pg_catalog, and the type names
    # (source and target) of casts whose function lives outside pg_catalog.
    routines: Mapping[str, tuple[Routine, ...]] = field(default_factory=dict, repr=False, compare=False)
    operators: Mapping[str, tuple[Operator, ...]] = field(default_factory=dict, repr=False, compare=False)
    user_cast_types: frozenset[str] = frozenset()
    # Domains whose CHECK (or a base domain's) calls a function outside pg_catalog: converting any value
    # to one runs it (a subset of user_cast_types).
    checked_domains: frozenset[str] = frozenset()

    @functools.cached_property
    def memo(self) -> dict:
        """What the analysis derives from this snapshot (view and table lineage): it lives and dies with
        the snapshot, so a reloaded catalog never sees lineage computed from an older one."""
        return {}

    def with_search_path(self, search_path: Iterable[str]) -> Catalog:
        return Catalog(
            relations=self.relations,
            functions=self.functions,
            search_path=tuple(search_path),
            version=self.version,
            complete=self.complete,
            routines=self.routines,
            operators=self.operators,
            user_cast_types=self.user_cast_types,
            checked_domains=self.checked_domains,
        )

    @functools.cached_property
    def _by_oid(self) -> dict[int, Relation]:
        return {rel.oid: rel for rel in self.relations.values() if rel.oid}

    def relation_by_oid(self, oid: int) -> Relation | None:
        return self._by_oid.get(oid)

    def resolve_regclass(self, text: str) -> Relation | None:
        """The relation a regclass literal names ('16385', 'schema.name', 'name', quoted parts), or None."""
        text = text.strip()
        if text.isdigit():
            return self._by_oid.get(int(text))
        parts = split_identifier(text)
        if parts is None or not 1 <= len(parts) <= 3:
            return None
        return self.resolve_relation(parts[-2] if len(parts) >= 2 else None, parts[-1])

    def user_routines(self, name: str) -> tuple[Routine, ...]:
        return self.routines.get(name, ())

    def user_operators(self, name: str) -> tuple[Operator, ...]:
        return self.operators.get(name, ())

    @functools.cached_property
    def relations_with_text(self) -> tuple[Relation, ...]:
        return tuple(rel for rel in self.relations.values() if rel.texts or rel.view_sql)

    @functools.cached_property
    def _lookup_path(self) -> tuple[str, ...]:
        path = list(self.search_path)
        if "pg_catalog" not in path:
            path.insert(0, "pg_catalog")
        return ("pg_temp", *path) if "pg_temp" not in path else tuple(path)

    def lookup_path(self) -> tuple[str, ...]:
        """Schemas searched for an unqualified relation, in PostgreSQL's order."""
        return self._lookup_path

    @functools.cached_property
    def _unqualified(self) -> dict[str, Relation]:
        """Name → the relation an unqualified name resolves to: the first along the lookup path.

        Built once per snapshot (the snapshot never changes), so that resolving a
        name costs one lookup rather than one per schema of the path.
        """
        rank = {schema: i for i, schema in reversed(list(enumerate(self._lookup_path)))}
        found: dict[str, tuple[int, Relation]] = {}
        for (schema, name), rel in self.relations.items():
            i = rank.get(schema)
            if i is not None and (name not in found or i < found[name][0]):
                found[name] = (i, rel)
        return {name: rel for name, (_, rel) in found.items()}

    def resolve_relation(self, schema: str | None, name: str) -> Relation | None:
        if schema is not None:
            return self.relations.get((schema, name))
        return self._unqualified.get(name)

    def default_schema(self, name: str) -> str:
        """The schema an unqualified, unknown relation name would be created in or read from."""
        for candidate in self.search_path:
            if candidate not in ("pg_catalog", "pg_temp", "$user"):
                return candidate
        return "public"

    def function_schemas(self, name: str) -> frozenset[str]:
        return self.functions.get(name, frozenset())

    def is_builtin_function(self, name: str) -> bool:
        return "pg_catalog" in self.functions.get(name, frozenset())


def split_identifier(text: str) -> list[str] | None:
    """'a.b', '"A".b', 'b' → their parts as PostgreSQL folds them; None when not an identifier chain."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            k = text.find(".", i)
            k = n if k < 0 else k
            word = text[i:k].strip()
            if not word or '"' in word:
                return None
            parts.append(word.lower())
            i = k
        if i < n:
            if text[i] != ".":
                return None
            i += 1
            if i == n:
                return None
    return parts or None


def merge(base: Catalog, relations: Iterable[Relation], functions: Mapping[str, Iterable[str]],
          *, search_path: Iterable[str], version: str, complete: bool,
          routines: Iterable[Routine] = (), operators: Iterable[Operator] = (),
          user_cast_types: Iterable[str] = (), checked_domains: Iterable[str] = ()) -> Catalog:
    """A snapshot made of ``base`` overlaid with live relations and functions."""
    rels = dict(base.relations)
    for rel in relations:
        rels[(rel.schema, rel.name)] = rel
    funcs = {k: set(v) for k, v in base.functions.items()}
    for fname, schemas in functions.items():
        funcs.setdefault(fname, set()).update(schemas)
    by_name: dict[str, list[Routine]] = {}
    for routine in routines:
        by_name.setdefault(routine.name, []).append(routine)
        funcs.setdefault(routine.name, set()).add(routine.schema)
    ops: dict[str, list[Operator]] = {}
    for op in operators:
        ops.setdefault(op.name, []).append(op)
    return Catalog(
        relations=rels,
        functions={k: frozenset(v) for k, v in funcs.items()},
        search_path=tuple(search_path),
        version=version,
        complete=complete,
        routines={k: tuple(v) for k, v in by_name.items()},
        operators={k: tuple(v) for k, v in ops.items()},
        user_cast_types=frozenset(user_cast_types) | frozenset(checked_domains),
        checked_domains=frozenset(checked_domains),
    )


@functools.cache
def builtin_catalog() -> Catalog:
    """System catalogs and pg_catalog functions of a stock PostgreSQL (shipped JSON)."""
    raw = json.loads(resources.files("pgwarden.policy").joinpath("data/pg_catalog.json").read_text())
    relations = {}
    for r in raw["relations"]:
        rel = Relation(
            schema=r["schema"], name=r["name"], kind=r["kind"],
            columns=tuple(Column(c[0], c[1], c[2]) for c in r["columns"]),
        )
        relations[(rel.schema, rel.name)] = rel
    functions = {name: frozenset(schemas) for name, schemas in raw["functions"].items()}
    return Catalog(relations=relations, functions=functions, version=f"builtin-{raw['server_version']}")
