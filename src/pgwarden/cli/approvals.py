"""``pgwarden approvals list | show ID | approve ID [--window 1h] [--comment …] | deny ID --reason …``.

Talks to the approval store named by ``--config`` directly (the SQLite file or the PostgreSQL control
database), so it works without a running gateway; a gateway waiting on the request sees the decision
(at once over PostgreSQL LISTEN/NOTIFY, within its poll interval over SQLite). The approver is whoever
the token says (``--token`` or ``PGWARDEN_TOKEN``), verified with the configuration's ``identity``;
the broker's rules apply exactly as in the console: no self-approval, approver groups, window limits.

Exit codes (:mod:`pgwarden.cli.exits`): 0 done; 1 refused (not allowed, self-approval, already decided,
replayed, expired, window too long, token refused); 2 bad usage / configuration / unknown id; 3 the
approval store cannot be reached; 4 ``show``: the request is still pending. Errors print
``error [code]: message`` on stderr (and ``{"error": {"code", "message"}}`` on stdout with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pgwarden.console import ConsoleError, approver_groups, can_view, format_ms, parse_window
from pgwarden.engine.approvals import (
    ApprovalNotFound,
    ApprovalRefused,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStoreUnavailable,
    build_broker,
)
from pgwarden.engine.config import ConfigError, GatewayConfig, load_config
from pgwarden.engine.identity import AuthenticationError, KeySourceError, TokenVerifier
from pgwarden.engine.principal import Principal
from pgwarden.errors import PgwardenError

from . import exits

__all__ = ["register"]


class _Fail(Exception):
    def __init__(self, exit_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "list, show, approve and deny statements held for a human (works without a running gateway)"
    parser = subparsers.add_parser("approvals", help=help_text, description=__doc__.split("\n\n")[1],
                                   epilog=exits.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", required=True, help="path of pgwarden.yaml (its approvals.store is used)")
    common.add_argument("--token", help="your access token (default: $PGWARDEN_TOKEN); never printed")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(title="approvals commands", metavar="COMMAND")

    p = commands.add_parser("list", parents=[common], help="requests you may see (default: pending ones)")
    p.add_argument("--status", default="pending", choices=[*(s.value for s in ApprovalStatus), "all"],
                   help="which requests (default: pending)")
    p.set_defaults(handler=lambda a: _run(a, _list))

    p = commands.add_parser("show", parents=[common], help="one request in full (exit 4 while it is pending)")
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=lambda a: _run(a, _show))

    p = commands.add_parser("approve", parents=[common], help="approve once, or grant a time-boxed window")
    p.add_argument("id", metavar="ID")
    p.add_argument("--window", help="grant a window instead of a single use, e.g. 30min or 1h "
                                    "(at most what the rule allows)")
    p.add_argument("--comment", help="a note kept with the decision")
    p.set_defaults(handler=lambda a: _run(a, _approve))

    p = commands.add_parser("deny", parents=[common], help="deny, with a reason the requester is told")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", required=True, help="why (required; the waiting client receives it)")
    p.set_defaults(handler=lambda a: _run(a, _deny))
    parser.set_defaults(handler=lambda _a: (parser.print_help(sys.stderr), exits.USAGE)[1])


# -- plumbing ------------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[GatewayConfig, Principal]:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise _Fail(exits.USAGE, "config_invalid", str(exc)) from None
    except OSError as exc:
        raise _Fail(exits.USAGE, "config_unreadable", f"{args.config}: {exc.strerror or exc}") from None
    token = args.token or os.environ.get("PGWARDEN_TOKEN")
    if not token:
        raise _Fail(exits.USAGE, "token_missing", "give your access token with --token or PGWARDEN_TOKEN "
                                                  "(the approver is whoever the token names)")
    try:
        verifier = TokenVerifier.from_config(config)
    except KeySourceError as exc:
        raise _Fail(exits.USAGE, exc.code, exc.message) from None
    try:
        principal = verifier.verify(token.strip())
    except AuthenticationError as exc:
        code = exits.UNAVAILABLE if exc.code == "key_source_unavailable" else exits.NO
        raise _Fail(code, str(exc.code), exc.message) from None
    return config, principal


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        config, principal = _load(args)
        base = config.base_dir or Path.cwd()
        try:
            broker = build_broker(config.approvals, base)
        except PgwardenError as exc:
            raise _Fail(exits.USAGE, exc.code, exc.message) from None

        async def go() -> int:
            try:
                await broker.start(background=False)
                return await action(args, broker, principal)
            finally:
                await broker.close()

        return asyncio.run(go())
    except _Fail as fail:
        return _error(args, fail.exit_code, fail.code, fail.message)
    except ConsoleError as exc:
        return _error(args, exits.USAGE, exc.code, exc.message)
    except ApprovalStoreUnavailable as exc:
        return _error(args, exits.UNAVAILABLE, exc.code, exc.message)
    except ApprovalNotFound as exc:
        return _error(args, exits.USAGE, exc.code, exc.message)
    except ApprovalRefused as exc:
        return _error(args, exits.NO, exc.code, exc.message)
    except PgwardenError as exc:
        return _error(args, exits.UNAVAILABLE, exc.code, exc.message)


def _error(args: argparse.Namespace, exit_code: int, code: str, message: str) -> int:
    print(f"error [{code}]: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"code": code, "message": message}}))
    return exit_code


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _age(req: ApprovalRequest, now: datetime) -> str:
    return format_ms((now - req.created).total_seconds() * 1000)


def _one_line(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- commands ------------------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, broker: Any, who: Principal) -> int:
    status = None if args.status == "all" else ApprovalStatus(args.status)
    found = [r for r in await broker.list(status) if can_view(who, r)]
    if args.json:
        _emit({"approvals": [r.as_dict() for r in found], "count": len(found)})
        return exits.OK
    if not found:
        print(f"no {'' if status is None else status.value + ' '}requests you can see")
        return exits.OK
    now = broker.now()
    rows = [["ID", "STATUS", "REQUESTER", "TARGET", "AGE", "APPROVERS", "STATEMENT"]]
    rows += [[r.id, r.status.value, r.requester, r.target, _age(r, now), ",".join(approver_groups(r)),
              _one_line(r.statement)] for r in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return exits.OK


def _print_request(req: ApprovalRequest, now: datetime) -> None:
    print(f"request   {req.id}  [{req.status.value}]")
    print(f"requester {req.requester} ({', '.join(sorted(req.requester_groups)) or 'no groups'}) via {req.channel.value}")
    print(f"target    {req.target}" + (f" as {req.role}" if req.role else ""))
    print(f"asked     {req.created.isoformat()} ({_age(req, now)} ago); times out {req.expires.isoformat()}")
    print(f"approvers {', '.join(approver_groups(req)) or '(none)'}"
          + (f"; window up to {format_ms(req.max_window_ms)}" if req.max_window_ms > 0 else "; single use only"))
    print("statement")
    for line in req.statement.splitlines() or [""]:
        print(f"    {line}")
    for i, p in enumerate(req.parameters, start=1):
        print(f"    ${i} = {'NULL' if p is None else p}")
    for reason in req.reasons:
        print(f"reason    {reason.code}: {reason.message}")
    for finding in req.lint_findings:
        print("lint      " + "; ".join(f"{k}: {v}" for k, v in finding.items()))
    if not req.pending:
        print(f"decided   {req.status.value} by {req.decided_by or '-'} at "
              f"{req.decided_at.isoformat() if req.decided_at else '-'}" + (f": {req.comment}" if req.comment else ""))
        if req.window is not None:
            print(f"window    until {req.window.until.isoformat()} over "
                  + ", ".join(f"{a} {r}" for r, a in req.window.scope))


async def _show(args: argparse.Namespace, broker: Any, who: Principal) -> int:
    req = await broker.get(args.id)
    if not can_view(who, req):
        raise ApprovalRefused("approver_not_allowed", f"approval request {req.id} may only be seen and decided by "
                                                      f"members of: {', '.join(approver_groups(req)) or '(none)'}")
    if args.json:
        _emit(req.as_dict())
    else:
        _print_request(req, broker.now())
    return exits.HELD if req.pending else exits.OK


async def _approve(args: argparse.Namespace, broker: Any, who: Principal) -> int:
    try:
        window = parse_window(args.window)
    except ConsoleError as exc:
        raise _Fail(exits.USAGE, exc.code, f"--window: {exc.message}") from None
    done = await broker.approve(args.id, who.subject, who.groups, window_ms=window, comment=args.comment)
    if args.json:
        _emit(done.as_dict())
    elif done.window is not None:
        print(f"approved {done.id} as {who.subject}: a window until {done.window.until.isoformat()} for "
              f"{done.requester} on {done.target}")
    else:
        print(f"approved {done.id} as {who.subject}: this statement, once")
    return exits.OK


async def _deny(args: argparse.Namespace, broker: Any, who: Principal) -> int:
    reason = (args.reason or "").strip()
    if not reason:
        raise _Fail(exits.USAGE, "reason_required", "--reason must say why (the requester is told)")
    done = await broker.deny(args.id, who.subject, who.groups, reason)
    if args.json:
        _emit(done.as_dict())
    else:
        print(f"denied {done.id} as {who.subject}: {reason}")
    return exits.OK
