"""The engine for one configuration: decisions, catalogs, masks and upstream connections.

A :class:`Gateway` is built once from a validated :class:`GatewayConfig`. It owns
the :class:`~pgwarden.policy.decision.Decider` (one per policy version), a
catalog snapshot per target (loaded from the target's ``pg_catalog``, the
builtin one until then), the compiled maskers (hash keys resolved once), and
builds the libpq connection string for a rule: gateway-held credentials plus
the session settings pinned at connection start-up, where a client's ``RESET``
cannot undo them. Front doors (MCP tools, the wire proxy, the CLI) open a
:class:`~pgwarden.engine.session.Session` per connection or tool call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgwarden.policy.catalog import Catalog, builtin_catalog
from pgwarden.policy.decision import Decider
from pgwarden.policy.detectors import Detector
from pgwarden.policy.language import MaskStrategy, Rule
from pgwarden.policy.masking import make_masker, mask_whole
from pgwarden.policy.verdict import MaskAction

from .catalog_loader import aload_catalog, load_catalog
from .config import GatewayConfig, Target
from .secrets import SecretError, resolve_secret, resolve_secret_bytes

Masker = Callable[[Any], "str | None"]


class GatewayError(Exception):
    """A typed engine error with a stable code and a message saying what to do next."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy = config.policy
        self.decider = Decider(self.policy, version=config.policy_version)
        self._catalogs: dict[str, Catalog] = {}
        self._maskers: dict[tuple[str, str, int], Masker] = {}
        detectors = self.policy.masking.detectors
        self.detector: Detector | None = Detector(detectors.kinds) if detectors.enabled else None

    # -- targets and connections ------------------------------------------------------

    def target(self, name: str | None) -> tuple[str, Target]:
        if name is None:
            if len(self.config.targets) != 1:
                raise GatewayError("target_required", "this gateway has several targets; name one of "
                                   + ", ".join(sorted(self.config.targets)))
            name = next(iter(self.config.targets))
        target = self.config.targets.get(name)
        if target is None:
            raise GatewayError("unknown_target", f"no target named {name!r}; known targets: "
                               + ", ".join(sorted(self.config.targets)))
        return name, target

    def conninfo(self, target_name: str, *, rule: Rule | None = None, application_name: str = "pgwarden",
                 read_only: bool | None = None) -> str:
        """libpq conninfo for ``target_name`` with the gateway's credentials and pinned settings."""
        _, target = self.target(target_name)
        params: dict[str, Any] = {"application_name": application_name[:63],
                                  "connect_timeout": max(1, target.connect_timeout // 1000)}
        if target.password is not None:
            params["password"] = self._secret(resolve_secret, target.password)
        options = [f"-c search_path={_options_value(','.join(_quote_ident(s) for s in target.search_path))}"]
        if rule is not None:
            options += [f"-c statement_timeout={rule.statement_timeout}", f"-c lock_timeout={rule.lock_timeout}",
                        "-c idle_in_transaction_session_timeout=60000"]
            if rule.upstream_role:
                options.append(f"-c role={_options_value(rule.upstream_role)}")
            ro = rule.read_only() if read_only is None else read_only
            if ro:
                options.append("-c default_transaction_read_only=on")
        existing = conninfo_to_dict(target.dsn).get("options")
        params["options"] = " ".join(([existing] if existing else []) + options)
        return make_conninfo(target.dsn, **params)

    # -- catalogs ---------------------------------------------------------------------

    def catalog(self, target_name: str | None = None) -> Catalog:
        name, target = self.target(target_name)
        cat = self._catalogs.get(name)
        if cat is None:
            return builtin_catalog().with_search_path(target.search_path)
        return cat

    def refresh_catalog(self, target_name: str | None = None) -> Catalog:
        """Reload the target's catalog (after DDL, or at start). Raises GatewayError if unreachable."""
        name, target = self.target(target_name)
        try:
            with psycopg.connect(self.conninfo(name), autocommit=True) as conn:
                cat = load_catalog(conn, search_path=target.search_path)
        except psycopg.Error as exc:
            raise GatewayError("catalog_unavailable", f"could not read the catalog of target {name!r}: "
                               f"{_first_line(exc)}") from exc
        self._catalogs[name] = cat
        return cat

    async def arefresh_catalog(self, target_name: str | None = None) -> Catalog:
        name, target = self.target(target_name)
        try:
            async with await psycopg.AsyncConnection.connect(self.conninfo(name), autocommit=True) as conn:
                cat = await aload_catalog(conn, search_path=target.search_path)
        except psycopg.Error as exc:
            raise GatewayError("catalog_unavailable", f"could not read the catalog of target {name!r}: "
                               f"{_first_line(exc)}") from exc
        self._catalogs[name] = cat
        return cat

    # -- masking ----------------------------------------------------------------------

    def masker(self, action: MaskAction) -> Masker:
        """The value function for one mask action (compiled once per strategy/key)."""
        if action.whole:
            return mask_whole
        key = (action.strategy, str(action.source), action.keep)
        fn = self._maskers.get(key)
        if fn is None:
            secret = None
            if action.strategy == MaskStrategy.HASH.value:
                mask = next((m for m in self.policy.masking.columns if m.covers(str(action.source))), None)
                if mask is None or mask.key is None:
                    raise GatewayError("mask_key_missing", f"no hash key for {action.source}")
                secret = self._secret(resolve_secret_bytes, mask.key)
            fn = make_masker(action.strategy, keep=action.keep, key=secret)
            self._maskers[key] = fn
        return fn

    def check_mask_keys(self) -> None:
        """Resolve every hash key now, so a missing secret stops the gateway at start."""
        for mask in self.policy.masking.columns:
            if mask.key is not None:
                self._secret(resolve_secret_bytes, mask.key)

    def _secret(self, resolve, ref):
        try:
            return resolve(ref, base_dir=self.config.base_dir)
        except SecretError as exc:
            raise GatewayError(exc.code, exc.message) from None


def _quote_ident(name: str) -> str:
    if name.replace("_", "").isalnum() and name == name.lower() and not name[0].isdigit():
        return name
    return '"' + name.replace('"', '""') + '"'


def _options_value(value: str) -> str:
    # libpq's options: spaces separate arguments, backslash escapes them.
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
