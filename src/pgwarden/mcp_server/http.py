"""``pgwarden serve``'s HTTP app: MCP streamable HTTP at ``/mcp`` as an OAuth 2.1 resource server.

The SDK's bearer middleware checks every request with :class:`~._identity.BearerVerifier` (the
engine's JWT verification), answers a missing or bad token with 401 and a ``WWW-Authenticate``
header naming the RFC 9728 protected-resource metadata it also serves, and the tools read the
caller's principal from the verified token on every call. Other routes (the approvals API and
the console) are added with ``extra_routes``; they share the app, not the MCP auth requirement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from mcp.server.auth.settings import AuthSettings
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from pgwarden.engine.errors import GatewayError
from pgwarden.engine.runtime import Runtime
from pgwarden.engine.secrets import resolve_secret_bytes

from ._identity import BearerVerifier, current_principal
from .server import build_server

__all__ = ["build_http_app", "public_url"]


def public_url(runtime: Runtime, listen: str | None = None) -> str:
    serve = runtime.config.serve
    if serve.public_url:
        return serve.public_url.rstrip("/")
    return f"http://{listen or str(serve.listen)}"


def build_http_app(runtime: Runtime, *, extra_routes: Sequence[BaseRoute] = (), listen: str | None = None,
                   target: str | None = None) -> Starlette:
    """The Starlette app: ``/mcp`` (bearer-protected), RFC 9728 metadata, then ``extra_routes``."""
    if runtime.verifier is None or runtime.config.identity is None:
        raise GatewayError("identity_required", "serving MCP over HTTP verifies bearer tokens: add an 'identity' "
                           "section to the configuration", sqlstate="F0000")
    base = public_url(runtime, listen)
    auth = AuthSettings(issuer_url=runtime.config.identity.issuer, resource_server_url=f"{base}/mcp",
                        validate_token_resource=False)  # the engine's verifier checks 'aud' itself
    key_ref = runtime.config.serve.request_state_key
    key = resolve_secret_bytes(key_ref, base_dir=runtime.config.base_dir) if key_ref is not None else None
    server, warden = build_server(runtime, current_principal, target=target, auth=auth,
                                  token_verifier=BearerVerifier(runtime.verifier), request_state_key=key)
    host = (listen or str(runtime.config.serve.listen)).rsplit(":", 1)[0].strip("[]")
    app = server.streamable_http_app(host=host)
    app.router.routes.extend(extra_routes)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any):
        async with inner(a) as state:
            try:
                yield state
            finally:
                warden.end_sessions()

    app.router.lifespan_context = lifespan
    app.state.runtime = runtime
    app.state.warden = warden
    app.state.mcp = server
    return app
