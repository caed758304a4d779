"""The checks of one statement: classes, built-in denials, relations, functions, settings.

:class:`StatementCheck` runs every check of one analysed statement under one rule and collects
denials (reasons), approval triggers and, through :class:`~pgwarden.policy._mask_plan.MaskPlanning`,
the mask plan. :class:`RuleChecks` holds what each rule's checks work out once. Pure.
"""
from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping

from . import builtins
from ._mask_plan import MaskPlanning, MaskSet, _has_literal
from .analysis import (
    WRITE_ACCESSES,
    Access,
    ColumnId,
    FunctionCall,
    RelationAccess,
    SettingChange,
    StatementAnalysis,
    StatementClass,
)
from .catalog import Catalog, split_identifier
from .language import ApprovalTrigger, PolicyDocument, Rule, parse_duration_ms
from .sql import (
    RewritePlanner,
    analyse,
)
from .verdict import (
    MaskAction,
    Reason,
)

_ALWAYS = frozenset({StatementClass.TRANSACTION, StatementClass.SESSION})
_DESTRUCTIVE_NODES = frozenset({"DropStmt", "TruncateStmt", "DropdbStmt", "DropRoleStmt", "DropOwnedStmt"})
_DESTRUCTIVE_ALTERS = ("AT_Drop", "AT_AlterColumnType")
_TRIGGERS = {StatementClass(t.value): t for t in ApprovalTrigger if t.value in StatementClass._value2member_map_}
_SENSITIVE_TABLE_NAMES = frozenset(table for _, table in builtins.SENSITIVE_TABLES)
_TEXT_TABLE_NAMES = frozenset(table for _, table, _ in builtins.OBJECT_TEXT_COLUMNS)
_TEXT_COLUMNS_BY_TABLE: dict[tuple[str, str], list[tuple[str, str]]] = {}
for (_schema, _table, _column), _kind in builtins.OBJECT_TEXT_COLUMNS.items():
    _TEXT_COLUMNS_BY_TABLE.setdefault((_schema, _table), []).append((_column, _kind))
_TEXT_SEMANTICS = frozenset({"client_encoding", "standard_conforming_strings", "backslash_quote"})
# format_type's SQL names of built-in types → the names PostgreSQL's parser gives a cast (``x::integer``
# and ``CAST(x AS integer)`` both parse to ``int4``)
_TYPE_ALIASES = {
    "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8", "real": "float4",
    "double precision": "float8", "float": "float8", "boolean": "bool", "character varying": "varchar",
    "character": "bpchar", "char": "bpchar", "decimal": "numeric", "dec": "numeric",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "time without time zone": "time", "time with time zone": "timetz", "bit varying": "varbit",
}


@functools.lru_cache(maxsize=16)
def _user_cast_types(types: frozenset[str]) -> dict[str, str]:
    """The catalog's user-cast type names (format_type's spelling: maybe schema-qualified, quoted, an
    array) by the name the parser gives a cast to them, lower-cased (matching is case-blind: it can only
    refuse more)."""
    out: dict[str, str] = {}
    for type_name in types:
        base = type_name
        while base.endswith("[]"):
            base = base[:-2]
        parts = split_identifier(base)  # None for "double precision" and kin: no identifier chain
        last = (parts[-1] if parts else base).lower()
        out.setdefault(_TYPE_ALIASES.get(last, last), type_name)
    return out


_READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only",
                                 "session_characteristics.transaction_read_only"})


class RuleChecks:
    """What the class and approval checks need from one rule, worked out once per rule, not per statement."""

    __slots__ = ("allowed", "destructive", "hint", "permitted", "quiet", "rule", "triggers")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        allowed = set(rule.statements.allow) | _ALWAYS
        if StatementClass.WRITE in allowed:
            allowed.add(StatementClass.LOCK)
        self.allowed = frozenset(allowed)
        self.triggers = frozenset(rule.approval.required_for)
        self.destructive = ApprovalTrigger.DESTRUCTIVE in self.triggers
        # Classes that neither need approval nor are denied: a statement of only these passes the class check.
        self.quiet = frozenset(k for k in self.allowed if _TRIGGERS.get(k) not in self.triggers)
        self.permitted = ", ".join(sorted(c.value for c in rule.statements.allow)) or "nothing"
        self.hint = _approval_hint(rule)


class StatementCheck(MaskPlanning):
    """All checks of one statement; collects denials, approval triggers and masks."""

    __slots__ = ("approvals", "catalog", "checks", "denials", "index", "mask_set", "masks", "memo", "policy",
                 "raw_origins", "rewriter", "rewrites", "rule", "scrub_errors", "upstream", "user_code")

    def __init__(self, policy: PolicyDocument, checks: RuleChecks, masks: MaskSet, catalog: Catalog,
                 index: int, memo: dict, rewriter: RewritePlanner | None = None):
        self.memo = memo
        self.rewriter = rewriter
        self.rewrites: list[tuple] = []  # (RelationRef, derived table, COPY columns or None)
        self.upstream = False
        self.raw_origins: frozenset[tuple[int, int]] = frozenset()
        self.policy = policy
        self.checks = checks
        self.rule = checks.rule
        self.mask_set = masks
        self.catalog = catalog
        self.index = index
        self.denials: list[Reason] = []
        self.approvals: list[str] = []
        self.masks: list[MaskAction] = []
        self.scrub_errors = False
        self.user_code = False  # calls a user function (functions.allow): code the analysis cannot see into

    def deny(self, code: str, message: str) -> None:
        self.denials.append(Reason(code, message, self.index))

    def run(self, st: StatementAnalysis) -> None:
        for item in st.unknown:
            self.deny("not_understood", f"the gateway does not understand part of this statement ({item}), "
                      "so it refuses it; rewrite it in plainer SQL")
        self.classes(st)
        self.builtin_statement_denials(st)
        if st.relations:
            self.relations(st)
        if st.functions:
            self.functions(st)
        if st.settings:
            self.settings(st)
        # Every column whose values the statement uses (outputs, filters, writes): both checks below
        # need them.
        used = set(st.predicate_sources)
        used |= st.written_sources
        for out in st.outputs:
            used |= out.sources
        self.sensitive_columns(used)
        self.masking(st, used)

    # -- classes and approval --------------------------------------------------------

    def classes(self, st: StatementAnalysis) -> None:
        rule = self.rule
        checks = self.checks
        triggers = checks.triggers
        if not st.classes <= checks.quiet:  # otherwise no class needs approval or is denied
            for klass in sorted(st.classes):
                trigger = _TRIGGERS.get(klass)
                if trigger is not None and trigger in triggers:
                    self.approvals.append(f"{klass.value} statements need approval under rule {rule.name!r}")
                elif klass not in checks.allowed:
                    self.deny("statement_class_denied",
                              f"{_what(st, klass)} is {klass.value}; rule {rule.name!r} permits "
                              f"{checks.permitted}" + checks.hint)
        if checks.destructive and (
                st.node in _DESTRUCTIVE_NODES or any(r.access in (Access.DELETE, Access.TRUNCATE)
                                                     for r in st.relations) or _destructive_alter(st)):
            self.approvals.append(f"{st.command_tag} is destructive; rule {rule.name!r} holds it for approval")
        if st.missing_where:
            if ApprovalTrigger.NO_WHERE in triggers:
                self.approvals.append(f"{st.command_tag} without a WHERE clause needs approval")
            elif rule.require_where:
                self.deny("missing_where", f"an UPDATE or DELETE in this {st.command_tag} has no WHERE clause "
                          "naming rows (or only a constant one), so it would touch every row; add a WHERE clause "
                          "on the row's columns")
        if st.read_write_transaction and rule.read_only():
            self.deny("read_write_transaction", f"rule {rule.name!r} is read-only; start transactions "
                      "without READ WRITE")

    # -- built-in denials ------------------------------------------------------------

    def builtin_statement_denials(self, st: StatementAnalysis) -> None:
        if st.node == "DoStmt":
            self.deny("dynamic_sql", "DO blocks run code the gateway cannot check; send each statement itself")
        elif st.node == "LoadStmt":
            self.deny("server_program", "LOAD loads code into the database server")
        elif st.node == "AlterSystemStmt":
            self.deny("configuration_change", "ALTER SYSTEM changes server configuration; ask a DBA")
        if st.copy_target in ("file", "program"):
            self.deny("server_file_access", f"COPY to or from a server {st.copy_target} is refused; use COPY … "
                      "TO STDOUT / FROM STDIN, which the client handles")
        if st.copy_target == "stdout" and self.policy.masking.detectors.enabled:
            changed = copy_writing_options(st.details.copy_options)
            if changed:
                self.deny("copy_format_option", f"COPY … TO STDOUT with {', '.join(changed)} writes values in a form "
                          "the content detectors do not read (PostgreSQL escapes or doubles those characters, or "
                          "converts the encoding, inside values); leave DELIMITER, QUOTE, ESCAPE and ENCODING at "
                          "their defaults, or SELECT the rows")
        if st.details.discard == "DISCARD_ALL" and self._discard_widens():
            self.deny("session_change", "DISCARD ALL would drop the role the gateway assumes for this rule "
                      "(it runs SET SESSION AUTHORIZATION DEFAULT); reconnect instead, or have the rule log "
                      "in as its own role (upstream_login)")
        if st.node == "NotifyStmt" and self.rule.read_only():
            d = builtins.NOTIFY_DENIAL
            self.deny(d.code, f"NOTIFY {d.message}")

    def _discard_widens(self) -> bool:
        # SESSION AUTHORIZATION DEFAULT returns to the login role: harmless unless the rule narrows
        # itself with SET ROLE on top of a wider login (RESET ALL returns to the pinned start-up values).
        role = self.rule.upstream_role
        login = self.rule.upstream_login
        return bool(role) and (login is None or login.user != role)

    # -- relations -------------------------------------------------------------------

    def relations(self, st: StatementAnalysis) -> None:
        memo = self.memo
        name, search_path, masked = self.rule.name, self.catalog.search_path, bool(self.mask_set.masks)
        pins = st.details.catalog_pins
        for rel in st.relations if len(st.relations) == 1 else dict.fromkeys(st.relations):
            if rel.schema == "pg_catalog" and rel.name in builtins.PINNED_CATALOGS and rel.via_view is None:
                # depends on this statement's WHERE clause: not memoised
                self._pinned_catalog(rel, pins.get(rel.name, [None]) if isinstance(pins, dict) else [None])
                continue
            key = (name, rel, search_path, masked, self.catalog.version)
            found = memo.get(key)
            if found is None:
                found = self._remembered(key, self._relation, rel)
            for code, message in found:
                self.deny(code, message)

    def _remembered(self, key: tuple, check, item) -> tuple[tuple[str, str], ...]:
        """Run ``check(item)`` and remember the denials it made under ``key`` (in Decider._memo)."""
        mark = len(self.denials)
        check(item)
        found = tuple((r.code, r.message) for r in self.denials[mark:])
        del self.denials[mark:]
        if len(self.memo) < 100_000:
            self.memo[key] = found
        return found

    def _relation(self, rel: RelationAccess) -> None:
        rule = self.rule
        name = rel.qualified
        if rel.schema in builtins.SYSTEM_SCHEMAS:
            self._system_relation(rel.schema, rel.name, rel.access)
            return
        schemas = self._candidate_schemas(rel)
        if rel.via_view is not None:
            # Through a view, explicit deny lists still hold; the allow lists were
            # checked on the view itself.
            for schema in schemas:
                if rule.schemas.denies(schema) or rule.tables.denies(f"{schema}.{rel.name}"):
                    self.deny("table_denied", f"{schema}.{rel.name}, which rule {rule.name!r} denies, "
                              f"is read through {rel.via_view}")
            return
        for schema in schemas:
            qualified = f"{schema}.{rel.name}"
            if not rule.schemas.permits(schema):
                self.deny("schema_denied", f"schema {schema!r} is not open to rule {rule.name!r}"
                          f" ({qualified}); allowed schemas: {', '.join(rule.schemas.allow) or 'none'}")
            elif not rule.tables.permits(qualified):
                self.deny("table_denied", f"{qualified} is not open to rule {rule.name!r}")
        if rel.access in WRITE_ACCESSES and rule.writes is not None:
            grants = {g.value for pattern, kinds in rule.writes.items() if fnmatch.fnmatchcase(name, pattern)
                      for g in kinds}
            if rel.access.value not in grants:
                self.deny("write_not_granted", f"rule {rule.name!r} does not grant {rel.access.value} on "
                          f"{name}" + (f" (granted: {', '.join(sorted(grants))})" if grants else ""))

    def _candidate_schemas(self, rel) -> list[str]:
        # A relation the catalog does not know, named without a schema, could be
        # created in (or be found later in) any schema of the pinned search_path.
        if rel.resolved or rel.schema == "pg_temp":
            return [rel.schema]
        path = [s for s in self.catalog.search_path if s not in ("pg_catalog", "$user")]
        return list(dict.fromkeys([rel.schema, *path])) if rel.schema in path else [rel.schema]

    def _system_relation(self, schema: str, name: str, access: Access) -> None:
        if access not in (Access.READ, Access.PLAN):
            self.deny("system_catalog_write", f"{schema}.{name} is a system catalog; it cannot be changed "
                      "through the gateway")
            return
        if schema == "pg_toast":
            d = builtins.TOAST_DENIAL
            self.deny(d.code, f"{schema}.{name}: {d.message}")
        elif name in builtins.STATISTICS_CATALOGS and name not in builtins.PINNED_CATALOGS:
            d = builtins.STATISTICS_DENIAL
            self.deny(d.code, f"{schema}.{name}: {d.message}; read pg_stats for a permitted table instead "
                      f"({builtins.PINNED_HINT['pg_stats']})")
        elif name in builtins.CREDENTIAL_CATALOGS:
            d = builtins.CREDENTIAL_DENIAL
            self.deny(d.code, f"{schema}.{name} {d.message}")
        elif not self.rule.catalog_access:
            self.deny("catalog_denied", f"rule {self.rule.name!r} does not allow reading system catalogs "
                      f"({schema}.{name}); use the gateway's schema tools instead")

    def _pinned_catalog(self, rel: RelationAccess, pins: list) -> None:
        """A statistics or sequence view: allowed only when its WHERE names permitted (unmasked) objects."""
        if not self.rule.catalog_access:
            self._system_relation(rel.schema, rel.name, rel.access)
            return
        schema_col, object_col, sub_col = builtins.PINNED_CATALOGS[rel.name]
        hint = builtins.PINNED_HINT[rel.name]
        statistics = rel.name in builtins.STATISTICS_CATALOGS
        what = "planner statistics (sample values)" if statistics else "sequence values"
        for pin in pins:
            objects = pin.get(object_col) if pin else None
            if not objects:
                self.deny(builtins.STATISTICS_DENIAL.code if statistics else "sequence_leak",
                          f"{rel.qualified} shows {what} of every table, denied and masked ones included; {hint}")
                continue
            schemas = pin.get(schema_col)
            subs = pin.get(sub_col) if sub_col else None
            for obj in sorted(objects):
                found = [r for r in self.catalog.relations.values() if r.name == obj
                         and r.schema not in builtins.SYSTEM_SCHEMAS and (not schemas or r.schema in schemas)]
                if not found:
                    # Not a table the catalog knows (an index, a name that is not there): its
                    # statistics cannot be vouched for, so they are not shown.
                    self.deny(builtins.STATISTICS_DENIAL.code if statistics else "sequence_leak",
                              f"{rel.qualified} of {obj!r}: no table of that name is open to rule "
                              f"{self.rule.name!r}; {hint}")
                for target in found:
                    self._pinned_object(rel, target, subs, statistics, hint)

    def _pinned_object(self, rel: RelationAccess, target, subs, statistics: bool, hint: str) -> None:
        for reason in self._object_denials(target):
            self.deny(builtins.STATISTICS_DENIAL.code if statistics else "sequence_leak",
                      f"{rel.qualified} would show {target.qualified}: {reason}")
            return
        if not statistics:
            return
        if target.kind not in ("r", "p"):
            # An index's statistics are those of its expressions (lower(masked_col)), a materialised
            # view's those of whatever it computed: their lineage is not known here, so refuse.
            self.deny(builtins.STATISTICS_DENIAL.code,
                      f"{rel.qualified} of {target.qualified} (an index, view or materialised view) may show "
                      f"values of the columns it is computed from; {hint}")
            return
        columns = [c.name for c in target.columns] if not subs else sorted(subs)
        # A partition or inheritance child holds its parent's rows: the parent's masks hold for it.
        owners = [(target.schema, target.name)] + [tuple(a.split(".", 1)) for a in target.ancestors]
        masked = [c for c in columns
                  if any(self.mask_set.find(ColumnId(schema, name, c)) is not None for schema, name in owners)]
        if masked:
            self.deny(builtins.STATISTICS_DENIAL.code,
                      f"{rel.qualified} would show sample values of masked column(s) "
                      f"{', '.join(f'{target.qualified}.{c}' for c in masked)}; {hint}")

    def _object_denials(self, target) -> list[str]:
        """Why reading ``target`` (a catalog Relation) is denied to this rule: [] when it is permitted."""
        key = ("object", self.rule.name, target.schema, target.name, self.catalog.version)
        found = self.memo.get(key)
        if found is None:
            mark = len(self.denials)
            self._relation(RelationAccess(target.schema, target.name, Access.READ, True, None, target.kind))
            for ancestor in target.ancestors:
                schema_, name_ = ancestor.split(".", 1)
                self._relation(RelationAccess(schema_, name_, Access.READ, True, target.qualified, "r"))
            found = tuple(r.message for r in self.denials[mark:])
            del self.denials[mark:]
            if len(self.memo) < 100_000:
                self.memo[key] = found
        return list(found)

    def _exposed_texts(self) -> dict[str, list[str]]:
        """Kind of catalog text → the denied objects carrying such text (memoised per rule and catalog)."""
        key = ("texts", self.rule.name, self.catalog.version, self.catalog.search_path)
        found = self.memo.get(key)
        if found is not None:
            return found
        exposed: dict[str, list[str]] = {}
        for rel in self.catalog.relations_with_text:
            if rel.schema in builtins.SYSTEM_SCHEMAS:
                continue
            kinds = set(rel.texts)
            if rel.view_sql and _has_literal(rel.view_sql):
                # a definition without literals shows names only, which pg_class and pg_attribute show too
                kinds.add("view")
            if not kinds:
                continue
            denied = bool(self._object_denials(rel))
            if not denied and rel.view_sql:
                # a permitted view over a denied table: its definition quotes what it reads
                inner = analyse(f'SELECT * FROM "{rel.schema}"."{rel.name}"', self.catalog)
                denied = any(self._object_denials(r) for st in inner.statements for r in st.relations
                             if (r.schema, r.name) in self.catalog.relations
                             for r in [self.catalog.relations[(r.schema, r.name)]])
            if denied:
                for kind in kinds:
                    exposed.setdefault(kind, []).append(rel.qualified)
        for routines in self.catalog.routines.values():
            for routine in routines:
                if routine.extension or routine.language in ("c", "internal"):
                    continue
                if not self._routine_allowed(routine):
                    exposed.setdefault("function", []).append(routine.qualified)
        found = {k: sorted(set(v)) for k, v in exposed.items()}
        if len(self.memo) < 100_000:
            self.memo[key] = found
        return found

    def _routine_allowed(self, routine) -> bool:
        names = (routine.qualified, routine.name)
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in self.rule.functions.deny):
            return False
        return any(fnmatch.fnmatchcase(routine.qualified, p) for p in self.rule.functions.allow)

    def _text_denial(self, what: str, kinds: Iterable[str], hint: str) -> None:
        exposed = self._exposed_texts()
        owners = sorted({o for kind in kinds for o in exposed.get(kind, ())})
        if owners:
            shown = ", ".join(owners[:5]) + (f" and {len(owners) - 5} more" if len(owners) > 5 else "")
            self.deny("catalog_text_leak", f"{what} would show catalog text ({', '.join(sorted(set(kinds)))}) of "
                      f"objects rule {self.rule.name!r} denies ({shown}); {hint}")

    # -- functions -------------------------------------------------------------------

    def functions(self, st: StatementAnalysis) -> None:
        memo = self.memo
        name, search_path = self.rule.name, self.catalog.search_path
        for fn in st.functions:
            # The same calls recur in statement after statement, and checking one means matching
            # dozens of patterns. (None in the fourth place: never equal to a relation check's key.)
            key = (name, fn, search_path, None, self.catalog.version)
            hit = memo.get(key)
            if hit is None:
                before, self.user_code = self.user_code, False
                found = self._remembered(key, self._function, fn)
                if key in memo:
                    memo[key] = (found, self.user_code)  # the denials, and whether it runs user code
                self.user_code = before or self.user_code
            else:
                found = hit[0]
                if hit[1]:
                    self.user_code = True
            for code, message in found:
                self.deny(code, message)

    def _user_candidates(self, fn: FunctionCall) -> list:
        """User routines (outside pg_catalog) a call may resolve to, as PostgreSQL resolves names.

        Unqualified, every schema of the pinned search_path is searched (pg_temp never is, for functions);
        a candidate must accept the call's number of arguments (defaults and VARIADIC counted). When one
        exists, which overload wins depends on argument types the analysis cannot always know, so the call
        counts as user code.
        """
        if fn.schema == "pg_catalog":
            return []
        routines = self.catalog.user_routines(fn.name)
        if not routines:
            return []
        path = [fn.schema] if fn.schema else [s for s in self.catalog.search_path if s not in ("pg_temp", "$user")]
        return [r for r in routines if r.schema in path and r.accepts(fn.nargs)]

    def _operator(self, fn: FunctionCall) -> None:
        rule = self.rule
        if fn.schema is None:
            path = ["pg_catalog", *(s for s in self.catalog.search_path if s not in ("pg_temp", "$user"))]
        else:
            path = [fn.schema]
        candidates = [op for op in self.catalog.user_operators(fn.name) if op.schema in path and op.arity == fn.nargs]
        if fn.schema not in (None, "pg_catalog") and not candidates:
            if self.catalog.complete:
                self.deny("function_not_allowed", f"{fn.display} is not an operator the catalog knows")
            return
        for op in candidates:
            fschema, fname = op.function.split(".", 1)
            routine = next((r for r in self.catalog.user_routines(fname) if r.schema == fschema), None)
            if op.extension or (routine is not None and (routine.extension or routine.language in ("c", "internal"))):
                continue
            if routine is not None and self._routine_allowed(routine):
                self.user_code = True
                continue
            if any(fnmatch.fnmatchcase(op.function, p) for p in rule.functions.allow) and not any(
                    fnmatch.fnmatchcase(op.function, p) for p in rule.functions.deny):
                self.user_code = True
                continue
            sig = f"{op.schema}.{op.name}({op.left or 'NONE'}, {op.right})"
            self.deny("function_not_allowed", f"{fn.display} may resolve to user operator {sig}, whose function "
                      f"{op.function} can run any SQL; write OPERATOR(pg_catalog.{fn.name}) for the built-in, or "
                      f"rule {rule.name!r} must list {op.function} under functions.allow")
            return

    def _cast(self, fn: FunctionCall) -> None:
        lname = _TYPE_ALIASES.get(fn.name.lower(), fn.name.lower())
        type_name = _user_cast_types(self.catalog.checked_domains).get(lname)
        if type_name is None:
            # a literal of the target type needs no cast; a string literal is read by the type's input
            # function, not converted by a cast (first_arg: the literal's type, None for an expression)
            if fn.first_arg == "unknown" or fn.first_arg == lname:
                return
            type_name = _user_cast_types(self.catalog.user_cast_types).get(lname)
            if type_name is None:
                return
        if "*" in self.rule.functions.allow or "*.*" in self.rule.functions.allow:
            self.user_code = True
            return
        self.deny("function_not_allowed", f"a cast to or from type {type_name} runs a user function (a user cast, "
                  f"or a domain CHECK that calls one), which can run any SQL; rule {self.rule.name!r} must allow "
                  "functions to use it")

    def _sequence_function(self, fn: FunctionCall, lname: str) -> bool:
        target = self.catalog.resolve_regclass(fn.first_arg) if fn.first_arg is not None else None
        if target is None:
            if fn.first_arg is not None:
                return False  # names no relation the catalog knows: the server refuses it too
            denied = [rel.qualified for rel in self.catalog.relations.values()
                      if rel.kind == "S" and self._object_denials(rel)]
            if denied:
                self.deny("sequence_leak", f"{fn.display}() must name its sequence as a literal "
                          f"(nextval('schema.sequence')): sequences of tables rule {self.rule.name!r} denies "
                          f"exist ({', '.join(sorted(denied)[:5])})")
                return True
            return False
        for reason in self._object_denials(target):
            self.deny("sequence_leak", f"{fn.display}({fn.first_arg!r}): {reason}")
            return True
        return False

    def _object_text_function(self, fn: FunctionCall, lname: str) -> bool:
        kinds = builtins.OBJECT_TEXT_FUNCTIONS[lname]
        hint = "name a permitted object as a literal (e.g. pg_get_viewdef('schema.view'::regclass))"
        if fn.first_arg is not None and lname not in ("pg_get_expr",):
            if "function" in kinds:
                parts = split_identifier(fn.first_arg.split("(", 1)[0]) or []
                routines = [r for r in self.catalog.user_routines(parts[-1])
                            if len(parts) < 2 or r.schema == parts[-2]] if parts else []
                if routines and all(self._routine_allowed(r) for r in routines):
                    return False
                if parts and not routines and "pg_catalog" in self.catalog.function_schemas(parts[-1]):
                    return False
            else:
                target = self.catalog.resolve_regclass(fn.first_arg)
                if target is not None:
                    for reason in self._object_denials(target):
                        self.deny("catalog_text_leak", f"{fn.display}({fn.first_arg!r}) would show catalog text of "
                                  f"{target.qualified}: {reason}")
                        return True
                    return False
        mark = len(self.denials)
        self._text_denial(f"{fn.display}()", kinds, hint)
        return len(self.denials) > mark

    def _function(self, fn: FunctionCall) -> None:
        rule = self.rule
        lname = fn.name.lower()
        if fn.kind == "operator":
            self._operator(fn)
            return
        if fn.kind == "cast":
            self._cast(fn)
            return
        user = self._user_candidates(fn) if self.catalog.routines else []
        builtin = not user and (fn.schema in (None, "pg_catalog", "information_schema")
                                and ("pg_catalog" in fn.resolved_schemas or "information_schema" in fn.resolved_schemas
                                     or fn.schema == "information_schema"))
        if user and all(r.extension and r.language in ("c", "internal") for r in user) and fn.schema is None:
            builtin = "pg_catalog" in fn.resolved_schemas or not self.catalog.complete
        if builtin or (fn.schema in (None, "pg_catalog") and not user):
            if lname == "pg_notify" and rule.read_only():
                self.deny(builtins.NOTIFY_DENIAL.code, f"{fn.display}() {builtins.NOTIFY_DENIAL.message}")
                return
            if lname in builtins.SEQUENCE_FUNCTIONS and self._sequence_function(fn, lname):
                return
            if lname in builtins.OBJECT_TEXT_FUNCTIONS and self._object_text_function(fn, lname):
                return
        if user and not builtin:
            allowed = [r for r in user if self._routine_allowed(r)]
            if len(allowed) < len(user):
                others = ", ".join(sorted({f"{r.qualified}({', '.join(r.arg_types)})" for r in user}))
                if fn.schema is None and "pg_catalog" in fn.resolved_schemas:
                    self.deny("function_ambiguous", f"{fn.display}() may resolve to user function(s) {others} "
                              f"rather than the built-in; write pg_catalog.{lname}(…) for the built-in, or rule "
                              f"{rule.name!r} must list the user function under functions.allow")
                else:
                    self.deny("function_not_allowed", f"{fn.display}() is user code ({others}); user functions "
                              f"can run any SQL, so rule {rule.name!r} must list it under functions.allow")
                return
            self.user_code = True
        if fn.schema in (None, "pg_catalog") or (user and all(r.extension for r in user)):
            denial = builtins.function_denial(lname)
            if denial is not None and lname == "set_config" and self._harmless_setting(fn.first_arg):
                denial = None  # set_config('TimeZone', …) as drivers send it
            if denial is not None:
                self.deny(denial.code, f"{fn.display}() {denial.message}")
                return
        qualified = [f"{s}.{lname}" for s in ([fn.schema] if fn.schema else sorted(fn.resolved_schemas))]
        names = [lname, *qualified]
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in rule.functions.deny):
            self.deny("function_denied", f"{fn.display}() is denied by rule {rule.name!r}")
            return
        if builtin:
            return
        if any(fnmatch.fnmatchcase(n, p) for n in qualified or [f"{self.catalog.default_schema(lname)}.{lname}"]
               for p in rule.functions.allow):
            self.user_code = True
            return
        where = ", ".join(qualified) if qualified else "no schema the catalog knows"
        self.deny("function_not_allowed", f"{fn.display}() is not a built-in function ({where}); user "
                  f"functions can run any SQL, so rule {rule.name!r} must list it under functions.allow")

    # -- session settings ------------------------------------------------------------

    def _harmless_setting(self, name: str | None) -> bool:
        if name is None:
            return False
        name = name.lower()
        return name not in builtins.PINNED_SETTINGS and builtins.setting_allowed(
            name, self.rule.session.allow_settings)

    def _same_as_pinned(self, name: str, change: SettingChange) -> bool:
        """SET of a pinned setting to what is pinned already (or a tighter timeout) changes nothing."""
        value = change.value
        if value is None:
            return False
        if name == "search_path":
            # each item exactly as the server will take it: a string literal is one identifier, spaces and
            # quotes included ('public ' is the schema "public "), so nothing is stripped or split
            return list(change.items) == list(self.catalog.search_path)
        limits = {"statement_timeout": self.rule.statement_timeout, "lock_timeout": self.rule.lock_timeout}
        if name in limits:
            try:
                ms = parse_duration_ms(value)
            except ValueError:
                return False
            return 0 < ms <= limits[name]
        text = value.strip().strip("'\"").lower()
        if name == "client_encoding":
            return text.replace("-", "").replace("_", "") in ("utf8", "unicode")
        if name == "standard_conforming_strings":
            return text in ("on", "true", "1", "yes")
        if name == "backslash_quote":
            return text in ("off", "false", "0", "no")
        if name in _READ_ONLY_SETTINGS:
            # READ ONLY tightens whatever the rule allows (what JDBC's setReadOnly(true) sends)
            return value.strip().strip("'").lower() in ("on", "true", "1", "yes", "t", "y")
        return False

    def settings(self, st: StatementAnalysis) -> None:
        for change in st.settings:
            name = change.name
            if st.details.alter_system:
                continue  # denied as a statement already
            if name == "all" and change.reset:
                continue  # pinned settings come from the start-up packet: RESET ALL returns to them
            bounded = builtins.BOUNDED_SETTINGS.get(name)
            if bounded is not None:
                values, why = bounded
                if not change.reset and (change.value or "").strip().lower() not in values:
                    self.deny("session_change", f"SET {name} TO {change.value!r} is refused: {why}")
                continue
            reason = builtins.PINNED_SETTINGS.get(name)
            if reason is not None and not change.reset and self._same_as_pinned(name, change):
                continue
            if reason is not None and change.reset and name in _TEXT_SEMANTICS:
                continue  # RESET returns to the start-up packet's value, which the gateway pinned
            if reason is not None:
                verb = "RESET" if change.reset else "SET"
                self.deny("session_change", f"{verb} {name} is refused: {reason}")
            elif not builtins.setting_allowed(name, self.rule.session.allow_settings):
                self.deny("setting_not_allowed", f"changing {name!r} is not allowed through the gateway; "
                          "harmless client settings (client_encoding, DateStyle, TimeZone, "
                          "extra_float_digits, planner settings…) are, and rules may list more under "
                          "session.allow_settings")

    def sensitive_columns(self, used: set[ColumnId]) -> None:
        texts = [col for col in used if col.table in _TEXT_TABLE_NAMES]
        if texts:
            kinds: dict[str, list[ColumnId]] = {}
            for col in texts:
                for column, kind in _TEXT_COLUMNS_BY_TABLE.get((col.schema, col.table), ()):
                    if col.column in (column, "*"):
                        kinds.setdefault(kind, []).append(ColumnId(col.schema, col.table, column))
            if kinds:
                shown = ", ".join(sorted({str(c) for cols in kinds.values() for c in cols}))
                self._text_denial(shown, kinds, "filter on objects your rule permits through the pg_get_*def() "
                                  "and obj_description() functions, naming each object as a literal")
        hits = []
        for col in used:
            if col.table not in _SENSITIVE_TABLE_NAMES:
                continue  # the table name alone rules out nearly every column, cheaply
            if (col.schema, col.table) not in builtins.SENSITIVE_TABLES:
                continue
            if col.column == "*" or (col.schema, col.table, col.column) in builtins.SENSITIVE_CATALOG_COLUMNS:
                hits.append(col)
        if hits:
            d = builtins.SENSITIVE_COLUMN_DENIAL
            for col in sorted(hits):
                self.deny(d.code, f"{col} {d.message}")

def _what(st: StatementAnalysis, klass: StatementClass) -> str:
    """The statement named for a reason: with what it writes, when a write hides inside (CTE, EXPLAIN ANALYZE)."""
    if klass is StatementClass.WRITE:
        writes = [f"{r.access.value} on {r.qualified}" for r in dict.fromkeys(st.relations)
                  if r.access in WRITE_ACCESSES and r.via_view is None]
        if writes:
            return f"{st.command_tag} ({', '.join(writes)})"
    return st.command_tag


def _approval_hint(rule: Rule) -> str:
    if rule.approval.required_for:
        held = ", ".join(t.value for t in rule.approval.required_for)
        return f"; {held} statements are held for approval"
    return ""


def _destructive_alter(st: StatementAnalysis) -> bool:
    if st.node != "AlterTableStmt":
        return False
    return any(sub.startswith(_DESTRUCTIVE_ALTERS) for sub in st.details.alter_subtypes)


def copy_writing_options(options: Mapping[str, object] | None) -> list[str]:
    """The options of a COPY TO that change how values are written from PostgreSQL's defaults (text: tab
    delimiter; csv: comma, double-quote quote and escape; the client's encoding, UTF8 here). The content
    detectors read COPY lines as written, and a client reads values out of them: a delimiter, quote or
    escape character that findings contain (``@``, ``-``, space, ``_``) is escaped or doubled inside the
    values, and another encoding shifts the bytes, so a finding the client gets back whole is not in the
    line the detectors see. HEADER, NULL, FORCE_QUOTE and FORCE_NOT_NULL change no value."""
    options = options or {}
    csv = str(options.get("format", "text")).lower() == "csv"
    out = []
    delimiter = options.get("delimiter")
    if delimiter is not None and str(delimiter) != ("," if csv else "\t"):
        out.append(f"DELIMITER {str(delimiter)!r}")
    for name in ("quote", "escape"):
        value = options.get(name)
        if value is not None and str(value) != '"':
            out.append(f"{name.upper()} {str(value)!r}")
    encoding = options.get("encoding")
    if encoding is not None and "".join(ch for ch in str(encoding).lower() if ch.isalnum()) not in ("utf8", "unicode"):
        out.append(f"ENCODING {str(encoding)!r}")
    return out
