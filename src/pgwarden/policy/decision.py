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

import dataclasses
from collections.abc import Callable, Iterable

from . import builtins
from ._checks import RuleChecks, StatementCheck
from ._lru import LRU
from ._mask_plan import MaskSet
from .analysis import Analysis, StatementClass
from .catalog import Catalog
from .effects import effects_of
from .language import ColumnMask, PolicyDocument, Rule
from .sql import (
    NO_SESSION,
    RewriteError,
    RewritePlanner,
    SessionFacts,
    SpliceTemplate,
    analyse,
    apply,
    resplice,
    shape_key,
    splice_template,
    splices_for,
)
from .verdict import (
    ApprovalRequirement,
    Decision,
    PinnedSettings,
    Reason,
    StatementPlan,
    Verdict,
)

MAX_TEXT_CHARS = 1 << 20  # 1 MiB of SQL text: far beyond hand-written statements
_WRITING = frozenset({StatementClass.WRITE, StatementClass.DDL, StatementClass.ADMIN, StatementClass.LOCK})
_READING = frozenset({StatementClass.READ})


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
        self._peek, self._touch = self._cache.peek, self._cache.touch
        self._rules: dict[tuple, tuple[Rule | None, MaskSet]] = {}
        self._settings: dict[tuple, PinnedSettings] = {}
        self._memo: dict[tuple, tuple] = {}  # relation checks: (rule, relation, search_path, masked) → denials
        self._checks: dict[str, RuleChecks] = {}  # by rule name (unique in a policy); see _rule_checks

    # -- public ----------------------------------------------------------------------

    def rule_for(self, subject: str, groups: frozenset[str], target: str | None = None) -> Rule | None:
        return self._principal(subject, groups, target)[0]

    def decide(self, sql: str, *, subject: str, groups: Iterable[str] = (), target: str | None = None,
               catalog: Catalog, session: SessionFacts = NO_SESSION) -> Verdict:
        group_set = groups if groups.__class__ is frozenset else frozenset(groups)
        key = (sql, subject, group_set, target, catalog.version, catalog.search_path)
        if session is NO_SESSION:
            cached = self._peek(key)  # the LRU's read, inlined (policy/_lru.py: the hot path of repeats)
            if cached is not None:
                try:  # noqa: SIM105 (contextlib.suppress costs more than the rest of a hit)
                    self._touch(key)
                except KeyError:
                    pass  # evicted by another thread meanwhile: the verdict read is still right
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
                shaped = self._peek(shape_key)
                if shaped is not None:
                    try:  # noqa: SIM105 (as above)
                        self._touch(shape_key)
                    except KeyError:
                        pass
                    if shaped.__class__ is Verdict:
                        return shaped
                    verdict = shaped.for_text(sql)  # a masked verdict: its splices placed in this text
                    if verdict is not None:
                        self._remember(key, verdict)  # a repeat of this text is then an exact hit
                        return verdict
        analysis = analyse(sql, catalog, session)
        verdict = self.decide_analysis(analysis, rule=rule, masks=masks, subject=subject, catalog=catalog)
        for st in analysis.statements:
            if st.execute_name or st.cursor_name:
                return verdict  # depends on the session's prepared statements and cursors: never cached
        self._remember(key, verdict)
        if (shape_key is not None and analysis.ok
                and not any(st.literal_dependent for st in analysis.statements)):
            if verdict.upstream_text is None:
                self._remember(shape_key, verdict)
            else:
                # A rewritten text is shared with its splices placed relative to the text between its
                # constants (their offsets move when a literal changes length): see _MaskedShape.
                template = splice_template(sql, shape_key[1], verdict.splices)
                if template is not None:
                    self._cache.put(shape_key, _MaskedShape(verdict, template))
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

    def decide_analysis(self, analysis: Analysis, *, rule: Rule, masks: MaskSet, subject: str,
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
            check = StatementCheck(self.policy, checks, masks, catalog, index, self._memo, self.rewriter)
            check.run(st)
            if check.rewrites:
                rewrites.extend(check.rewrites)
            if check.denials:
                reasons.extend(check.denials)
            if check.approvals:
                approvals.extend(check.approvals)
            cancel_safe = (st.command_tag == "SELECT" and not check.user_code and st.classes <= _READING
                           and not any(f.name.lower() in builtins.UNDONE_BY_ABORT for f in st.functions))
            plans.append(StatementPlan(index, st.command_tag, tuple(check.masks) if check.masks else (),
                                       check.scrub_errors, st.width, check.upstream, check.raw_origins,
                                       check.user_code, cancel_safe))
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
        if decision is Decision.DENY:
            return Verdict(decision, rule.name, tuple(reasons), tuple(plans), rule.max_rows, settings, approval,
                           self.version)
        return Verdict(decision, rule.name, tuple(reasons), tuple(plans), rule.max_rows, settings, approval,
                       self.version, False, effects_of(analysis), upstream_text, splices)

    # -- internals -------------------------------------------------------------------

    def _rule_checks(self, rule: Rule) -> RuleChecks:
        checks = self._checks.get(rule.name)
        if checks is None or checks.rule is not rule:
            checks = RuleChecks(rule)
            if len(self._checks) < 10_000:
                self._checks[rule.name] = checks
        return checks

    def _principal(self, subject: str, groups: frozenset[str], target: str | None) -> tuple[Rule | None, MaskSet]:
        key = (subject, groups, target)
        found = self._rules.get(key)
        if found is None:
            rule = next((r for r in self.policy.rules
                         if (target is None or r.target == target) and r.match.fits(subject, groups)), None)
            masks = MaskSet(tuple(m for m in self.policy.masking.columns if not groups.intersection(m.unless_groups)))
            found = (rule, masks)
            if len(self._rules) < 10_000:
                self._rules[key] = found
        return found


class _MaskedShape:
    """A masked verdict in the shape cache, with the template of its splices (sql/_rewrite.py)."""

    __slots__ = ("template", "verdict")

    def __init__(self, verdict: Verdict, template: SpliceTemplate) -> None:
        self.verdict = verdict
        self.template = template

    def for_text(self, sql: str) -> Verdict | None:
        """The verdict for ``sql``, a text of the same shape: the same decision and plans, with the mask
        rewrite spliced into this text; None when its constants are not plain (``resplice``)."""
        splices = resplice(self.template, sql)
        if splices is None:
            return None
        v = self.verdict  # dataclasses.replace, spelled out: it costs more than the rest of a hit
        return Verdict(v.decision, v.rule, v.reasons, v.plans, v.max_rows, v.settings, v.approval, v.policy_version,
                       v.cached, v.effects, apply(sql, splices), splices)


if tuple(f.name for f in dataclasses.fields(Verdict)) != (
        "decision", "rule", "reasons", "plans", "max_rows", "settings", "approval", "policy_version", "cached",
        "effects", "upstream_text", "splices"):
    raise RuntimeError("Verdict's fields changed: update _MaskedShape.for_text, which copies them all")


def _application_name(subject: str) -> str:
    # application_name is cut at 63 bytes by PostgreSQL; keep the prefix recognisable.
    name = f"pgwarden:{subject}"
    encoded = name.encode()[:63]
    return encoded.decode(errors="ignore")


