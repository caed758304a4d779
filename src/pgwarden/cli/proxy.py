"""``pgwarden proxy``: the PostgreSQL wire-protocol door (psql, drivers, pgbench) over the engine.

Runs until interrupted. Exit status (:mod:`pgwarden.cli.exits`): 0 stopped cleanly, 2 bad configuration or
arguments, 3 the listen address could not be bound or the engine could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from . import exits


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "serve the PostgreSQL wire protocol: any client, through the same policy, masks and audit"
    parser = subparsers.add_parser("proxy", help=help_text, description=help_text, epilog=exits.EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", required=True, help="path of pgwarden.yaml")
    parser.add_argument("--listen", default=None, help="HOST:PORT to listen on (default: proxy.listen)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop when it is installed")
    parser.add_argument("--no-digest", action="store_true",
                        help="do not digest whole results in the audit record (sample and row count only)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pgwarden.engine.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exits.USAGE
    host = port = None
    if args.listen:
        h, sep, p = args.listen.rpartition(":")
        if not sep or not p.isdigit() or not h:
            print(f"--listen: expected HOST:PORT, not {args.listen!r}", file=sys.stderr)
            return exits.USAGE
        host, port = h, int(p)
    if args.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(_serve(config, host, port, digest=not args.no_digest))
    except KeyboardInterrupt:
        return exits.OK
    except OSError as exc:
        print(f"pgwarden proxy: {exc}", file=sys.stderr)
        return exits.UNAVAILABLE
    except Exception as exc:  # the engine refused to start: say why, in one line
        print(f"pgwarden proxy: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return exits.UNAVAILABLE
    return exits.OK


async def _serve(config, host, port, *, digest: bool) -> None:
    from pgwarden.engine.runtime import Runtime
    from pgwarden.wire_proxy.server import ProxyServer

    runtime = await Runtime.start(config)
    try:
        server = ProxyServer(runtime, host=host, port=port, digest=digest)
        await server.start()
        print(f"pgwarden proxy listening on {server.host}:{server.port}", flush=True)
        try:
            await server.serve_forever()
        finally:
            await server.close()
    finally:
        await runtime.close()
