"""``pgwarden audit sessions | show | replay | verify``: :mod:`pgwarden.audit.cli` wired to the engine.

The audit package knows nothing of the engine, so this module gives it two hooks: ``--config`` is read
for ``audit.journal_dir`` (relative paths against the configuration's folder), and ``replay --against
DSN`` gets a runner that re-runs the session's **read** statements through the same engine — a Gateway
over the configuration with the session's target pointed at ``DSN`` (``config.with_target_dsn``) and a
Session as the recorded principal (subject and groups from the session record), so the same rule, the
same masks and the same row limit apply, and returns ``(columns, rows)`` for the digest comparison.
Statements that are not pure reads are never re-run (skipped, with the reason).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from pgwarden.audit import AuditSettings, review
from pgwarden.audit.cli import register as register_audit
from pgwarden.errors import ConfigurationError

from . import exits

__all__ = ["EngineReplayRunner", "register"]


def _config(args: argparse.Namespace) -> Any:
    from pgwarden.engine.config import ConfigError, load_config

    if not args.config:
        raise ConfigurationError("config_required", "replay --against needs --config (the policy to replay under)")
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise ConfigurationError("config_invalid", str(exc)) from None
    except OSError as exc:
        raise ConfigurationError("config_unreadable", f"{args.config}: {exc.strerror or exc}") from None


def resolve_settings(args: argparse.Namespace) -> AuditSettings:
    config = _config(args)
    settings: AuditSettings = config.audit
    if not settings.journal_dir.is_absolute():
        base = config.base_dir or Path.cwd()
        settings = settings.model_copy(update={"journal_dir": base / settings.journal_dir})
    return settings


class EngineReplayRunner:
    """Runs statements as one recorded principal on a sandbox DSN, on an event loop of its own.

    Callable synchronously (``runner(text) -> (columns, rows) | None``) so it works from inside the audit
    package's own ``asyncio.run``; :meth:`close` ends the session, the pools and the loop.
    """

    def __init__(self, config: Any, target: str, dsn: str, subject: str, groups: Sequence[str]) -> None:
        from pgwarden.engine.principal import AuthMethod, Principal

        self.config = config.with_target_dsn(target, dsn)
        self.target = target
        self.principal = Principal(subject=subject, groups=frozenset(groups), auth_method=AuthMethod.CLI)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgwarden-replay", daemon=True)
        self._thread.start()
        self._gateway: Any = None
        self._session: Any = None
        self.warnings: list[str] = []

    def _submit(self, coro: Any) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    async def _open(self) -> None:
        from pgwarden.engine.errors import GatewayError
        from pgwarden.engine.gateway import Gateway
        from pgwarden.engine.principal import Channel
        from pgwarden.engine.session import Session

        self._gateway = Gateway(self.config)
        try:
            await self._gateway.refresh_catalog(self.target)
        except GatewayError as exc:
            self.warnings.append(exc.message)
        self._session = Session(self._gateway, self.principal, self.target, Channel.CLI)

    async def _run(self, text: str, parameters: Sequence[str | None] | None = None
                   ) -> tuple[list[str], list[list[str | None]]] | None:
        from pgwarden.policy.analysis import StatementClass
        from pgwarden.policy.sql import analyse

        if self._session is None:
            await self._open()
        analysis = analyse(text, self._gateway.catalog(self.target), self._session.facts())
        classes = {c for st in analysis.statements for c in st.classes}
        if not analysis.statements or classes - {StatementClass.READ}:
            return None  # only reads are replayed: a sandbox is not a place to repeat writes
        result = await self._session.run(text, parameters=parameters)
        if not result.results:
            return [], []
        last = result.results[-1]
        return list(last.columns), [list(r) for r in last.rows]

    def __call__(self, text: str, parameters: Sequence[str | None] | None = None
                 ) -> tuple[list[str], list[list[str | None]]] | None:
        return self._submit(self._run(text, parameters))

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._gateway is not None:
            await self._gateway.close()

    def close(self) -> None:
        try:
            self._submit(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    runners: list[EngineReplayRunner] = []

    def runner_factory(args: argparse.Namespace) -> review.Runner:
        config = _config(args)
        directory = resolve_settings(args).journal_dir if args.journal is None else Path(args.journal)
        session = review.timeline(directory, args.session).session
        if session.target not in config.targets:
            raise ConfigurationError("replay_target_unknown", f"the session ran on target {session.target!r}, "
                                     f"which {args.config} does not define")
        try:
            runner = EngineReplayRunner(config, session.target, args.against, session.subject, session.groups)
        except Exception as exc:  # an invalid DSN (inline password, unparsable) is a usage error
            raise ConfigurationError("replay_dsn_invalid", f"--against: {exc}") from None
        runners.append(runner)
        return runner

    audit = register_audit(subparsers, resolve_settings=resolve_settings, replay_runner_factory=runner_factory)

    def handler(args: argparse.Namespace) -> int:
        func = getattr(args, "func", None)
        if func is None or not hasattr(args, "command"):
            audit.print_help()
            return exits.USAGE
        try:
            return int(func(args))
        finally:
            while runners:
                runners.pop().close()

    audit.set_defaults(handler=handler)
