"""The engine for one configuration: decisions, catalogs, masks and upstream pools.

A :class:`Gateway` is built once from a validated :class:`GatewayConfig`. It owns the
:class:`~pgwarden.policy.decision.Decider` (one per policy version), a catalog snapshot per
target (loaded from the target's ``pg_catalog``, the builtin one until then), the compiled
maskers (hash keys resolved once per mask), the logins of rules that have their own
(:class:`~pgwarden.engine.upstream.Login`), and the :class:`~pgwarden.engine.upstream.Upstream`
pools. Front doors (MCP tools, the wire proxy, the CLI) open a
:class:`~pgwarden.engine.session.Session` per connection or tool call over it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from pgwarden.policy.catalog import Catalog, builtin_catalog
from pgwarden.policy.decision import Decider
from pgwarden.policy.detectors import Detector
from pgwarden.policy.language import ColumnMask, MaskStrategy, Rule
from pgwarden.policy.masking import derive_mask_key, make_masker, mask_whole
from pgwarden.policy.verdict import MaskAction, PinnedSettings

from . import upstream
from .catalog_loader import aload_catalog
from .config import GatewayConfig, Target
from .errors import GatewayError
from .principal import Principal
from .secrets import SecretError, resolve_secret, resolve_secret_bytes

Masker = Callable[[Any], "str | None"]

__all__ = ["Gateway", "GatewayError"]


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.policy = config.policy
        self.decider = Decider(self.policy, version=config.policy_version, mask_key=self.mask_key)
        self._catalogs: dict[str, Catalog] = {}
        self._maskers: dict[int, Masker] = {}
        self._logins: dict[str, upstream.Login] = {}
        self._raw_masked: dict[tuple, frozenset[tuple[int, int]]] = {}
        self.upstream = upstream.Upstream()
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

    def login(self, rule: Rule | None) -> upstream.Login | None:
        """The rule's own upstream login, or the target's user (secrets resolved once)."""
        if rule is None or rule.upstream_login is None:
            return self._target_login(rule.target if rule else None)
        found = self._logins.get(rule.name)
        if found is None:
            ref = rule.upstream_login.password
            found = upstream.Login(rule.upstream_login.user,
                                   None if ref is None else self._secret(resolve_secret, ref))
            self._logins[rule.name] = found
        return found

    def _target_login(self, target_name: str | None) -> upstream.Login | None:
        if target_name is None:
            return None
        _, target = self.target(target_name)
        if target.password is None:
            return None
        key = "target:" + target_name
        found = self._logins.get(key)
        if found is None:
            found = upstream.Login(None, self._secret(resolve_secret, target.password))
            self._logins[key] = found
        return found

    @staticmethod
    def catalog_settings(target: Target) -> PinnedSettings:
        """What a catalog-reading connection pins: read-only, the target's search_path."""
        return PinnedSettings(read_only=True, statement_timeout_ms=30_000, lock_timeout_ms=5_000,
                              search_path=tuple(target.search_path), role=None, application_name="pgwarden:catalog")

    # -- catalogs ---------------------------------------------------------------------

    def catalog(self, target_name: str | None = None) -> Catalog:
        name, target = self.target(target_name)
        cat = self._catalogs.get(name)
        if cat is None:
            return builtin_catalog().with_search_path(target.search_path)
        return cat

    async def refresh_catalog(self, target_name: str | None = None) -> Catalog:
        """Reload the target's catalog (after DDL, or at start). Raises GatewayError if unreachable."""
        name, target = self.target(target_name)
        try:
            conn = await upstream.connect(target, self.catalog_settings(target), self._target_login(name),
                                          target_name=name, application_name="pgwarden:catalog")
        except upstream.UpstreamUnavailable as exc:
            raise GatewayError("catalog_unavailable", f"could not read the catalog of target {name!r}: "
                               f"{exc.message}", sqlstate="08006") from None
        try:
            async with conn:
                cat = await aload_catalog(conn, search_path=target.search_path)
        except psycopg.Error as exc:
            raise GatewayError("catalog_unavailable", f"could not read the catalog of target {name!r}: "
                               f"{upstream.first_line(exc)}", sqlstate="08006") from None
        self._catalogs[name] = cat
        self._raw_masked.clear()
        return cat

    def raw_masked(self, principal: Principal, target_name: str) -> frozenset[tuple[int, int]]:
        """(table OID, attnum) of every column masked for ``principal``: never released raw."""
        catalog = self.catalog(target_name)
        key = (catalog.version, principal.groups)
        found = self._raw_masked.get(key)
        if found is None:
            masks = [m for m in self.policy.masking.columns if not principal.groups.intersection(m.unless_groups)]
            found = frozenset(
                (rel.oid, col.attnum) for rel in catalog.relations.values() if rel.oid
                for col in rel.columns if any(m.covers(f"{rel.schema}.{rel.name}.{col.name}") for m in masks))
            if len(self._raw_masked) > 1000:
                self._raw_masked.clear()
            self._raw_masked[key] = found
        return found

    async def close(self) -> None:
        await self.upstream.close()

    # -- masking ----------------------------------------------------------------------

    def masker(self, action: MaskAction) -> Masker:
        """The value function of the mask the decision chose for ``action`` (compiled once per mask)."""
        if action.whole:
            return mask_whole
        mask = action.mask
        if mask is None:
            raise GatewayError("mask_missing", f"the plan names no mask for {action.source}; the result is withheld")
        key = id(mask)
        fn = self._maskers.get(key)
        if fn is None:
            secret = self.mask_key(mask) if mask.strategy is MaskStrategy.HASH else None
            fn = make_masker(mask.strategy, keep=mask.keep, key=secret)
            self._maskers[key] = fn  # policy masks live as long as the gateway: their ids are stable
        return fn

    def mask_key(self, mask: ColumnMask) -> bytes:
        """The derived key of one hash mask: the master key itself never leaves the gateway."""
        if mask.key is None:
            raise GatewayError("mask_key_missing", f"no hash key for {mask.column}")
        return derive_mask_key(self._secret(resolve_secret_bytes, mask.key), mask.column)

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
