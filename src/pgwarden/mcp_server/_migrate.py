"""Migrations: split, lint (squawk plus what it lacks), trace locks in a rolled-back run, and a ledger.

The lock trace runs the script statement by statement inside one transaction on a connection of
its own (pinned like the principal's rule, but read-write, with the rule's ``lock_timeout`` and
``statement_timeout``), reads ``pg_locks`` for its own backend after each statement, and rolls back.
No row of any statement is returned: only command statuses and locks. The ledger
(``pgwarden_migrations``: name, checksum, approved_by, applied_at) lives in the target and is written
by the gateway in the same transaction as the migration it records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pglast
import psycopg
from psycopg import sql as pgsql

from pgwarden.engine import upstream
from pgwarden.engine.errors import GatewayError
from pgwarden.engine.session import Session
from pgwarden.policy.verdict import Verdict

__all__ = ["LEDGER", "LedgerEntry", "checksum", "dry_run", "ledger_entry", "lint", "split_script"]

LEDGER = "pgwarden_migrations"

_LOCKS_SQL = (b"SELECT l.locktype, coalesce(c.relname, l.relation::text, ''), l.mode, "
              b"coalesce(n.nspname, '') FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
              b"LEFT JOIN pg_namespace n ON n.oid = c.relnamespace "
              b"WHERE l.pid = pg_backend_pid() AND l.granted AND l.locktype = 'relation' "
              b"AND coalesce(n.nspname, '') NOT IN ('pg_catalog', 'information_schema', 'pg_toast')")

# Strong locks block reads or writes of the table for as long as the transaction lasts.
_BLOCKS = {"AccessExclusiveLock": "reads and writes", "ExclusiveLock": "writes", "ShareLock": "writes",
           "ShareRowExclusiveLock": "writes", "ShareUpdateExclusiveLock": "schema changes and VACUUM",
           "RowExclusiveLock": "nothing but SHARE-level locks", "AccessShareLock": "only ACCESS EXCLUSIVE"}


def checksum(script: str) -> str:
    return hashlib.sha256(script.strip().encode()).hexdigest()


def split_script(script: str) -> list[str]:
    try:
        return [s.strip() for s in pglast.split(script, with_parser=True) if s.strip()]
    except pglast.parser.ParseError as exc:
        raise GatewayError("syntax_error", f"the migration does not parse: {exc}", sqlstate="42601") from None


def _squawk() -> str | None:
    here = Path(sys.executable).parent / "squawk"
    return str(here) if here.exists() else shutil.which("squawk")


def _statement_of(offset: int, starts: list[int]) -> int:
    index = 0
    for i, start in enumerate(starts):
        if start <= offset:
            index = i
    return index


async def lint(script: str, statements: list[str]) -> list[dict[str, Any]]:
    """squawk's findings (JSON reporter, script on stdin) plus the checks squawk lacks."""
    findings: list[dict[str, Any]] = []
    binary = _squawk()
    if binary is None:
        findings.append({"rule": "pgwarden:lint-unavailable", "level": "warning",
                         "message": "squawk is not installed: locking hazards were not linted"})
    else:
        text = "\n".join(s.rstrip(";") + ";" for s in statements)
        starts, pos = [], 0
        for s in statements:
            starts.append(pos)
            pos += s.count("\n") + 1
        proc = await anyio.run_process([binary, "--reporter", "json", "--pg-version", "16"], input=text.encode(),
                                       check=False)
        try:
            raw = json.loads(proc.stdout or b"[]")
        except ValueError:
            raw = []
            findings.append({"rule": "pgwarden:lint-failed", "level": "warning",
                             "message": (proc.stderr or b"").decode(errors="replace")[:300]})
        for item in raw:
            rule = item.get("rule_name", "")
            if rule in {"require-lock-timeout", "require-statement-timeout"}:
                continue  # the gateway pins both on the connection that applies the migration
            finding = {"rule": rule, "level": str(item.get("level", "")).lower(),
                       "statement": _statement_of(int(item.get("line", 0)), starts) + 1,
                       "message": item.get("message", "")}
            if item.get("help"):
                finding["help"] = item["help"]
            findings.append(finding)
    for index, statement in enumerate(statements, 1):
        findings.extend(_own_checks(index, statement))
    return findings


def _own_checks(index: int, statement: str) -> list[dict[str, Any]]:
    # What squawk does not say: a backfill that rewrites every row in the migration's one transaction.
    try:
        node = pglast.parse_sql(statement)[0].stmt
    except pglast.parser.ParseError:
        return []
    kind = type(node).__name__
    if kind in {"UpdateStmt", "DeleteStmt"} and getattr(node, "whereClause", None) is None:
        return [{"rule": "pgwarden:unbatched-backfill", "level": "warning", "statement": index,
                 "message": f"{'UPDATE' if kind == 'UpdateStmt' else 'DELETE'} without WHERE touches every row "
                            "inside the migration's single transaction, holding row locks until it commits",
                 "help": "backfill in batches outside the schema migration"}]
    return []


@dataclass
class DryRun:
    statements: list[dict[str, Any]] = field(default_factory=list)
    locks: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"statements": [{k: s[k] for k in ("index", "status") if k in s}
                                              for s in self.statements],
                               "locks": self.locks}
        if self.error:
            out["error"] = self.error
        return out


async def _writer(session: Session, verdict: Verdict) -> psycopg.AsyncConnection:
    if verdict.settings is None or session.rule is None:
        raise GatewayError("no_rule", "no rule grants this principal access", sqlstate="42501")
    settings = dataclasses.replace(verdict.settings, read_only=False)
    return await upstream.connect(session._target, settings, session.gateway.login(session.rule),
                                  target_name=session.target, application_name=settings.application_name)


def _screen(session: Session, exc: psycopg.Error, verdict: Verdict | None = None) -> dict[str, Any]:
    sqlstate = getattr(exc, "sqlstate", None) or "XX000"
    if verdict is not None and any(p.scrub_errors for p in verdict.plans):
        return {"sqlstate": sqlstate, "message": f"the statement failed (SQLSTATE {sqlstate}); the error text is "
                "withheld because the statement reads masked columns"}
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or upstream.first_line(exc)
    detector = session.gateway.detector
    # The detail often quotes row values (duplicate keys, check violations): never passed on.
    return {"sqlstate": sqlstate,
            "message": detector.redact(message) if detector else message}


async def dry_run(session: Session, statements: list[str], verdicts: list[Verdict]) -> DryRun:
    """Run every statement in a transaction that is rolled back, tracing the locks each one takes."""
    run = DryRun()
    conn = await _writer(session, verdicts[0])
    seen: set[tuple[str, str, str]] = set()
    try:
        async with conn.transaction(force_rollback=True):
            for index, (statement, verdict) in enumerate(zip(statements, verdicts, strict=True), 1):
                try:
                    async with conn.transaction():  # a savepoint: locks stay, a failure is contained
                        cur = await conn.execute(verdict.text_for_upstream(statement).encode())
                        status = cur.statusmessage or ""
                except psycopg.Error as exc:
                    run.error = {"statement": index, **_screen(session, exc, verdict)}
                    run.statements.append({"index": index, "status": "failed"})
                    break
                rows = await (await conn.execute(_LOCKS_SQL)).fetchall()
                for _, rel, mode, schema in rows:
                    key = (schema, rel, mode)
                    if key in seen or rel == LEDGER:
                        continue
                    seen.add(key)
                    run.locks.append({"statement": index, "relation": f"{schema}.{rel}" if schema else rel,
                                      "mode": mode, "blocks": _BLOCKS.get(mode, "")})
                run.statements.append({"index": index, "status": status})
    except psycopg.OperationalError as exc:
        raise upstream.UpstreamUnavailable("upstream_unavailable", f"dry run: {upstream.first_line(exc)}") from None
    finally:
        await conn.close()
    return run


@dataclass(frozen=True)
class LedgerEntry:
    name: str
    checksum: str
    approved_by: str | None
    applied_at: str


def _ledger_name(session: Session) -> pgsql.Composed:
    schema = session._target.search_path[0] if session._target.search_path else "public"
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(LEDGER))


_CREATE = ("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, checksum text NOT NULL, "
           "approved_by text, applied_at timestamptz NOT NULL DEFAULT now())")


async def ledger_entry(session: Session, name: str) -> LedgerEntry | None:
    """The ledger's row for ``name`` (read by the gateway's own catalog login, not the agent's)."""
    gateway = session.gateway
    conn = await upstream.connect(session._target, gateway.catalog_settings(session._target),
                                  gateway._target_login(session.target), target_name=session.target,
                                  application_name="pgwarden:migrations")
    try:
        async with conn:
            exists = await (await conn.execute(b"SELECT to_regclass(%s)", (
                _ledger_name(session).as_string(conn),))).fetchone()
            if not exists or exists[0] is None:
                return None
            row = await (await conn.execute(pgsql.SQL("SELECT name, checksum, approved_by, applied_at::text "
                                                      "FROM {} WHERE name = %s").format(_ledger_name(session)),
                                            (name,))).fetchone()
    except psycopg.Error as exc:
        raise upstream.UpstreamUnavailable("upstream_unavailable", f"reading the migration ledger: "
                                           f"{upstream.first_line(exc)}") from None
    return LedgerEntry(*row) if row else None


async def apply(session: Session, name: str, script_checksum: str, statements: list[str],
                verdicts: list[Verdict], approved_by: str | None) -> tuple[list[dict[str, Any]], LedgerEntry]:
    """Run the migration and its ledger row in one transaction (lock_timeout pinned on the connection)."""
    conn = await _writer(session, verdicts[0])
    ledger = _ledger_name(session)
    done: list[dict[str, Any]] = []
    try:
        async with conn.transaction():
            await conn.execute(pgsql.SQL(_CREATE).format(ledger))
            for index, (statement, verdict) in enumerate(zip(statements, verdicts, strict=True), 1):
                try:
                    cur = await conn.execute(verdict.text_for_upstream(statement).encode())
                except psycopg.Error as exc:
                    raise GatewayError("migration_failed", f"statement {index} failed and the migration was "
                                       f"rolled back: {_screen(session, exc, verdict)['message']}",
                                       sqlstate=getattr(exc, "sqlstate", None) or "XX000") from None
                done.append({"index": index, "status": cur.statusmessage or ""})
            row = await (await conn.execute(pgsql.SQL(
                "INSERT INTO {} (name, checksum, approved_by) VALUES (%s, %s, %s) "
                "RETURNING name, checksum, approved_by, applied_at::text").format(ledger),
                (name, script_checksum, approved_by))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise GatewayError("migration_already_applied", f"migration {name!r} was applied meanwhile",
                           sqlstate="23505") from None
    except psycopg.OperationalError as exc:
        raise upstream.UpstreamUnavailable("upstream_unavailable", f"applying: {upstream.first_line(exc)}") from None
    finally:
        await conn.close()
    assert row is not None
    await session.gateway.refresh_catalog(session.target)
    return done, LedgerEntry(*row)
