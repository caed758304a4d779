"""``pgwarden check``: the verdict for one text, as a principal, without running it.

Exit status (:mod:`pgwarden.cli.exits`): 0 allow, 1 deny, 4 needs approval, 2 the check
itself could not be made (bad configuration, unknown target). The catalog is read from the
target when it is reachable, so ``*`` and views resolve exactly; otherwise the
builtin catalog is used and the output says so (``--offline`` forces that).
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from pgwarden.engine.config import ConfigError, load_config
from pgwarden.engine.gateway import Gateway, GatewayError
from pgwarden.policy.verdict import Decision, Verdict

from . import exits

EXIT = {Decision.ALLOW: exits.OK, Decision.DENY: exits.NO, Decision.NEEDS_APPROVAL: exits.HELD}
EXIT_ERROR = exits.USAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "decide one SQL statement under a configuration, without running it"
    parser = subparsers.add_parser("check", help=help_text, description=help_text, epilog=exits.EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help="the statement text to check (several statements allowed; '-' reads stdin)")
    parser.add_argument("--config", "-c", required=True, help="path of pgwarden.yaml")
    parser.add_argument("--as", dest="subject", required=True, help="subject of the principal to check as")
    parser.add_argument("--groups", default="", help="comma-separated groups of the principal")
    parser.add_argument("--target", default=None, help="target name (needed when the config has several)")
    parser.add_argument("--dsn", default=None,
                        help="connect to this DSN instead of the target's (no inline password)")
    parser.add_argument("--offline", action="store_true", help="do not read the target's catalog")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    sql = sys.stdin.read() if args.sql == "-" else args.sql
    try:
        config = load_config(args.config)
        gateway = Gateway(config)
        target, _ = gateway.target(args.target)
        if args.dsn:
            config = config.with_target_dsn(target, args.dsn)
            gateway = Gateway(config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except GatewayError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    catalog_note = "builtin (offline)"
    if not args.offline:
        try:
            catalog = anyio.run(gateway.refresh_catalog, target)
            catalog_note = f"live ({catalog.version})"
        except GatewayError as exc:
            catalog_note = "builtin: target unreachable"
            print(f"warning [{exc.code}]: {exc.message}; deciding with the builtin catalog", file=sys.stderr)
    groups = frozenset(g.strip() for g in args.groups.split(",") if g.strip())
    verdict = gateway.decider.decide(sql, subject=args.subject, groups=groups, target=target,
                                     catalog=gateway.catalog(target))
    if args.json:
        out = verdict.as_dict()
        out["catalog"] = catalog_note
        print(json.dumps(out, indent=2))
    else:
        print(render(verdict, catalog_note))
    return EXIT[verdict.decision]


def render(verdict: Verdict, catalog_note: str) -> str:
    lines = [f"decision: {verdict.decision.value}",
             f"rule:     {verdict.rule or '(none)'}",
             f"policy:   {verdict.policy_version[:12]}",
             f"catalog:  {catalog_note}"]
    if verdict.reasons:
        lines.append("reasons:")
        for r in verdict.reasons:
            where = f" (statement {r.statement + 1})" if r.statement is not None else ""
            lines.append(f"  - [{r.code}] {r.message}{where}")
    for plan in verdict.plans:
        lines.append(f"statement {plan.index + 1}: {plan.command_tag}")
        for m in plan.masks:
            how = "redacted whole (expression)" if m.whole else m.strategy + (
                f" {m.keep}" if m.strategy == "keep_last" else "")
            lines.append(f"  mask column {m.position + 1} {m.column_name!r} <- {m.source}: {how}")
        if plan.scrub_errors:
            lines.append("  error text withheld (reads masked columns)")
    if verdict.approval:
        lines.append(f"approval: by {', '.join(verdict.approval.approvers)} within "
                     f"{verdict.approval.timeout_ms // 1000}s")
    if verdict.settings and verdict.decision is not Decision.DENY:
        s = verdict.settings
        lines.append(f"pinned:   read_only={str(s.read_only).lower()} statement_timeout={s.statement_timeout_ms}ms "
                     f"max_rows={verdict.max_rows} role={s.role or '(target user)'}")
    return "\n".join(lines)
