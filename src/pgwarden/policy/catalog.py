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

    def with_search_path(self, search_path: Iterable[str]) -> Catalog:
        return Catalog(
            relations=self.relations,
            functions=self.functions,
            search_path=tuple(search_path),
            version=self.version,
            complete=self.complete,
        )

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


def merge(base: Catalog, relations: Iterable[Relation], functions: Mapping[str, Iterable[str]],
          *, search_path: Iterable[str], version: str, complete: bool) -> Catalog:
    """A snapshot made of ``base`` overlaid with live relations and functions."""
    rels = dict(base.relations)
    for rel in relations:
        rels[(rel.schema, rel.name)] = rel
    funcs = {k: set(v) for k, v in base.functions.items()}
    for fname, schemas in functions.items():
        funcs.setdefault(fname, set()).update(schemas)
    return Catalog(
        relations=rels,
        functions={k: frozenset(v) for k, v in funcs.items()},
        search_path=tuple(search_path),
        version=version,
        complete=complete,
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
