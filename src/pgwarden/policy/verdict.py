"""The Verdict contract: what the decision hands the engine.

A verdict is ``allow``, ``deny`` or ``needs_approval`` for a whole query
string, with the rule that decided, reasons (a stable machine ``code`` and a
sentence an agent can act on), the mask plan of every statement's output, the
row limit, and the settings to pin upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .analysis import ColumnId
from .effects import StatementEffects
from .language import ColumnMask

# Reason, MaskAction, StatementPlan and Verdict are built for every verdict decided.
# They are read-only by convention rather than ``frozen``: a frozen dataclass sets
# every field through ``object.__setattr__``, a measurable share of a verdict's cost.
# They keep equality and hashing by value (``unsafe_hash``) as their frozen versions
# had. Verdicts are cached and shared between sessions: never modify one.


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    NEEDS_APPROVAL = "needs_approval"


@dataclass(slots=True, unsafe_hash=True)
class Reason:
    """Why a verdict is what it is. Read-only by convention (see above)."""

    code: str  # stable, e.g. "table_denied"; see reasons.py
    message: str  # what happened and what the agent may do instead
    statement: int | None = None  # index in the query string, when it concerns one statement

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "statement": self.statement}


@dataclass(slots=True, unsafe_hash=True)
class MaskAction:
    """Mask one output column. ``strategy`` names a masking strategy; ``whole``
    means the output is an expression over a masked column and is redacted whole.
    Read-only by convention (see above)."""

    position: int
    column_name: str
    strategy: str
    source: ColumnId
    whole: bool = False
    keep: int = 4
    origin: tuple[int, int] | None = None  # (table oid, attnum) for RowDescription confirmation
    # The exact mask the decision chose for this principal (its key, its unless_groups): a door
    # applies this one, never another mask that happens to cover the same column.
    mask: ColumnMask | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "position": self.position, "column": self.column_name, "strategy": self.strategy,
            "source": str(self.source), "whole": self.whole,
            **({"keep": self.keep} if self.strategy == "keep_last" and not self.whole else {}),
        }


@dataclass(slots=True, unsafe_hash=True)
class StatementPlan:
    """Per statement of the query string: its tag and how to mask its output. Read-only by convention
    (see above)."""

    index: int
    command_tag: str
    masks: tuple[MaskAction, ...] = ()
    # Errors and notices raised while this statement runs may quote masked
    # values (``card_number::int``): the engine withholds their text.
    scrub_errors: bool = False
    # Columns the result must have; a result of another width is withheld, since
    # mask positions would no longer line up. None: not known (no masks then).
    width: int | None = None
    # True when the masks were applied inside the statement sent upstream (the mask rewrite): the
    # values arrive masked, ``masks`` then only says which outputs derive from masked columns
    # (``whole``: computed from a masked value), and no door may mask them again.
    masked_upstream: bool = False
    # The second net: (table oid, attnum) of every raw masked column the statement reads. A result
    # column whose RowDescription origin is one of them carries raw values (the rewrite did not
    # take): the result is withheld. The wire proxy checks RowDescription only; DataRows pass as is.
    raw_origins: frozenset[tuple[int, int]] = frozenset()
    # It calls a user function the rule allows (functions.allow): SQL the analysis cannot see, which may
    # write although the statement reads. Under a rule that may write, a door runs such a read only inside
    # a READ ONLY transaction of its own, and refuses it where it cannot (``read_only_required``).
    user_code: bool = False
    # A plain read a door may cancel once it has all the rows it returns (max_rows) without changing what
    # the client was told: a SELECT of no user code and no built-in whose effect its transaction's abort
    # would undo (set_config, pg_notify…).
    cancel_safe: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "command_tag": self.command_tag, "width": self.width,
                "masks": [m.as_dict() for m in self.masks], "scrub_errors": self.scrub_errors,
                **({"masked_upstream": True} if self.masked_upstream else {})}

    def origin_allowed(self, table_oid: int, attnum: int) -> bool:
        """False when a RowDescription field comes straight from a raw masked column."""
        return (table_oid, attnum) not in self.raw_origins


@dataclass(frozen=True, slots=True)
class PinnedSettings:
    """Session settings the engine pins upstream for this principal."""

    read_only: bool
    statement_timeout_ms: int
    lock_timeout_ms: int
    search_path: tuple[str, ...]
    role: str | None
    application_name: str

    def as_dict(self) -> dict[str, object]:
        return {
            "read_only": self.read_only, "statement_timeout_ms": self.statement_timeout_ms,
            "lock_timeout_ms": self.lock_timeout_ms, "search_path": list(self.search_path),
            "role": self.role, "application_name": self.application_name,
        }


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    approvers: tuple[str, ...]  # group names; "self" = the human in the agent's client
    timeout_ms: int
    max_window_ms: int
    triggers: tuple[str, ...]  # which conditions asked for approval

    def as_dict(self) -> dict[str, object]:
        return {"approvers": list(self.approvers), "timeout_ms": self.timeout_ms,
                "max_window_ms": self.max_window_ms, "triggers": list(self.triggers)}


@dataclass(slots=True, unsafe_hash=True)
class Verdict:
    """The decision on one query string. Read-only by convention (see above): cached verdicts are shared."""

    decision: Decision
    rule: str | None
    reasons: tuple[Reason, ...]
    plans: tuple[StatementPlan, ...] = ()
    max_rows: int | None = None
    settings: PinnedSettings | None = None
    approval: ApprovalRequirement | None = None
    policy_version: str = ""
    cached: bool = field(default=False, compare=False)
    # What the text leaves in the session (prepared statements, cursors, schema changes, COPY's
    # direction), so a door never analyses it again; see policy/effects.py.
    effects: tuple[StatementEffects, ...] = field(default=(), compare=False)

    # The text to send upstream instead of the client's, when masks were substituted inside it (see
    # policy/_rewrite.py); None: send the client's text as it is. It holds derived hash keys: never
    # show it to the client, log it, or put it in an audit record.
    upstream_text: str | None = field(default=None, compare=False, repr=False)
    # The splices that made ``upstream_text`` (client character ranges and their replacements), for
    # mapping an ErrorResponse position back with ``client_position``.
    splices: tuple = field(default=(), compare=False, repr=False)

    def text_for_upstream(self, client_text: str) -> str:
        return client_text if self.upstream_text is None else self.upstream_text

    def client_position(self, position: int | None) -> int | None:
        """An error's 1-based position in the upstream text, in the client's text (None: inside a splice)."""
        if position is None or not self.splices:
            return position
        from .sql import client_position
        return client_position(self.splices, position)

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def runs_user_code(self) -> bool:
        """A statement of the text calls a user function the rule allows (see StatementPlan.user_code)."""
        return any(p.user_code for p in self.plans)

    @property
    def read_needs_read_only_block(self) -> bool:
        """A read-only text that calls user code: under a rule that may write, a door runs it only inside a
        READ ONLY transaction of its own, and refuses it (:meth:`read_only_refused`) where it cannot."""
        return self.settings is not None and self.settings.read_only and self.runs_user_code

    def read_only_refused(self, where: str) -> Verdict:
        """The denial a door gives this read when it calls user code under a rule that may write and the
        door cannot run it inside a READ ONLY transaction of its own (``where`` says why not)."""
        reason = Reason("read_only_required",
                        f"this read calls a user function, which may write although the analysis sees a read; under a "
                        f"rule that may write the gateway runs it only inside a READ ONLY transaction of its own, "
                        f"which it cannot open {where}; send the statement on its own, outside a transaction "
                        f"block, with nothing pipelined before it")
        return Verdict(Decision.DENY, self.rule, (reason,), self.plans, self.max_rows, self.settings, None,
                       self.policy_version)

    @property
    def masked_columns(self) -> tuple[str, ...]:
        return tuple(sorted({str(m.source) for p in self.plans for m in p.masks}))

    def as_dict(self) -> dict[str, object]:
        return {
            "decision": self.decision.value,
            "rule": self.rule,
            "reasons": [r.as_dict() for r in self.reasons],
            "statements": [p.as_dict() for p in self.plans],
            "max_rows": self.max_rows,
            "settings": self.settings.as_dict() if self.settings else None,
            "approval": self.approval.as_dict() if self.approval else None,
            "policy_version": self.policy_version,
        }
