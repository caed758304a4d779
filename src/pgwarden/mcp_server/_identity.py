"""Who is calling: the engine's token verifier behind the SDK's bearer-token door.

Over HTTP the SDK's ``BearerAuthBackend`` hands each request's token to :class:`BearerVerifier`,
which verifies it with the engine's :class:`~pgwarden.engine.identity.TokenVerifier` (signature,
``iss``, ``aud``, ``exp``/``nbf``, refused algorithms) and returns an access token carrying the
:class:`Principal`; a tool reads it back per call with :func:`current_principal`. Over stdio the
principal comes from ``PGWARDEN_TOKEN``, verified again on every call so an expired token stops
working without a restart.
"""

from __future__ import annotations

import logging
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


def fixed_token(verifier: TokenVerifier, token: str) -> PrincipalSource:
    """The stdio source: ``token`` verified on every call (raises AuthenticationError when it stops being valid)."""

    def principal() -> Principal:
        return verifier.verify(token)

    return principal


def current_principal() -> Principal | None:
    """The principal of the HTTP request being served (None outside an authenticated request)."""
    token = get_access_token()
    if isinstance(token, PrincipalToken) and isinstance(token.principal, Principal):
        return token.principal
    return None
