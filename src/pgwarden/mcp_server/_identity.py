"""Who is calling: the engine's token verifier behind the SDK's bearer-token door.

Over HTTP the SDK's ``BearerAuthBackend`` hands each request's token to :class:`BearerVerifier`,
which verifies it with the engine's :class:`~pgwarden.engine.identity.TokenVerifier` (signature,
``iss``, ``aud``, ``exp``/``nbf``, refused algorithms) and returns an access token carrying the
:class:`Principal`; a tool reads it back per call with :func:`current_principal`. Over stdio the
principal comes from ``PGWARDEN_TOKEN``, verified once and reused until its ``exp`` (verified again at
least every minute), so an expired token stops working without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken

from pgwarden.engine.identity import AuthenticationError, TokenVerifier
from pgwarden.engine.principal import Principal

__all__ = ["BearerVerifier", "PrincipalToken", "current_principal", "fixed_token"]

log = logging.getLogger("pgwarden.mcp")


class PrincipalToken(AccessToken):
    """An SDK access token that also holds the verified principal (never rendered to clients)."""

    principal: Any = None


class BearerVerifier:
    """The SDK's ``TokenVerifier`` protocol over the engine's verifier."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = self.verifier.verify(token)
        except AuthenticationError as exc:
            log.info("bearer token refused: %s (%s)", exc.code, exc)
            return None
        claims = dict(principal.claims)
        exp = claims.get("exp")
        return PrincipalToken(token=token, client_id=str(claims.get("azp") or claims.get("client_id")
                                                         or principal.subject),
                              scopes=str(claims.get("scope", "")).split(), subject=principal.subject,
                              expires_at=int(exp) if isinstance(exp, int | float) else None,
                              claims={"iss": claims.get("iss")}, principal=principal)


PrincipalSource = Callable[[], Principal]


_REVERIFY_S = 60.0  # a cached stdio principal is verified again at least this often (key rotation)


def fixed_token(verifier: TokenVerifier, token: str, *, clock: Callable[[], float] = time.time) -> PrincipalSource:
    """The stdio source: ``token`` verified, then its principal reused until the token's ``exp`` (and at most
    a minute between full verifications, so a key withdrawn from the issuer's set stops it); from ``exp``
    on every call verifies again, which raises AuthenticationError as a token stops being valid."""
    cached: list[Any] = [None, 0.0]  # principal, valid until (epoch seconds)

    def principal() -> Principal:
        now = clock()
        if cached[0] is not None and now < cached[1]:
            return cached[0]
        found = verifier.verify(token)
        exp = found.claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            cached[0], cached[1] = found, min(float(exp), now + _REVERIFY_S)
        else:
            cached[0] = None
        return found

    return principal


def current_principal() -> Principal | None:
    """The principal of the HTTP request being served (None outside an authenticated request)."""
    token = get_access_token()
    if isinstance(token, PrincipalToken) and isinstance(token.principal, Principal):
        return token.principal
    return None
