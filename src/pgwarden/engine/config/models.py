"""The gateway's configuration file, ``pgwarden.yaml``, as strict typed models.

:class:`GatewayConfig` is the whole file: ``version``, ``targets`` (the databases
behind the gateway), ``identity`` (how tokens are verified) and the policy keys
``rules`` and ``masking``, whose models live in :mod:`pgwarden.policy.language`
and are embedded here unchanged; :attr:`GatewayConfig.policy` hands them to the
policy core as one :class:`~pgwarden.policy.language.PolicyDocument`, so the file
stays the single source of truth. Every model refuses unknown keys, because a
misspelt ``deny`` must never silently widen access. :func:`parse_config` turns
pydantic's errors into one :class:`ConfigError` listing *every* problem as
``<key path>: <what was expected> (got <value>)``, so a user fixes the file in one
pass. Secrets are only referenced (env var or file) and are read later by
:mod:`pgwarden.engine.secrets`; nothing here touches the network or a key file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from pgwarden.audit.config import AuditSettings
from pgwarden.policy.language import Duration, MaskingPolicy, PolicyDocument, Rule, SecretRef

from ..approvals.config import ApprovalsConfig
from ._errors import ConfigError, ConfigProblem, as_details, fail, problem_from_error, redact_dsn, show

# A problem found on raw input by a model's own check: where (relative to the model) and what.
_Issue = tuple[tuple[int | str, ...], str]


def _validate_with_issues(
    cls: type[BaseModel], data: Any, handler: ModelWrapValidatorHandler[Any], issues: list[_Issue]
) -> Any:
    """Run field validation and report ``issues`` alongside its errors, not instead of them.

    An ``after`` model validator runs only once every field is valid, so a user fixing the
    file would meet these problems one round later; checking the raw input here lets
    ``pgwarden config check`` list them all at once.
    """
    extra = [
        InitErrorDetails(type=PydanticCustomError("pgwarden", "{detail}", {"detail": message}), loc=loc, input=data)
        for loc, message in issues
    ]
    try:
        model = handler(data)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(cls.__name__, [*map(as_details, exc.errors()), *extra]) from None
    if extra:
        raise ValidationError.from_exception_data(cls.__name__, extra)
    return model


# -- value types ------------------------------------------------------------------------------------

# One duration type for the whole file: the policy language's (ms, or '30s', '5min'…).
DurationMs = Duration

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _target_name(name: str) -> str:
    if not _NAME.match(name):
        raise fail("expected a target name of letters, digits, '_' or '-', starting with a letter or '_'",
                    show(name))
    return name


TargetName = Annotated[str, AfterValidator(_target_name)]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


Audience = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    WithJsonSchema({
        "anyOf": [{"type": "string", "minLength": 1},
                  {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}],
        "description": "the audience a token must carry (one of them, when several are given)",
    }),
]

SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def _algorithm(value: str) -> str:
    if value.lower() == "none":
        raise fail("expected a signature algorithm; 'none' means unsigned tokens, which anyone can forge",
                    show(value))
    if value.upper().startswith("HS"):
        raise fail(
            "expected an asymmetric algorithm (RS*, PS*, ES*, EdDSA); HMAC algorithms are refused because "
            "verifying HMAC with a published key is the classic key-confusion attack: anyone holding the "
            "public key could mint tokens",
            show(value),
        )
    if value not in SUPPORTED_ALGORITHMS:
        raise fail(f"expected one of {', '.join(SUPPORTED_ALGORITHMS)}", show(value))
    return value


Algorithm = Annotated[str, AfterValidator(_algorithm), WithJsonSchema({"enum": list(SUPPORTED_ALGORITHMS)})]


def _schema_name(value: str) -> str:
    if not value:
        raise fail("expected a schema name", "an empty string")
    if value.startswith("$") or value.lower().startswith("pg_temp"):
        raise fail(
            "expected a plain schema name; '$user' and pg_temp are refused because the gateway resolves "
            "table names itself and must know exactly which schema a name means",
            show(value),
        )
    return value


SchemaName = Annotated[str, AfterValidator(_schema_name)]


# -- models -----------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _dsn(value: str) -> str:
    # libpq's own parser (through psycopg) decides what the string means, so a URI and a
    # key=value string are judged exactly as the connection will later read them.
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(value)
    except ProgrammingError:
        # libpq's message may quote parts of the string, which could be a password: leave it out.
        raise fail(
            "expected a libpq connection string: a URI such as 'postgresql://user@host:5432/db' or "
            "key=value pairs such as 'host=localhost dbname=app user=pgwarden'",
            "a string libpq cannot parse",
        ) from None
    if params.get("password"):
        raise fail(
            "expected a DSN without a password; move the password out of the file and reference it with "
            "'password: {env: VARIABLE}' or 'password: {file: path}' on this target",
            show(redact_dsn(value)),
        )
    return value


class Target(_Strict):
    """A PostgreSQL database behind the gateway."""

    dsn: Annotated[str, AfterValidator(_dsn)] = Field(
        description="libpq connection URI or key=value string, without a password"
    )
    password: SecretRef | None = Field(
        default=None, description="where the upstream password comes from: {env: NAME} or {file: path}"
    )
    search_path: list[SchemaName] = Field(
        default_factory=lambda: ["public"],
        min_length=1,
        description="schemas pinned as search_path upstream; unqualified names resolve against these",
    )
    connect_timeout: DurationMs = Field(default=10_000, description="how long to wait for a connection upstream")
    description: str = Field(default="", description="free text shown to agents and in the audit trail")


class Identity(_Strict):
    """How bearer tokens (JWT) are verified. Exactly one key source must be given."""

    issuer: str = Field(min_length=1, description="expected 'iss' claim, exactly")
    audience: Audience = Field(description="expected 'aud' claim: a string or a list (any one must match)")
    jwks_url: str | None = Field(
        default=None, description="HTTPS URL of the identity provider's JWKS (key rotation is followed)"
    )
    jwks_file: str | None = Field(default=None, description="path of a JWKS JSON file (re-read when it changes)")
    public_key_file: str | None = Field(default=None, description="path of one PEM public key")
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"],
        min_length=1,
        description="signature algorithms accepted; 'none' and HMAC (HS*) are refused",
    )
    groups_claim: str = Field(
        default="groups",
        min_length=1,
        description="claim holding the principal's groups; a dotted path such as 'realm_access.roles' "
        "reaches into nested objects",
    )
    subject_claim: str = Field(default="sub", min_length=1, description="claim naming the principal")
    leeway: DurationMs = Field(default=30_000, description="clock skew tolerated on exp / nbf / iat")
    jwks_cache: DurationMs = Field(default=300_000, description="how long a fetched JWKS is reused")
    jwks_refresh_cooldown: DurationMs = Field(
        default=30_000,
        description="least time between two refetches caused by an unknown key id; stops a flood of "
        "made-up key ids from hammering the identity provider",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _one_key_source(cls, data: Any, handler: ModelWrapValidatorHandler[Identity]) -> Identity:
        issues: list[_Issue] = []
        if isinstance(data, Mapping):
            given = [name for name in ("jwks_url", "jwks_file", "public_key_file") if data.get(name) is not None]
            if len(given) != 1:
                issues.append(((), "expected exactly one key source among jwks_url, jwks_file, public_key_file "
                                   f"(got {' and '.join(given) if given else 'none'})"))
            url = data.get("jwks_url")
            if isinstance(url, str) and (problem := _jwks_url_problem(url)):
                issues.append((("jwks_url",), problem))
        return _validate_with_issues(cls, data, handler, issues)


def _jwks_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return None
        return ("expected an https:// URL; plain http lets anyone on the path substitute their own keys "
                f"(http is accepted only for localhost) (got {show(url)})")
    return f"expected an https:// URL (got {show(url)})"


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535) or not host:
        raise fail("expected HOST:PORT, e.g. '127.0.0.1:6432' (port 0 picks a free one)", show(value))
    return value


Listen = Annotated[str, AfterValidator(_listen)]


class ServiceUser(_Strict):
    """A wire-proxy login for tools that cannot carry a token: SCRAM-SHA-256 against a stored verifier."""

    name: str = Field(min_length=1, description="the user name the tool connects with")
    verifier: SecretRef = Field(
        description="where its SCRAM-SHA-256 verifier ('SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>', as "
        "pg_authid stores it; 'pgwarden scram-verifier' makes one) is read from")
    subject: str = Field(min_length=1, description="the principal this user acts as (rules match on it)")
    groups: list[str] = Field(default_factory=list, description="the principal's groups")


class ProxySettings(_Strict):
    """The PostgreSQL wire-protocol door (``pgwarden proxy``)."""

    listen: Listen = Field(default="127.0.0.1:6432", description="address the proxy listens on")
    tls_cert: str | None = Field(default=None, description="PEM certificate for TLS (SSLRequest and direct TLS)")
    tls_key: str | None = Field(default=None, description="PEM private key of tls_cert")
    max_message_size: int = Field(default=64 * 1024 * 1024, ge=1024,
                                  description="largest protocol message accepted; larger closes the connection")
    startup_timeout: DurationMs = Field(default=10_000, description="time allowed from connect to authenticated")
    idle_timeout: DurationMs = Field(default=0, description="close a client idle this long (0: never)")
    max_connections: int = Field(default=500, ge=1, description="client connections at once, overall "
                                 "(connections still starting up are capped at the same number)")
    max_connections_per_principal: int = Field(default=50, ge=1, description="client connections per principal")
    approval_notice_interval: DurationMs = Field(
        default=10_000, description="how often a client waiting for an approval is reminded by a NOTICE")
    service_users: list[ServiceUser] = Field(default_factory=list, description="SCRAM logins without a token")


class ServeSettings(_Strict):
    """The HTTP door (``pgwarden serve``): MCP over streamable HTTP, the approvals API, the console."""

    listen: Listen = Field(default="127.0.0.1:8080", description="address the HTTP server listens on")
    public_url: str | None = Field(
        default=None, description="the URL clients reach this server at (RFC 9728 resource metadata); "
        "defaults to http://<listen>")
    request_state_key: SecretRef | None = Field(
        default=None, description="key sealing MCP elicitation request state, shared by every gateway process")


class GatewayConfig(_Strict):
    """The whole ``pgwarden.yaml``."""

    version: Literal[1] = Field(description="format version of this file; must be 1")
    targets: dict[TargetName, Target] = Field(min_length=1, description="databases behind the gateway, by name")
    identity: Identity | None = Field(
        default=None,
        description="how agents' tokens are verified; required to serve MCP or the wire proxy, not for "
        "'pgwarden check' or 'config check'",
    )
    rules: list[Rule] = Field(default_factory=list, description="access rules; the first match decides")
    masking: MaskingPolicy = Field(default_factory=MaskingPolicy)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig,
                                       description="where held statements wait, and who is told")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="the audit journal and OTLP export")
    proxy: ProxySettings = Field(default_factory=ProxySettings, description="the wire-protocol door")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="the HTTP door")

    # Where relative paths (key files, secret files) are read from; not part of the policy hash.
    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _cross_field(cls, data: Any, handler: ModelWrapValidatorHandler[GatewayConfig]) -> GatewayConfig:
        if not isinstance(data, Mapping):
            return handler(data)
        data = _copy_containers(data)  # pruning below mutates it; the caller's data stays untouched
        issues = _cross_field_problems(data)
        return _validate_with_issues(cls, data, handler, issues)

    @property
    def policy(self) -> PolicyDocument:
        """The policy part (rules and masking) for :mod:`pgwarden.policy`."""
        return PolicyDocument(rules=self.rules, masking=self.masking)

    @property
    def policy_version(self) -> str:
        """sha256 (hex) of the canonical JSON of the policy part (rules and masking) of the configuration.

        Verdict caches key on it. It hashes the whole model on every call: read it once per
        configuration and keep it.
        """
        # Only what decides: the rules and masking (a moved DSN or journal must not void approvals).
        canonical = json.dumps(self.model_dump(mode="json", include={"rules", "masking"}), sort_keys=True,
                               separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def base_dir(self) -> Path | None:
        """Folder of the file this configuration came from, or None when parsed from text."""
        return self._base_dir

    def resolve_path(self, path: str) -> Path:
        """``path`` as given in the file, made absolute against the file's folder."""
        p = Path(path).expanduser()
        if p.is_absolute() or self._base_dir is None:
            return p
        return self._base_dir / p

    def with_target_dsn(self, name: str, dsn: str, password: SecretRef | None = None) -> GatewayConfig:
        """A copy where target ``name`` connects to ``dsn`` with ``password`` (replacing both).

        The new DSN is validated like one in the file (no inline password). For tests and
        embedded databases whose address is known only at run time.
        """
        if name not in self.targets:
            raise ConfigError("with_target_dsn", [ConfigProblem(
                f"targets.{name}", f"expected one of the defined targets {', '.join(self.targets)} (got {name!r})")])
        data = self.model_dump(mode="json")
        data["targets"][name]["dsn"] = dsn
        data["targets"][name]["password"] = None if password is None else password.model_dump(mode="json")
        copy = _validate(data, "with_target_dsn")
        copy._base_dir = self._base_dir
        return copy


# -- cross-field checks -----------------------------------------------------------------------------


def _copy_containers(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value  # scalars, and model instances built by code, are kept as they are


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _cross_field_problems(data: Mapping[str, Any]) -> list[_Issue]:
    """Checks spanning sections, on raw data so they run even when other keys are invalid."""
    problems: list[_Issue] = []
    targets = data.get("targets")
    names = [str(n) for n in targets] if isinstance(targets, Mapping) else None
    rules = data.get("rules")
    if not isinstance(rules, list):
        return problems
    first_use: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, (Mapping, Rule)):
            continue
        name = _get(rule, "name")
        if isinstance(name, str):
            if name in first_use:
                problems.append((
                    ("rules", i, "name"),
                    f"expected a name no other rule uses, since names identify rules in the audit trail; "
                    f"rules[{first_use[name]}] is already called that (got {name!r})",
                ))
            else:
                first_use[name] = i
        target = _get(rule, "target")
        if names is not None and isinstance(target, str) and target not in names:
            known = ", ".join(names) if names else "none are defined"
            problems.append((
                ("rules", i, "target"), f"expected the name of a target under 'targets' ({known}) (got {target!r})"
            ))
    return problems


def _validate(data: Any, source: str) -> GatewayConfig:
    if data is None:
        raise ConfigError(source, [ConfigProblem(
            "(top level)", "expected a mapping with version, targets, identity, rules and masking "
                           "(got an empty document)")])
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigProblem(
            "(top level)", f"expected a mapping with version, targets, identity, rules and masking "
                           f"(got a {type(data).__name__}: {show(data)})")])
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(include_url=False), key=_file_order)
        raise ConfigError(source, [problem_from_error(e, GatewayConfig) for e in errors]) from None


_SECTIONS = list(GatewayConfig.model_fields)


def _file_order(error: ErrorDetails) -> tuple[int, int]:
    # Checks on raw data are reported after pydantic's own; put each back near its neighbours
    # (same section, same list item) so the listing reads top to bottom. The sort is stable.
    loc = error["loc"]
    section = _SECTIONS.index(loc[0]) if loc and loc[0] in _SECTIONS else len(_SECTIONS)
    item = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return section, item
