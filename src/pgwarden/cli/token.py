"""``pgwarden token init | mint``: the local DEVELOPMENT-ONLY token issuer (:mod:`pgwarden.engine.dev_issuer`).

``mint`` prints only the token on stdout (``PGWARDEN_TOKEN=$(pgwarden token mint --sub alice --groups dba)``);
the development-only warning goes to stderr every time. A gateway accepts the tokens only when its
``identity`` names issuer ``https://pgwarden-dev-issuer.invalid`` and this state folder's key (``init`` prints the section).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pgwarden.engine.dev_issuer import (
    DEFAULT_AUDIENCE,
    DEV_ISSUER,
    WARNING,
    DevIssuer,
    DevIssuerError,
    identity_yaml,
)
from pgwarden.policy.language import parse_duration_ms

from . import exits

DEFAULT_STATE = ".pgwarden-dev"


def _state(args: argparse.Namespace) -> str:
    return args.state or os.environ.get("PGWARDEN_DEV_STATE") or DEFAULT_STATE


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "a local token issuer for DEVELOPMENT ONLY (demo, laptops): init a key, mint JWTs"
    token = subparsers.add_parser("token", help=help_text, description=help_text + ". " + WARNING + ".",
                                  epilog=exits.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = token.add_subparsers(title="token commands", metavar="COMMAND")

    state_help = f"state folder holding the dev key (default: $PGWARDEN_DEV_STATE or {DEFAULT_STATE})"
    init = commands.add_parser("init", help="create the dev issuer's Ed25519 key, public key PEM and jwks.json")
    init.add_argument("--state", metavar="DIR", help=state_help)
    init.add_argument("--audience", default=DEFAULT_AUDIENCE, help="audience to show in the identity snippet")
    init.add_argument("--json", action="store_true", help="print the paths as JSON")
    init.set_defaults(handler=_init)

    mint = commands.add_parser("mint", help="mint a JWT signed by the dev key (printed alone on stdout)")
    mint.add_argument("--sub", required=True, help="subject of the token")
    mint.add_argument("--groups", default="", help="comma-separated groups, e.g. ai-agents or dba,oncall")
    mint.add_argument("--ttl", default="1h", help="lifetime, e.g. 15min, 1h (default 1h, at most 7 days)")
    mint.add_argument("--audience", default=DEFAULT_AUDIENCE, help=f"the 'aud' claim (default {DEFAULT_AUDIENCE})")
    mint.add_argument("--state", metavar="DIR", help=state_help + "; created on first use")
    mint.set_defaults(handler=_mint)
    token.set_defaults(handler=lambda _a: (token.print_help(sys.stderr), exits.USAGE)[1])


def _init(args: argparse.Namespace) -> int:
    print(WARNING, file=sys.stderr)
    try:
        issuer = DevIssuer.init(_state(args))
    except DevIssuerError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return exits.USAGE
    if args.json:
        print(json.dumps({"issuer": DEV_ISSUER, "state_dir": str(issuer.state_dir), "kid": issuer.kid,
                          "public_key_file": str(issuer.public_key_file), "jwks_file": str(issuer.jwks_file)}))
    else:
        print(f"dev issuer key in {issuer.state_dir} (kid {issuer.kid})")
        print("a development gateway accepts its tokens with:\n")
        print(identity_yaml(issuer, args.audience))
    return exits.OK


def _mint(args: argparse.Namespace) -> int:
    try:
        ttl_ms = parse_duration_ms(args.ttl)
    except ValueError as exc:
        print(f"error [dev_ttl_invalid]: --ttl: {exc}", file=sys.stderr)
        return exits.USAGE
    print(WARNING, file=sys.stderr)
    try:
        issuer = DevIssuer.init(_state(args))
        token = issuer.mint(args.sub, args.groups.split(","), ttl_s=ttl_ms / 1000, audience=args.audience)
    except DevIssuerError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return exits.USAGE
    print(token)
    return exits.OK
