"""``pgwarden``: the command line's entry point and the ``config`` commands.

Every other command lives in a module of its own under :mod:`pgwarden.cli` with a
``register(subparsers)`` function; :data:`COMMANDS` lists them. A command's handler is stored as
``handler`` on its parser and returns an exit code from :mod:`pgwarden.cli.exits`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from pgwarden import __version__

from . import exits

# Modules under pgwarden.cli, each with register(subparsers); imported when the parser is built.
COMMANDS = ("check", "approvals", "audit", "token", "proxy", "mcp", "serve", "demo", "scram")


def _config_check(args: argparse.Namespace) -> int:
    from pgwarden.engine.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exits.USAGE
    rules, targets = len(config.rules), len(config.targets)
    print(
        f"{args.file}: ok ({rules} rule{'s' if rules != 1 else ''}, {targets} target{'s' if targets != 1 else ''}, "
        f"policy version {config.policy_version[:12]})"
    )
    return exits.OK


def _config_schema(args: argparse.Namespace) -> int:
    from pgwarden.engine.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return exits.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgwarden",
        description="A governed door between AI coding agents and PostgreSQL.",
        epilog=exits.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgwarden {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    config = commands.add_parser("config", help="validate the configuration file or print its JSON Schema")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    check = config_commands.add_parser(
        "check", help="validate a pgwarden.yaml; print every problem",
        epilog="exit codes: 0 the file is valid, 2 it is not (every problem is printed to stderr)",
    )
    check.add_argument("file", metavar="FILE", help="path of the configuration file")
    check.set_defaults(handler=_config_check)
    schema = config_commands.add_parser("schema", help="print the JSON Schema of pgwarden.yaml")
    schema.set_defaults(handler=_config_schema)
    config.set_defaults(handler=lambda _args: _usage(config))

    for name in COMMANDS:
        importlib.import_module(f"pgwarden.cli.{name}").register(commands)
    parser.set_defaults(handler=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exits.USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else exits.USAGE
    return int(args.handler(args))


