"""``pgwarden mcp``: serve the MCP tools over stdio, as the principal of ``PGWARDEN_TOKEN``.

Refused at start (exit 2, a sentence on stderr) when the token is missing or does not verify, so a
client shows the reason instead of a server that fails every call. stdout carries only MCP.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import anyio

from . import exits
from ._runtime import start_runtime

TOKEN_ENV = "PGWARDEN_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "serve the MCP tools over stdio (identity from $PGWARDEN_TOKEN)"
    parser = subparsers.add_parser("mcp", help=help_text, description=help_text, epilog=exits.EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", required=True, help="path of pgwarden.yaml")
    parser.add_argument("--target", default=None, help="target name (needed when the config has several)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("PGWARDEN_LOG_LEVEL", "WARNING"))
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(f"pgwarden mcp: no token: set {TOKEN_ENV} to the agent's JWT (the identity every statement "
              "runs as); refusing to start", file=sys.stderr)
        return exits.USAGE
    return anyio.run(_serve, args, token)


async def _serve(args: argparse.Namespace, token: str) -> int:
    from pgwarden.audit import ensure_tracer_provider
    from pgwarden.engine.identity import AuthenticationError
    from pgwarden.mcp_server import run_stdio

    ensure_tracer_provider()  # the SDK's tools/call spans get real ids: statements become their children

    runtime, failed = await start_runtime(args.config, "mcp")
    if runtime is None:
        return failed
    try:
        try:
            runtime.verifier.verify(token)  # type: ignore[union-attr]
        except AuthenticationError as exc:
            print(f"pgwarden mcp: {TOKEN_ENV} refused [{exc.code}]: {exc.message}; refusing to start",
                  file=sys.stderr)
            return exits.USAGE
        await run_stdio(runtime, token, target=args.target)
    finally:
        await runtime.close()
    return exits.OK
