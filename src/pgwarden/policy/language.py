"""The policy language: typed models of the ``rules`` and ``masking`` sections.

The gateway's YAML file (``pgwarden.yaml``) is read by ``engine.config`` into
:class:`pgwarden.engine.config.GatewayConfig`, which embeds the models here.
They are strict (unknown keys are refused) so a typo never silently widens
access. Every model documents its keys; ``docs/configuration.md`` mirrors them.

Rules are matched in file order; the first rule whose ``match`` fits the
principal (and target) decides. No matching rule means deny.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .analysis import Access, StatementClass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")


def parse_duration_ms(value: str | int | float) -> int:
    """``"30s"`` → 30000. Bare numbers are milliseconds, like PostgreSQL's GUCs."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as '500ms', '30s', '5min' or a number of ms, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative (got {value!r})")
        return int(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"expected a duration such as '500ms', '30s', '5min' or a number of ms, got {value!r}")
    number, unit = float(m.group(1)), m.group(2) or "ms"
    factor = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}[unit]
    return int(number * factor)


DURATION_JSON_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|min|m|h)?\s*$"},
    ],
    "description": "milliseconds, or a string such as '500ms', '30s', '5min', '1h'",
}
Duration = Annotated[int, BeforeValidator(parse_duration_ms), Field(ge=0), WithJsonSchema(DURATION_JSON_SCHEMA)]


class SecretRef(_Strict):
    """Where a secret comes from: an environment variable or a file. Never inline."""

    env: str | None = Field(default=None, description="name of an environment variable holding the secret")
    file: str | None = Field(default=None, description="path of a file holding the secret (trailing newline stripped)")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class Match(_Strict):
    """Who a rule applies to. Empty lists match anyone; both given means either may match."""

    subjects: list[str] = Field(default_factory=list, description="token subjects (globs allowed)")
    groups: list[str] = Field(default_factory=list, description="group names from the token's groups claim")

    def fits(self, subject: str, groups: frozenset[str]) -> bool:
        if not self.subjects and not self.groups:
            return True
        if any(fnmatch.fnmatchcase(subject, pattern) for pattern in self.subjects):
            return True
        return bool(groups.intersection(self.groups))


class NameFilter(_Strict):
    """Allow and deny lists of globs. Deny wins; an empty allow list allows nothing."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)

    def permits(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.deny):
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in self.allow)

    def denies(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.deny)


class FunctionFilter(_Strict):
    """Functions on top of the built-in deny list (which no allow entry can lift).

    Built-in functions (those in ``pg_catalog``) are allowed unless denied here
    or by the built-in list. Functions defined in other schemas — which may run
    arbitrary SQL — are denied unless listed in ``allow`` (``schema.name`` globs).
    """

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class WriteGrant(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"


class ApprovalTrigger(StrEnum):
    """What makes a statement wait for a human."""

    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ADMIN = "admin"
    LOCK = "lock"
    DESTRUCTIVE = "destructive"  # DROP, TRUNCATE, DELETE, ALTER … DROP …
    NO_WHERE = "no_where"  # UPDATE/DELETE without WHERE


class ApprovalPolicy(_Strict):
    """Which statements are held for a human and who may release them."""

    required_for: list[ApprovalTrigger] = Field(
        default_factory=list,
        description="statement classes or conditions that need approval; a class listed here is "
        "permitted (after approval) even when it is not in statements.allow",
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="groups whose members may approve; 'self' means the human in the agent's client (MCP elicitation)",
    )
    timeout: Duration = Field(default=900_000, description="how long a held statement waits before it is refused")
    window: Duration = Field(
        default=0, description="0: an approval is single-use; otherwise the longest window an approver may grant"
    )

    @model_validator(mode="after")
    def _approvers_needed(self) -> ApprovalPolicy:
        if self.required_for and not self.approvers:
            raise ValueError("required_for is set but approvers is empty: nobody could ever approve")
        return self


class StatementPolicy(_Strict):
    allow: list[StatementClass] = Field(
        default_factory=lambda: [StatementClass.READ],
        description="statement classes this rule runs without approval",
    )


class SessionPolicy(_Strict):
    allow_settings: list[str] = Field(
        default_factory=list,
        description="extra GUC names (globs) the client may SET, beyond the built-in harmless list",
    )


class UpstreamLogin(_Strict):
    """A login role of the rule's own upstream, with its secret (never inline)."""

    user: str = Field(min_length=1, description="PostgreSQL role the gateway logs in as for this rule")
    password: SecretRef | None = Field(default=None, description="its password: {env: NAME} or {file: path}")


class Rule(_Strict):
    """One access rule. The first rule matching the principal and target decides."""

    name: str = Field(description="stable name, reported in verdicts and the audit trail")
    match: Match = Field(default_factory=Match)
    target: str = Field(description="name of a target in the 'targets' section")
    upstream_role: str | None = Field(
        default=None, description="role the gateway assumes upstream for this rule (least privilege)"
    )
    upstream_login: UpstreamLogin | None = Field(
        default=None,
        description="log in upstream as this rule's own least-privilege role instead of the target's user; "
        "then RESET ROLE and DISCARD ALL cannot widen anything",
    )
    statements: StatementPolicy = Field(default_factory=StatementPolicy)
    schemas: NameFilter = Field(
        default_factory=lambda: NameFilter(allow=["public"]),
        description="schemas whose relations may be touched (globs); pg_catalog and information_schema "
        "are governed by 'catalog_access' instead",
    )
    tables: NameFilter = Field(
        default_factory=lambda: NameFilter(allow=["*"]),
        description="'schema.table' globs, applied after 'schemas'",
    )
    writes: dict[str, list[WriteGrant]] | None = Field(
        default=None,
        description="per-table write permissions ('schema.table' glob → kinds); when set, writes to tables "
        "not listed are refused",
    )
    catalog_access: bool = Field(
        default=True, description="may read pg_catalog / information_schema (sensitive catalogs stay denied)"
    )
    require_where: bool = Field(default=True, description="refuse UPDATE and DELETE without a WHERE clause")
    max_rows: int | None = Field(default=1000, ge=1, description="most rows returned to the client per statement")
    max_result_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="most bytes of values returned to the client per statement; a result over it is cut "
        "and marked truncated, so a few huge values cannot fill the gateway's memory",
    )
    statement_timeout: Duration = Field(default=30_000)
    lock_timeout: Duration = Field(default=5_000)
    functions: FunctionFilter = Field(default_factory=FunctionFilter)
    session: SessionPolicy = Field(default_factory=SessionPolicy)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)

    def read_only(self) -> bool:
        """True when this rule runs no writing statement without approval.

        The gateway pins such sessions read-only upstream; a statement released by
        an approver runs on a connection of its own, opened for that statement.
        """
        writing = {StatementClass.WRITE, StatementClass.DDL, StatementClass.ADMIN, StatementClass.LOCK}
        return not writing.intersection(self.statements.allow)


class MaskStrategy(StrEnum):
    REDACT = "redact"  # the whole value becomes a fixed marker
    KEEP_LAST = "keep_last"  # all but the last N characters hidden
    HASH = "hash"  # keyed HMAC-SHA256, stable per key: joins and counts still work
    NULL = "null"  # the value becomes NULL
    EMAIL_DOMAIN = "email_domain"  # local part hidden, domain kept


class ColumnMask(_Strict):
    column: str = Field(description="'schema.table.column' glob, e.g. 'public.customers.card_number' or '*.*.email'")
    strategy: MaskStrategy
    keep: int = Field(default=4, ge=0, le=64, description="characters kept by keep_last")
    key: SecretRef | None = Field(default=None, description="HMAC key for 'hash' (env var or file)")
    unless_groups: list[str] = Field(default_factory=list, description="principals in these groups see raw values")

    @field_validator("column")
    @classmethod
    def _three_parts(cls, v: str) -> str:
        if v.count(".") != 2:
            raise ValueError("expected 'schema.table.column' (globs allowed in each part)")
        return v

    @model_validator(mode="after")
    def _key_for_hash(self) -> ColumnMask:
        if self.strategy is MaskStrategy.HASH and self.key is None:
            raise ValueError("strategy 'hash' needs a 'key' (env or file)")
        return self

    def covers(self, column: str) -> bool:
        return fnmatch.fnmatchcase(column, self.column)


class DetectorKind(StrEnum):
    CARD = "card"
    EMAIL = "email"
    SSN = "ssn"
    IBAN = "iban"
    SECRET_KEY = "secret_key"


class DetectorPolicy(_Strict):
    enabled: bool = True
    kinds: list[DetectorKind] = Field(default_factory=lambda: list(DetectorKind))


class MaskingPolicy(_Strict):
    on_expression: Literal["mask", "deny"] = Field(
        default="mask",
        description="a masked column feeding an expression: redact that whole output, or refuse the statement",
    )
    allow_in_predicates: bool = Field(
        default=False,
        description="may masked columns appear in WHERE/JOIN/ORDER BY…; off by default because a predicate "
        "is an oracle (WHERE card_number LIKE '4%')",
    )
    detectors: DetectorPolicy = Field(default_factory=DetectorPolicy)
    columns: list[ColumnMask] = Field(default_factory=list)


class PolicyDocument(_Strict):
    """The policy part of the configuration: rules and masking."""

    rules: list[Rule] = Field(default_factory=list)
    masking: MaskingPolicy = Field(default_factory=MaskingPolicy)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> PolicyDocument:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice; names identify rules in the audit trail")
            seen.add(rule.name)
        return self


__all__ = [
    "Access",
    "ApprovalPolicy",
    "ApprovalTrigger",
    "ColumnMask",
    "DetectorKind",
    "DetectorPolicy",
    "FunctionFilter",
    "MaskStrategy",
    "MaskingPolicy",
    "Match",
    "NameFilter",
    "PolicyDocument",
    "Rule",
    "SecretRef",
    "SessionPolicy",
    "StatementPolicy",
    "UpstreamLogin",
    "WriteGrant",
    "parse_duration_ms",
]
