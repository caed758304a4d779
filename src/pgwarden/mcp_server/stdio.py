"""``pgwarden mcp``: the MCP server over stdio, as the principal ``PGWARDEN_TOKEN`` proves."""

from __future__ import annotations

from pgwarden.engine.runtime import Runtime

from ._identity import fixed_token
from .server import build_server

__all__ = ["run_stdio"]


async def run_stdio(runtime: Runtime, token: str, *, target: str | None = None) -> None:
    """Serve on stdin/stdout until the client goes away. The token is verified, then reused until its exp."""
    assert runtime.verifier is not None
    source = fixed_token(runtime.verifier, token)
    source()  # refuse to start on a bad token (AuthenticationError)
    server, warden = build_server(runtime, source, target=target)
    try:
        await server.run_stdio_async()
    finally:
        warden.end_sessions()
