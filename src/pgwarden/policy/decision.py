"""The decision: principal + analysis + policy (+ catalog) → :class:`Verdict`.

:class:`Decider` is built once per policy version. ``decide`` finds the first
rule matching the principal and target, analyses the text (or takes a cached
verdict for exactly this text, principal, rule and catalog version), and checks
every statement in turn: what it understood, its classes, built-in denials, the
relations and functions it touches, session changes, and the masks its outputs
need. Every problem becomes a :class:`Reason`; a query string is denied whole
if any statement is denied, held for approval if any needs it.

The module is pure: no I/O, and the same inputs always give the same verdict.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from pglast import parser
from pglast.parser import ParseError

from . import builtins
from ._lru import LRU
from .analysis import (
    WRITE_ACCESSES,
    Access,
    Analysis,
    ColumnId,
    FunctionCall,
    RelationAccess,
    StatementAnalysis,
    StatementClass,
)
from .catalog import Catalog, split_identifier
from .effects import effects_of
from .language import ApprovalTrigger, ColumnMask, MaskStrategy, PolicyDocument, Rule, parse_duration_ms
from .sql import (
    NO_SESSION,
    RewriteError,
    RewritePlanner,
    SessionFacts,
    analyse,
    apply,
    shape_key,
    splices_for,
)
from .verdict import (
    ApprovalRequirement,
    Decision,
    MaskAction,
    PinnedSettings,
    Reason,
    StatementPlan,
    Verdict,
)

MAX_TEXT_CHARS = 1 << 20  # 1 MiB of SQL text: far beyond hand-written statements
_WRITING = frozenset({StatementClass.WRITE, StatementClass.DDL, StatementClass.ADMIN, StatementClass.LOCK})
_ALWAYS = frozenset({StatementClass.TRANSACTION, StatementClass.SESSION})
_DESTRUCTIVE_NODES = frozenset({"DropStmt", "TruncateStmt", "DropdbStmt", "DropRoleStmt", "DropOwnedStmt"})
_DESTRUCTIVE_ALTERS = ("AT_Drop", "AT_AlterColumnType")
_TRIGGERS = {StatementClass(t.value): t for t in ApprovalTrigger if t.value in StatementClass._value2member_map_}
_UNSEEN = object()
_SENSITIVE_TABLE_NAMES = frozenset(table for _, table in builtins.SENSITIVE_TABLES)
_TEXT_TABLE_NAMES = frozenset(table for _, table, _ in builtins.OBJECT_TEXT_COLUMNS)
_READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only",
                                 "session_characteristics.transaction_read_only"})


class _MaskSet:
    """The masks that apply to one principal, with lookups memoised (they repeat on every statement)."""

    __slots__ = ("_found", "_parts", "_tables", "masks")

    def __init__(self, masks: tuple[ColumnMask, ...]) -> None:
        self.masks = masks
        self._parts = [tuple(m.column.split(".")) for m in masks]
        self._found: dict[ColumnId, ColumnMask | None] = {}
        self._tables: dict[tuple[str, str], bool] = {}

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

    def masked(self, columns: set[ColumnId] | frozenset[ColumnId]) -> list[ColumnId]:
        """The columns of ``columns`` a mask may cover (``schema.table.*``: when one may cover that table)."""
        if not columns:
            return []
        known = self._found
        out = []
        for column in columns:
            if column.column == "*":
                if self.may_cover_table(column.schema, column.table):
                    out.append(column)
                continue
            mask = known.get(column, _UNSEEN)
            if mask is _UNSEEN:
                mask = self.find(column)
            if mask is not None:
                out.append(column)
        return out

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


class _RuleChecks:
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


class Decider:
    """Decisions under one policy version, with a verdict cache keyed by exact text."""

    def __init__(self, policy: PolicyDocument, *, version: str, cache_size: int = 4096,
                 shape_cache: bool = True, mask_key: Callable[[ColumnMask], bytes] | None = None) -> None:
        self.policy = policy
        # The mask rewrite (policy/_rewrite.py); ``mask_key`` gives a hash mask's derived key.
        self.rewriter = RewritePlanner(mask_key)
        self.shape_cache = shape_cache
        self.version = version
        self._cache: LRU[tuple, Verdict] = LRU(cache_size)  # shared by every session: thread-safe
        self._rules: dict[tuple, tuple[Rule | None, _MaskSet]] = {}
        self._settings: dict[tuple, PinnedSettings] = {}
        self._memo: dict[tuple, tuple] = {}  # relation checks: (rule, relation, search_path, masked) → denials
        self._checks: dict[str, _RuleChecks] = {}  # by rule name (unique in a policy); see _rule_checks

    # -- public ----------------------------------------------------------------------

    def rule_for(self, subject: str, groups: frozenset[str], target: str | None = None) -> Rule | None:
        return self._principal(subject, groups, target)[0]

    def decide(self, sql: str, *, subject: str, groups: Iterable[str] = (), target: str | None = None,
               catalog: Catalog, session: SessionFacts = NO_SESSION) -> Verdict:
        group_set = groups if isinstance(groups, frozenset) else frozenset(groups)
        key = (sql, subject, group_set, target, catalog.version, catalog.search_path)
        cached = self._cache.get(key) if session is NO_SESSION else None
        if cached is not None:
            return cached
        rule, masks = self._principal(subject, group_set, target)
        if rule is None:
            return Verdict(Decision.DENY, None, (Reason(
                "no_rule", f"no rule in the policy grants {subject!r} access"
                + (f" to target {target!r}" if target else "") + "; ask the gateway's administrators"),),
                policy_version=self.version)
        if len(sql) > MAX_TEXT_CHARS:
            return Verdict(Decision.DENY, rule.name, (Reason(
                "too_large", f"the text is {len(sql)} characters; the gateway checks at most {MAX_TEXT_CHARS}. "
                "Send smaller statements (bulk data belongs in COPY … FROM STDIN)"),), policy_version=self.version)
        if "\x00" in sql:
            # C strings end at NUL: the parser and the server would each see only a prefix.
            return Verdict(Decision.DENY, rule.name, (Reason(
                "nul_character", "the text contains a NUL character, which SQL text cannot hold; remove it"),),
                policy_version=self.version)
        shape_key = None
        if session is NO_SESSION and self.shape_cache:
            shape_key = self._shape_key(sql, key)
            if shape_key is not None:
                shaped = self._cache.get(shape_key)
                if shaped is not None:
                    return shaped
        analysis = analyse(sql, catalog, session)
        verdict = self.decide_analysis(analysis, rule=rule, masks=masks, subject=subject, catalog=catalog)
        for st in analysis.statements:
            if st.execute_name or st.cursor_name:
                return verdict  # depends on the session's prepared statements and cursors: never cached
        self._remember(key, verdict)
        # A rewritten text is not shared by shape: its splice offsets move when literals change length
        # (measured in benchmarks/decide.py: an uncached masked verdict is cheap enough).
        if (shape_key is not None and analysis.ok and verdict.upstream_text is None
                and not any(st.literal_dependent for st in analysis.statements)):
            self._remember(shape_key, verdict)
        return verdict

    def _remember(self, key: tuple, verdict: Verdict) -> None:
        self._cache.put(key, verdict)

    @staticmethod
    def _shape_key(sql: str, key: tuple) -> tuple | None:
        """The cache key shared by this statement with any other literals, or None (see ``shape_key``).

        A verdict is stored under it only when its analysis did not look at any literal's value
        (``StatementAnalysis.literal_dependent``), so the same statement with other literals gets
        the same verdict.
        """
        shape = shape_key(sql)
        return None if shape is None else ("shape", shape, *key[1:])

    def decide_analysis(self, analysis: Analysis, *, rule: Rule, masks: _MaskSet, subject: str,
                        catalog: Catalog) -> Verdict:
        reasons: list[Reason] = []
        approvals: list[str] = []
        plans: list[StatementPlan] = []
        if analysis.error is not None and analysis.error_code == "too_complex":
            reasons.append(Reason("too_complex", f"{analysis.error}; split it into simpler statements"))
        elif analysis.error is not None:
            reasons.append(Reason("syntax_error", f"PostgreSQL's parser rejected the text: {analysis.error}"))
        elif not analysis.statements:
            reasons.append(Reason("empty", "the text holds no statement"))
        checks = self._rule_checks(rule)
        writes = False
        rewrites: list[tuple] = []
        for index, st in enumerate(analysis.statements):
            check = _StatementCheck(self.policy, checks, masks, catalog, index, self._memo, self.rewriter)
            check.run(st)
            if check.rewrites:
                rewrites.extend(check.rewrites)
            if check.denials:
                reasons.extend(check.denials)
            if check.approvals:
                approvals.extend(check.approvals)
            plans.append(StatementPlan(index, st.command_tag, tuple(check.masks) if check.masks else (),
                                       check.scrub_errors, st.width, check.upstream, check.raw_origins))
            if not writes and not st.classes.isdisjoint(_WRITING):
                writes = True
        settings_key = (rule.name, not writes, catalog.search_path, subject)
        settings = self._settings.get(settings_key)
        if settings is None:
            settings = PinnedSettings(
                read_only=not writes,
                statement_timeout_ms=rule.statement_timeout,
                lock_timeout_ms=rule.lock_timeout,
                search_path=catalog.search_path,
                role=rule.upstream_role,
                application_name=_application_name(subject),
            )
            if len(self._settings) < 10_000:
                self._settings[settings_key] = settings
        if approvals and len(analysis.statements) > 1 and not reasons:
            # An approver must see exactly what will run, and an approval binds to one
            # statement's text: a held statement may not travel with others.
            reasons.append(Reason("approval_needs_single_statement",
                                  "a statement that needs approval must be sent on its own, not together "
                                  "with other statements; send it alone and it will be held for approval"))
        upstream_text = None
        splices: tuple = ()
        if rewrites and not reasons:
            try:
                found = splices_for(analysis.text, rewrites)
            except RewriteError as exc:
                reasons.append(Reason("rewrite_failed", f"the gateway could not place the masks of this text "
                                      f"({exc}); write the relation names plainly"))
            else:
                splices = tuple(found)
                upstream_text = apply(analysis.text, found)
        approval = None
        if reasons:
            decision = Decision.DENY
        elif approvals:
            decision = Decision.NEEDS_APPROVAL
            reasons = [Reason("approval_required", a) for a in dict.fromkeys(approvals)]
            policy = rule.approval
            approval = ApprovalRequirement(tuple(policy.approvers), policy.timeout, policy.window,
                                           tuple(dict.fromkeys(approvals)))
        else:
            decision = Decision.ALLOW
        return Verdict(decision, rule.name, tuple(reasons), tuple(plans), rule.max_rows, settings, approval,
                       self.version, effects=effects_of(analysis) if decision is not Decision.DENY else (),
                       upstream_text=upstream_text if decision is not Decision.DENY else None,
                       splices=splices if decision is not Decision.DENY else ())

    # -- internals -------------------------------------------------------------------

    def _rule_checks(self, rule: Rule) -> _RuleChecks:
        checks = self._checks.get(rule.name)
        if checks is None or checks.rule is not rule:
            checks = _RuleChecks(rule)
            if len(self._checks) < 10_000:
                self._checks[rule.name] = checks
        return checks

    def _principal(self, subject: str, groups: frozenset[str], target: str | None) -> tuple[Rule | None, _MaskSet]:
        key = (subject, groups, target)
        found = self._rules.get(key)
        if found is None:
            rule = next((r for r in self.policy.rules
                         if (target is None or r.target == target) and r.match.fits(subject, groups)), None)
            masks = _MaskSet(tuple(m for m in self.policy.masking.columns if not groups.intersection(m.unless_groups)))
            found = (rule, masks)
            if len(self._rules) < 10_000:
                self._rules[key] = found
        return found


def _application_name(subject: str) -> str:
    # application_name is cut at 63 bytes by PostgreSQL; keep the prefix recognisable.
    name = f"pgwarden:{subject}"
    encoded = name.encode()[:63]
    return encoded.decode(errors="ignore")


class _StatementCheck:
    """All checks of one statement; collects denials, approval triggers and masks."""

    __slots__ = ("approvals", "catalog", "checks", "denials", "index", "mask_set", "masks", "memo", "policy",
                 "raw_origins", "rewriter", "rewrites", "rule", "scrub_errors", "upstream")

    def __init__(self, policy: PolicyDocument, checks: _RuleChecks, masks: _MaskSet, catalog: Catalog,
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
        if st.extras.get("discard") == "DISCARD_ALL":
            self.deny("session_change", "DISCARD ALL would undo the session settings the gateway pins; "
                      "reconnect instead")
        if st.node == "NotifyStmt" and self.rule.read_only():
            d = builtins.NOTIFY_DENIAL
            self.deny(d.code, f"NOTIFY {d.message}")

    # -- relations -------------------------------------------------------------------

    def relations(self, st: StatementAnalysis) -> None:
        memo = self.memo
        name, search_path, masked = self.rule.name, self.catalog.search_path, bool(self.mask_set.masks)
        pins = st.extras.get("catalog_pins")
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
                for target in found:
                    self._pinned_object(rel, target, subs, statistics, hint)

    def _pinned_object(self, rel: RelationAccess, target, subs, statistics: bool, hint: str) -> None:
        for reason in self._object_denials(target):
            self.deny(builtins.STATISTICS_DENIAL.code if statistics else "sequence_leak",
                      f"{rel.qualified} would show {target.qualified}: {reason}")
            return
        if not statistics:
            return
        columns = [c.name for c in target.columns] if not subs else sorted(subs)
        masked = [c for c in columns if self.mask_set.find(ColumnId(target.schema, target.name, c)) is not None]
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
            # dozens of patterns. (Three items: never equal to a relation check's key of four.)
            key = (name, fn, search_path, None, self.catalog.version)
            found = memo.get(key)
            if found is None:
                found = self._remembered(key, self._function, fn)
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
                continue
            if any(fnmatch.fnmatchcase(op.function, p) for p in rule.functions.allow) and not any(
                    fnmatch.fnmatchcase(op.function, p) for p in rule.functions.deny):
                continue
            sig = f"{op.schema}.{op.name}({op.left or 'NONE'}, {op.right})"
            self.deny("function_not_allowed", f"{fn.display} may resolve to user operator {sig}, whose function "
                      f"{op.function} can run any SQL; write OPERATOR(pg_catalog.{fn.name}) for the built-in, or "
                      f"rule {rule.name!r} must list {op.function} under functions.allow")
            return

    def _cast(self, fn: FunctionCall) -> None:
        lname = fn.name.lower()
        for type_name in self.catalog.user_cast_types:
            if type_name.rsplit(".", 1)[-1].strip('"').lower() == lname:
                if "*" in self.rule.functions.allow or "*.*" in self.rule.functions.allow:
                    return
                self.deny("function_not_allowed", f"a cast to or from type {type_name} runs a user function, which "
                          f"can run any SQL; rule {self.rule.name!r} must allow functions to use it")
                return

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

    def _same_as_pinned(self, name: str, value: str | None) -> bool:
        """SET of a pinned setting to what is pinned already (or a tighter timeout) changes nothing."""
        if value is None:
            return False
        if name == "search_path":
            wanted = [v.strip().strip('"') for v in value.split(",") if v.strip()]
            return wanted == list(self.catalog.search_path)
        limits = {"statement_timeout": self.rule.statement_timeout, "lock_timeout": self.rule.lock_timeout}
        if name in limits:
            try:
                ms = parse_duration_ms(value)
            except ValueError:
                return False
            return 0 < ms <= limits[name]
        if name in _READ_ONLY_SETTINGS:
            # READ ONLY tightens whatever the rule allows (what JDBC's setReadOnly(true) sends)
            return value.strip().strip("'").lower() in ("on", "true", "1", "yes", "t", "y")
        return False

    def settings(self, st: StatementAnalysis) -> None:
        for change in st.settings:
            name = change.name
            if st.extras.get("alter_system"):
                continue  # denied as a statement already
            if name == "all" and change.reset:
                continue  # pinned settings come from the start-up packet: RESET ALL returns to them
            reason = builtins.PINNED_SETTINGS.get(name)
            if reason is not None and not change.reset and self._same_as_pinned(name, change.value):
                continue
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
                for (schema, table, column), kind in builtins.OBJECT_TEXT_COLUMNS.items():
                    if (col.schema, col.table) == (schema, table) and col.column in (column, "*"):
                        kinds.setdefault(kind, []).append(ColumnId(schema, table, column))
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

    # -- masking ---------------------------------------------------------------------

    def masking(self, st: StatementAnalysis, used: set[ColumnId]) -> None:
        masks = self.mask_set
        if not masks.masks:
            return
        if self.rewriter is not None and (st.node in _REWRITTEN or (st.node == "CopyStmt"
                                                                   and st.copy_target == "stdout")):
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
            self.scrub_errors = False
            return
        hit = frozenset(masked)
        masking = self.policy.masking
        find = masks.find
        touched = False
        shifted = False  # an earlier output expanded to an unknown number of columns
        for position, out in enumerate(st.outputs):
            after_unknown, shifted = shifted, shifted or out.expands
            if hit.isdisjoint(out.sources):
                continue  # no masked column, and no '*' a mask may cover
            found: list[tuple[ColumnId, ColumnMask]] | None = None
            for source in out.sources:
                if source.column == "*":
                    if masks.may_cover_table(source.schema, source.table):
                        self.deny("catalog_needed", f"cannot tell which columns of {source.schema}."
                                  f"{source.table} are masked without the target's catalog; name the columns "
                                  "you need instead of * or whole rows")
                    continue
                mask = find(source)
                if mask is not None:
                    if found is None:
                        found = []
                    found.append((source, mask))
            if not found:
                continue
            touched = True
            if out.expands or after_unknown:
                self.deny("unknown_columns", f"cannot tell how many columns output {position + 1} expands to, "
                          f"so masks for {source_list(found)} cannot be placed; select named columns, or give "
                          "set-returning functions a column definition list")
                continue
            source, mask = found[0] if len(found) == 1 else min(found)
            same = len(found) == 1 or all(m is mask for _, m in found)
            if out.plain and same and not out.whole_row:
                self.masks.append(MaskAction(position, out.name, mask.strategy.value, source, False, mask.keep,
                                             out.origin, mask))
            elif masking.on_expression == "deny":
                self.deny("masked_expression", f"output {out.name!r} is computed from masked column {source}; "
                          "select the column itself (it is masked) or leave it out")
            else:
                self.masks.append(MaskAction(position, out.name, MaskStrategy.REDACT.value, source, True, 0,
                                             out.origin))
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
        copy_relation = st.node == "CopyStmt" and bool(st.extras.get("copy_relation"))
        covered: set[tuple[str, str]] = set()  # tables whose masked values the wrapped references mask
        referenced: set[tuple[str, str]] = set()
        origins: set[tuple[int, int]] = set()
        for ref in st.relation_refs:
            referenced.add((ref.schema, ref.name))
            body, raw, refusal = rewriter.wrap(ref, masks, catalog)  # type: ignore[union-attr]
            if refusal:
                self.deny("mask_key_unavailable", f"{ref.schema}.{ref.name}: {refusal}, so its masks cannot be "
                          "applied; ask the gateway's administrators")
                continue
            if body is None:
                continue
            covered.add((ref.schema, ref.name))
            for _, _, sources, _ in ref.columns:
                covered.update((c.schema, c.table) for c in sources)
            covered.update(rewriter.descendants(catalog).get((ref.schema, ref.name), ()))  # type: ignore[union-attr]
            origins |= raw
            self.rewrites.append((ref, body, [o.name for o in st.outputs] if copy_relation else None))
        for rel in st.relations:
            # A relation read through a path the rewrite has no splice point for: refuse, never guess.
            if (rel.access is Access.READ and rel.via_view is None and rel.resolved
                    and (rel.schema, rel.name) not in referenced and rel.schema not in builtins.SYSTEM_SCHEMAS):
                found = catalog.resolve_relation(rel.schema, rel.name)
                if found is not None and any(masks.find(ColumnId(rel.schema, rel.name, c.name))
                                             for c in found.columns):
                    self.deny("rewrite_incomplete", f"{rel.qualified} has masked columns and is read where the "
                              "gateway cannot place its masks; read it in a FROM clause")
        if self.rewrites and st.node == "CopyStmt":
            options = st.extras.get("copy_options") or {}
            if str(options.get("format", "")).lower() == "binary":  # type: ignore[union-attr]
                self.deny("copy_binary_masked", "binary COPY of a table with masked columns is refused; use "
                          "FORMAT text or csv (masked values are text)")
        read = used | st.referenced
        masked = masks.masked(read)
        if not masked and not self.rewrites:
            self.scrub_errors = False
            return
        hit = frozenset(masked)
        masking = self.policy.masking
        find = masks.find
        targets = {(r.schema, r.name) for r in st.relations if r.access in WRITE_ACCESSES}
        for position, out in enumerate(st.outputs):
            if hit.isdisjoint(out.sources):
                continue
            found: list[tuple[ColumnId, ColumnMask]] = []
            for source in out.sources:
                if source.column == "*":
                    if masks.may_cover_table(source.schema, source.table):
                        self.deny("catalog_needed", f"cannot tell which columns of {source.schema}."
                                  f"{source.table} are masked without the target's catalog; name the columns "
                                  "you need instead of * or whole rows")
                    continue
                mask = find(source)
                if mask is not None:
                    found.append((source, mask))
            if not found:
                continue
            source, mask = found[0] if len(found) == 1 else min(found)
            if any((c.schema, c.table) in targets for c, _ in found):
                self.deny("masked_returning", f"output {out.name!r} returns masked column {source} of the "
                          "table this statement writes, which cannot be masked inside the statement; leave it "
                          "out of RETURNING")
                continue
            if any((c.schema, c.table) not in covered for c, _ in found):
                self.deny("rewrite_incomplete", f"output {out.name!r} derives from masked column {source}, "
                          "whose masks the gateway could not place; select it from a table in FROM")
                continue
            same = len(found) == 1 or all(m is mask for _, m in found)
            if out.plain and same and not out.whole_row:
                self.masks.append(MaskAction(position, out.name, mask.strategy.value, source, False, mask.keep,
                                             out.origin, mask))
            elif masking.on_expression == "deny":
                self.deny("masked_expression", f"output {out.name!r} is computed from masked column {source}, "
                          "which this policy refuses (masking.on_expression: deny); select the column itself")
            else:
                self.masks.append(MaskAction(position, out.name, MaskStrategy.REDACT.value, source, True, 0,
                                             out.origin))
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
    return any(sub.startswith(_DESTRUCTIVE_ALTERS) for sub in st.extras.get("alter_subtypes", ()))
