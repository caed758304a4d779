"""The ``pgwarden`` command line.

Subcommands are thin: each parses its arguments and calls the module that does
the work, so the same work is reachable from tests without a subprocess.
``config check`` and ``config schema`` live here; ``check`` (run one statement
through the policy) lives in :mod:`pgwarden.engine.check_command`, imported only
when used, so a problem in that module never stops the configuration commands.

Exit codes:

====  ==============================================================
0     success
1     the command ran and its answer is "no" (defined by ``check``)
2     bad usage or an invalid / unreadable configuration file
3     the command is not available in this installation
====  ==============================================================
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pgwarden import __version__

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

_EPILOG = """exit codes:
  0  success
  1  the command ran and its answer is "no" (check: the statement is refused)
  2  bad usage, or the configuration file is invalid or unreadable
  3  the command is not available in this installation
"""


def _config_check(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    rules, targets = len(config.rules), len(config.targets)
    print(
        f"{args.file}: ok ({rules} rule{'s' if rules != 1 else ''}, {targets} target{'s' if targets != 1 else ''}, "
        f"policy version {config.policy_version[:12]})"
    )
    return EXIT_OK


def _config_schema(args: argparse.Namespace) -> int:
    from .config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def _add_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "decide one SQL statement under a configuration, without running it"
    try:
        from pgwarden.engine import check_command
    except Exception as exc:  # missing or broken: the other subcommands must keep working
        reason = f"{type(exc).__name__}: {exc}"
        parser = subparsers.add_parser("check", help=help_text, add_help=False)
        # Whatever follows is accepted (see main) so the user hears why, not "unrecognized arguments".
        parser.set_defaults(handler=lambda _args: _unavailable("check", reason), accepts_anything=True)
        return
    parser = subparsers.add_parser("check", help=help_text, description=help_text, epilog=_EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    check_command.add_arguments(parser)
    parser.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    try:
        from pgwarden.engine import check_command
    except Exception as exc:
        return _unavailable("check", f"{type(exc).__name__}: {exc}")
    return int(check_command.run(args))


def _unavailable(command: str, reason: str) -> int:
    print(
        f"pgwarden: the '{command}' command is not available in this installation ({reason}); "
        f"reinstall pgwarden or report this as a bug",
        file=sys.stderr,
    )
    return EXIT_UNAVAILABLE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgwarden",
        description="A governed door between AI coding agents and PostgreSQL.",
        epilog=_EPILOG,
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

    _add_check(commands)
    parser.set_defaults(handler=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_anything", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else EXIT_INVALID
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
