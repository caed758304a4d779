"""What the analyser reports about one SQL statement: the Analysis contract.

These are the facts the decision is made from. They are plain data, immutable
or read-only by convention (see each class), so that verdicts can be cached and
tests can assert on them directly. Anything the
analyser did not understand lands in ``unknown`` — the decision treats a
non-empty ``unknown`` as a reason to deny, never as "probably fine".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class StatementClass(StrEnum):
    """The coarse kind of a statement, as policy rules name them."""

    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ADMIN = "admin"
    TRANSACTION = "transaction"
    SESSION = "session"
    LOCK = "lock"


class Access(StrEnum):
    """How a statement touches a relation."""

    READ = "read"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"
    DDL = "ddl"
    LOCK = "lock"
    PLAN = "plan"  # named in EXPLAIN without ANALYZE: planned, never executed


WRITE_ACCESSES = frozenset({Access.INSERT, Access.UPDATE, Access.DELETE, Access.TRUNCATE})


# ColumnId, RelationAccess and FunctionCall are named tuples rather than frozen
# dataclasses: every statement analysed builds, hashes and compares them many times
# (lineage sets, de-duplication, mask lookups, memo keys), and a tuple does all of it
# in C where a dataclass runs Python code. They stay immutable, compare by value, and
# ColumnId orders by (schema, table, column), as the dataclasses did.


class ColumnId(NamedTuple):
    """A base column, ``schema.table.column``."""

    schema: str
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


class RelationAccess(NamedTuple):
    """A relation a statement touches, and how."""

    schema: str
    name: str
    access: Access
    resolved: bool = True  # False: not in the catalog (schema is the search_path guess)
    via_view: str | None = None  # set when reached through a view's definition
    kind: str = "r"  # pg_class.relkind when known; "?" when unresolved, "cte" never appears here

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class FunctionCall(NamedTuple):
    """A function a statement calls."""

    schema: str | None  # as written; None when unqualified
    name: str
    resolved_schemas: frozenset[str] = frozenset()  # schemas that define this name, per the catalog
    first_arg: str | None = None  # the first argument when it is a literal (set_config's name, a regclass)
    nargs: int = -1  # how many arguments the call passes (-1: unknown, e.g. VARIADIC or an operator's)
    kind: str = "function"  # "function", "operator" (name is the operator's), "cast" (name is the type)

    @property
    def display(self) -> str:
        if self.kind == "operator":
            return f"OPERATOR({self.schema}.{self.name})" if self.schema else f"operator {self.name}"
        if self.kind == "cast":
            return f"cast to {self.name}"
        return f"{self.schema}.{self.name}" if self.schema else self.name


class RelationRef(NamedTuple):
    """One reference to a catalog relation read by a query (a RangeVar of FROM, JOIN, COPY, ``TABLE t``).

    ``location`` is the byte offset of its name in the whole query string, as libpg_query reports it;
    the mask rewrite splices a masking derived table there. ``columns`` are the relation's columns in
    order: (name, type as ``format_type`` gives it, lineage sources, plain). Not set inside view
    definitions (the view itself is wrapped) nor for DML targets (which cannot be wrapped).
    """

    location: int
    schema: str
    name: str
    kind: str
    inherit: bool  # False for ONLY
    aliased: bool
    columns: tuple[tuple[str, str, frozenset[ColumnId], bool], ...]


@dataclass(slots=True, unsafe_hash=True)
class OutputColumn:
    """One column of the result the client receives, with its lineage.

    Read-only by convention rather than ``frozen`` (see StatementAnalysis; several are
    built per statement), with equality and hashing by value as when it was frozen.

    ``plain`` is True when the value is exactly one source column's value
    (through aliases, subqueries, CTEs and views), so a per-column strategy
    such as keep-last-4 is meaningful. ``origin`` is (table oid, attnum) for a
    plain column of a base table: the wire proxy confirms it against
    RowDescription.
    """

    name: str
    sources: frozenset[ColumnId]
    plain: bool
    whole_row: bool = False
    origin: tuple[int, int] | None = None
    expands: bool = False  # stands for an unknown number of columns: positions after it are unknown


@dataclass(frozen=True, slots=True)
class SettingChange:
    """SET / RESET / SET LOCAL / SET TRANSACTION / SET SESSION CHARACTERISTICS."""

    name: str  # lower-case GUC name; "all" for RESET ALL; "session_characteristics" etc.
    value: str | None
    is_local: bool = False
    reset: bool = False
    items: tuple[str, ...] = ()  # SET's values one by one, as constants (``value`` joins them with ", ")


@dataclass(frozen=True, slots=True)
class StatementDetails:
    """Facts only some statement kinds have; typed, so nothing is read by string key."""

    dropped_name: str | None = None  # DEALLOCATE / CLOSE: the name, or None for ALL
    discard: str | None = None  # DISCARD_ALL, DISCARD_PLANS, DISCARD_SEQUENCES, DISCARD_TEMP
    alter_system: bool = False
    alter_subtypes: tuple[str, ...] = ()  # ALTER TABLE sub-commands (AT_Drop, AT_AlterColumnType…)
    copy_relation: bool = False  # COPY t [(cols)]: the mask rewrite turns it into COPY (SELECT …)
    copy_options: Mapping[str, object] | None = None  # COPY … WITH (format …)
    catalog_pins: Mapping[str, list] | None = None  # pinned reads of catalog views (see builtins.PINNED_CATALOGS)
    from_session: str | None = None  # EXECUTE / FETCH: the text of the prepared statement or cursor


NO_DETAILS = StatementDetails()


@dataclass(slots=True, eq=False)
class StatementAnalysis:
    """Facts about one top-level statement (nested parts folded in, and kept).

    Read-only by convention rather than ``frozen``: a frozen dataclass of this
    many fields costs several microseconds to build (every field goes through
    ``object.__setattr__``), which is a measurable share of a verdict.
    """

    text: str
    node: str  # parse node name, e.g. "SelectStmt"
    command_tag: str  # e.g. "SELECT", "CREATE TABLE"
    classes: frozenset[StatementClass]  # every class any executed part belongs to
    relations: tuple[RelationAccess, ...] = ()
    functions: tuple[FunctionCall, ...] = ()
    outputs: tuple[OutputColumn, ...] = ()
    # columns read anywhere other than the output list: WHERE, JOIN, GROUP BY,
    # ORDER BY, HAVING, window clauses, function arguments in FROM, ...
    predicate_sources: frozenset[ColumnId] = frozenset()
    # base columns whose values flow into a written table (INSERT…SELECT,
    # UPDATE…SET, CREATE TABLE AS, SELECT INTO, COPY FROM (query)): laundering
    written_sources: frozenset[ColumnId] = frozenset()
    whole_row_refs: frozenset[str] = frozenset()  # relations referenced as whole rows
    referenced: frozenset[ColumnId] = frozenset()  # every base column read anywhere in the statement
    missing_where: bool = False  # UPDATE/DELETE (anywhere inside) without WHERE
    settings: tuple[SettingChange, ...] = ()
    nested: tuple[str, ...] = ()  # kinds of nested statements seen: "cte_dml", "explain_analyze", ...
    explain_analyze: bool = False
    copy_target: str | None = None  # "stdout", "stdin", "file", "program" for COPY
    read_write_transaction: bool = False  # BEGIN / SET TRANSACTION ... READ WRITE
    prepared_name: str | None = None  # PREPARE name
    execute_name: str | None = None  # EXECUTE name
    cursor_name: str | None = None  # DECLARE name / FETCH / MOVE / CLOSE
    creates_temp: bool = False
    unknown: tuple[str, ...] = ()  # things not understood: each a short description
    # True when the facts depend on a literal's value (SET values, set_config's name,
    # COPY targets, a constant WHERE): the verdict may then only be reused for this
    # exact text, never for the same statement with other literals.
    literal_dependent: bool = True
    details: StatementDetails = field(default_factory=lambda: NO_DETAILS, compare=False)
    relation_refs: tuple[RelationRef, ...] = ()  # read references to catalog relations, for the mask rewrite
    # INSERT / UPDATE / MERGE / COPY FROM targets as written: (schema or None, table, the columns assigned
    # (("*",): all of them), whether the other columns keep stored values (UPDATE)), resolved only where
    # masks could make them probes (_mask_plan.existence_probes)
    written: tuple[tuple[str | None, str, tuple[str, ...], bool], ...] = ()

    @property
    def width(self) -> int | None:
        """How many columns the result has, when the analysis knows exactly (None otherwise)."""
        if self.node not in _RESULT_NODES:
            return None
        for out in self.outputs:
            if out.expands:
                return None
        if self.node in ("FetchStmt", "ExecuteStmt") and not self.outputs:
            return None
        return len(self.outputs)

    @property
    def executes(self) -> bool:
        return self.node != "ExplainStmt" or self.explain_analyze


_RESULT_NODES = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "FetchStmt",
                           "ExecuteStmt"})


@dataclass(slots=True, unsafe_hash=True)
class Analysis:
    """All statements of one query string, in order.

    Read-only by convention rather than ``frozen`` (see StatementAnalysis), with
    equality and hashing by value as when it was frozen.
    """

    text: str
    statements: tuple[StatementAnalysis, ...]
    error: str | None = None  # why the text could not be analysed: the string is denied whole
    error_code: str = "syntax_error"  # or "too_complex" (nesting deeper than the gateway walks)

    @property
    def ok(self) -> bool:
        return self.error is None
