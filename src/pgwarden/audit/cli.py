"""``pgwarden audit sessions | show | replay | verify``.

:func:`register` adds the ``audit`` command to a parent parser's subparsers; the pgwarden CLI passes two
hooks, because this package knows nothing of the engine: ``resolve_settings(args)`` turns ``--config``
into :class:`AuditSettings` (for the journal directory), and ``replay_runner_factory(args)`` turns
``--against DSN`` into a replay runner. Handlers return the exit code: 0 ok, 1 verification failed or
replay differences, 2 bad usage or configuration, 3 could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from pgwarden.errors import ConfigurationError, PgwardenError

from . import review
from .config import AuditSettings
from .verify import verify

__all__ = ["main", "register"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANNOT_RUN = 0, 1, 2, 3

SettingsHook = Callable[[argparse.Namespace], AuditSettings]
RunnerHook = Callable[[argparse.Namespace], review.Runner]


class _Usage(Exception):
    pass


def _journal_dir(args: argparse.Namespace, resolve: SettingsHook | None) -> Path:
    if args.journal is not None:
        return Path(args.journal)
    if args.config is not None:
        if resolve is None:
            raise _Usage("--config needs the pgwarden command (which reads the config); use --journal DIR")
        return resolve(args).journal_dir
    return AuditSettings().journal_dir


def _emit(out: TextIO, data: Any) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _inert(text: Any) -> Any:
    """``text`` with every control, format and line/paragraph separator character escaped (``\\x1b``,
    ``\\u202e``…): what an agent put in a statement, an error or a value must not move the reviewer's
    cursor, erase a line or draw fake ones on the terminal. Lists and nested lists are cleaned item by item."""
    if isinstance(text, str):
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() or c == " " else (
            f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
            if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") else c for c in text)
    if isinstance(text, list):
        return [_inert(v) for v in text]
    return text


def _inert_fields(item: Any) -> Any:
    """A copy of a review dataclass with :func:`_inert` applied to every text field (approvals included)."""
    changes = {}
    for f in dataclasses.fields(item):
        value = getattr(item, f.name)
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            changes[f.name] = [_inert_fields(v) for v in value]
        elif isinstance(value, str | list):
            changes[f.name] = _inert(value)
    return dataclasses.replace(item, **changes)


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() + "\n")


def _cmd_sessions(args: argparse.Namespace, out: TextIO, directory: Path) -> int:
    found = review.sessions(directory, since=args.since, subject=args.subject, decision=args.decision)
    if args.json:
        _emit(out, [s.as_dict() for s in found])
        return EXIT_OK
    if not found:
        out.write("no sessions\n")
        return EXIT_OK
    rows = [
        [s.id[:12], _short(s.subject, 24), s.channel, s.target, (s.start or "")[:19], "open" if s.open else
         (s.end or "")[:19], str(s.statements), ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))]
        for s in map(_inert_fields, found)
    ]
    _table(out, ["SESSION", "SUBJECT", "CHANNEL", "TARGET", "START", "END", "STMTS", "DECISIONS"], rows)
    return EXIT_OK


def _print_step(out: TextIO, step: review.StatementStep) -> None:
    step = _inert_fields(step)
    head = f"#{step.index}  {(step.start or '')[11:23]}  {step.duration_ms:.1f} ms  {step.decision or '-'}"
    if step.rule:
        head += f" (rule {step.rule})"
    head += f"  {step.status}" + (f" {step.sqlstate}" if step.sqlstate else "")
    out.write(head + f"  [{step.where}]\n")
    out.write(f"    sent:      {step.text}\n")
    if step.parameters is not None:
        shown = ", ".join(f"${i}=" + ("NULL" if v is None else repr(v)) for i, v in enumerate(step.parameters, 1))
        out.write(f"    params:    {shown}" + (" (truncated)\n" if step.parameters_truncated else "\n"))
    if step.upstream_text and step.upstream_text != step.text:
        out.write(f"    upstream:  {step.upstream_text}\n")
    for reason in step.reasons:
        out.write(f"    reason:    {reason}\n")
    if step.masked_columns:
        out.write(f"    masked:    {', '.join(step.masked_columns)}\n")
    for a in step.approvals:
        out.write(f"    approval:  {a.id} requested {a.requested_at or '?'} of {', '.join(a.approvers) or '?'}; "
                  f"{a.decision or 'pending'} by {a.approver or '?'} at {a.decided_at or '?'}"
                  + (f" after {a.wait_ms:.0f} ms\n" if a.wait_ms is not None else "\n"))
    if step.error:
        out.write(f"    error:     {step.error}\n")
    if step.row_count is not None:
        out.write(f"    result:    {step.row_count} row(s), sha256 {step.digest or '-'}\n")
    if step.columns is not None and step.sample:
        rows = [["NULL" if v is None else _short(v, 32) for v in row] for row in step.sample]
        buffer: list[str] = []

        class _Lines:
            def write(self, s: str) -> None:
                buffer.append(s)

        _table(_Lines(), step.columns, rows)  # type: ignore[arg-type]
        for line in "".join(buffer).splitlines():
            out.write(f"      {line}\n")
        if step.sample_truncated:
            out.write(f"      … {step.row_count - len(step.sample)} more row(s) not sampled\n")
    if step.journal_failure:
        out.write(f"    journal:   unavailable, continued ({step.journal_failure})\n")


def _print_session(out: TextIO, s: review.SessionSummary) -> None:
    s = _inert_fields(s)
    out.write(f"session {s.id}  {s.subject} via {s.channel} → {s.target}"
              f"  from {s.client_address or '?'} ({s.auth_method or '?'})\n")
    out.write(f"  {s.start or '?'} to {'open' if s.open else s.end}; groups: {', '.join(s.groups) or '-'}\n\n")


def _cmd_show(args: argparse.Namespace, out: TextIO, directory: Path) -> int:
    line = review.timeline(directory, args.session)
    if args.json:
        _emit(out, line.as_dict())
        return EXIT_OK
    _print_session(out, line.session)
    for step in line.steps:
        _print_step(out, step)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace, out: TextIO, directory: Path, factory: RunnerHook | None) -> int:
    line = review.timeline(directory, args.session)
    runner = None
    if args.against:
        if factory is None:
            raise _Usage("--against needs the pgwarden command (which provides the engine's runner)")
        runner = factory(args)
    report = review.replay(line, runner)
    if args.json:
        _emit(out, report.as_dict())
    else:
        _print_session(out, report.session)
        for rs in report.steps:
            assert rs.step is not None
            _print_step(out, rs.step)
            if rs.status != "recorded":
                out.write(f"    replay:    {rs.status.upper()}" + (f" — {_inert(rs.reason)}" if rs.reason else "")
                          + "\n")
                for diff in rs.differences:
                    out.write(f"               {_inert(diff)}\n")
        if runner is not None:
            out.write("\nreplay: " + ("every replayed result matches\n" if report.ok else "DIFFERENCES FOUND\n"))
    return EXIT_OK if report.ok else EXIT_FAILED


def _cmd_verify(args: argparse.Namespace, out: TextIO, directory: Path) -> int:
    report = verify(directory, Path(args.public_key) if args.public_key else None)
    if args.json:
        _emit(out, report.as_dict())
    elif report.ok:
        out.write(f"journal OK: {report.records} records in {len(report.files)} file(s), {report.checkpoints} "
                  f"checkpoint(s), last seq {report.last_seq}, {'sealed' if report.sealed else 'not sealed'}\n")
    else:
        bad = report.first_bad
        assert bad is not None
        out.write(f"journal FAILED at {bad.where}" + (f" (seq {bad.seq})" if bad.seq is not None else "")
                  + f": {bad.kind} — {bad.detail}\n")
    if not args.json:
        for warning in report.warnings:
            out.write(f"warning: {warning}\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def register(
    subparsers: argparse._SubParsersAction,
    *,
    resolve_settings: SettingsHook | None = None,
    replay_runner_factory: RunnerHook | None = None,
) -> argparse.ArgumentParser:
    """Add ``audit`` and its commands; each sets ``args.func(args) -> exit code``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--journal", metavar="DIR", help="journal directory (default: from --config)")
    common.add_argument("--config", metavar="FILE", help="pgwarden.yaml, to find the journal directory")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    audit = subparsers.add_parser("audit", help="review, verify and replay the audit journal")
    commands = audit.add_subparsers(title="audit commands", metavar="COMMAND", required=True)

    p = commands.add_parser("sessions", parents=[common], help="list sessions")
    p.add_argument("--since", help="ISO date/time (UTC unless it says otherwise)")
    p.add_argument("--subject", help="only this subject (enduser.id)")
    p.add_argument("--decision", choices=["allow", "deny", "needs_approval"], help="only sessions with this decision")
    p.set_defaults(command=_cmd_sessions)

    p = commands.add_parser("show", parents=[common], help="one session's timeline")
    p.add_argument("session", metavar="SESSION", help="session id (or a unique prefix)")
    p.set_defaults(command=_cmd_show)

    p = commands.add_parser("replay", parents=[common], help="step through what the client saw; re-run with --against")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--against", metavar="DSN", help="sandbox database to re-run read statements on")
    p.set_defaults(command=lambda a, o, d: _cmd_replay(a, o, d, replay_runner_factory))

    p = commands.add_parser("verify", parents=[common], help="check the hash chain, signatures and signed head")
    p.add_argument("--public-key", metavar="PEM", help="public key kept apart (default: journal.pub beside the journal)")
    p.set_defaults(command=_cmd_verify)

    def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
        out = out or sys.stdout
        try:
            directory = _journal_dir(args, resolve_settings)
            if not directory.is_dir():
                sys.stderr.write(f"pgwarden audit: no journal directory at {directory}\n")
                return EXIT_CANNOT_RUN
            return args.command(args, out, directory)
        except (_Usage, ConfigurationError) as exc:
            sys.stderr.write(f"pgwarden audit: {getattr(exc, 'message', exc)}\n")
            return EXIT_USAGE
        except LookupError as exc:
            sys.stderr.write(f"pgwarden audit: {exc.args[0] if exc.args else exc}\n")
            return EXIT_USAGE
        except review.JournalDamaged as exc:
            sys.stderr.write(f"pgwarden audit: the journal is damaged: {exc}\n")
            return EXIT_FAILED
        except (OSError, PgwardenError, ValueError) as exc:
            sys.stderr.write(f"pgwarden audit: could not run: {exc}\n")
            return EXIT_CANNOT_RUN

    audit.set_defaults(func=run)
    return audit


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pgwarden.audit.cli [audit] COMMAND …`` (the pgwarden CLI calls :func:`register` instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "audit":
        argv.insert(0, "audit")
    parser = argparse.ArgumentParser(prog="pgwarden")
    register(parser.add_subparsers(title="commands", metavar="COMMAND", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
