"""``pgwarden serve``: MCP over streamable HTTP at ``/mcp`` (OAuth bearer tokens), plus the console.

The console and approvals API (``pgwarden.console``, built separately) are mounted when that
package exists; it is looked up with ``importlib.util.find_spec`` so its absence is tolerated while a
real import error inside it still stops the server.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

import anyio

from . import exits
from ._runtime import start_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "serve MCP over streamable HTTP at /mcp (bearer tokens), the approvals API and the console"
    parser = subparsers.add_parser("serve", help=help_text, description=help_text, epilog=exits.EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", required=True, help="path of pgwarden.yaml")
    parser.add_argument("--listen", default=None, help="HOST:PORT to listen on (default: serve.listen)")
    parser.add_argument("--target", default=None, help="target name (needed when the config has several)")
    parser.set_defaults(handler=run)


def console_routes(runtime) -> list:
    if importlib.util.find_spec("pgwarden.console") is None:
        return []
    module = importlib.import_module("pgwarden.console")
    routes = getattr(module, "console_routes", None)
    return list(routes(runtime)) if routes is not None else []


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("PGWARDEN_LOG_LEVEL", "INFO"))
    return anyio.run(_serve, args)


async def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pgwarden.audit import ensure_tracer_provider
    from pgwarden.engine.errors import GatewayError
    from pgwarden.mcp_server import build_http_app

    ensure_tracer_provider()  # the SDK's tools/call spans get real ids: statements become their children

    runtime, failed = await start_runtime(args.config, "serve")
    if runtime is None:
        return failed
    listen = args.listen or str(runtime.config.serve.listen)
    try:
        app = build_http_app(runtime, extra_routes=console_routes(runtime), listen=listen, target=args.target)
        host, _, port = listen.rpartition(":")
        server = uvicorn.Server(uvicorn.Config(app, host=host.strip("[]") or "127.0.0.1", port=int(port),
                                               log_level="warning", lifespan="on"))
        print(f"pgwarden serve: MCP at http://{listen}/mcp", file=sys.stderr, flush=True)
        await server.serve()
    except GatewayError as exc:
        print(f"pgwarden serve: [{exc.code}] {exc.message}", file=sys.stderr)
        return exits.USAGE
    finally:
        await runtime.close()
    return exits.OK
