"""``pgwarden scram-verifier``: make the SCRAM-SHA-256 verifier of a wire-proxy service user.

The password is read from standard input (one line) or asked for without echo, never taken from
the command line (it would land in the shell's history and the process list). The output, in
pg_authid's form, goes into the file or environment variable that ``proxy.service_users[].verifier``
names; the gateway keeps only the verifier, never the password.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from . import exits


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "make the SCRAM-SHA-256 verifier of a wire-proxy service user (password from stdin)"
    parser = subparsers.add_parser("scram-verifier", help=help_text, description=__doc__.split("\n\n")[1],
                                   epilog=exits.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4096, help="PBKDF2 iterations (default 4096)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pgwarden.wire_proxy.server import make_verifier

    if args.iterations < 4096:
        print("pgwarden scram-verifier: use at least 4096 iterations", file=sys.stderr)
        return exits.USAGE
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("pgwarden scram-verifier: an empty password would let anyone in; give one on stdin",
              file=sys.stderr)
        return exits.USAGE
    print(make_verifier(password, iterations=args.iterations))
    return exits.OK
