"""Helpers for the console and CLI tests: a dev issuer, a config on disk, a real uvicorn server in a thread."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from pgwarden.console import build_app
from pgwarden.engine.approvals import ApprovalBroker, ApprovalRequest, PostgresStore, SqliteStore
from pgwarden.engine.config import load_config
from pgwarden.engine.dev_issuer import DevIssuer
from pgwarden.engine.principal import Principal
from pgwarden.engine.runtime import Runtime
from pgwarden.policy.verdict import ApprovalRequirement

AGENT = Principal.local("agent-7", {"ai-agents"})
HOUR_MS = 3_600_000
_scopes = itertools.count(1)


def run_async(fn: Any) -> Any:
    """``asyncio.run(fn())`` on a thread of its own (Playwright's sync API keeps a loop in the main thread)."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            out.append(asyncio.run(fn()))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


def write_config(directory: Path, issuer: DevIssuer, *, store: str | None = None, target_dsn: str | None = None,
                 journal: str = "journal") -> Path:
    """A pgwarden.yaml trusting the dev issuer; approvals in ``approvals.db`` unless ``store`` is given."""
    dsn = target_dsn or os.environ.get("PGWARDEN_TEST_DSN") or "postgresql://postgres@127.0.0.1:55432/postgres"
    store_yaml = store or "sqlite: {path: approvals.db}"
    text = f"""
version: 1
targets:
  main:
    dsn: "{dsn}"
identity:
  issuer: https://pgwarden-dev-issuer.invalid
  audience: pgwarden
  jwks_file: {issuer.jwks_file}
  algorithms: [EdDSA]
rules:
  - name: ai-agents
    match: {{groups: [ai-agents]}}
    target: main
    statements: {{allow: [read]}}
    approval: {{required_for: [ddl], approvers: [dba], timeout: 10min, window: 1h}}
    tables: {{allow: ["*"]}}
    schemas: {{allow: ["*"]}}
  - name: dba
    match: {{groups: [dba]}}
    target: main
    statements: {{allow: [read, write, ddl]}}
    tables: {{allow: ["*"]}}
    schemas: {{allow: ["*"]}}
approvals:
  store: {{{store_yaml}}}
  poll_interval: 50ms
audit:
  journal_dir: {journal}
"""
    path = directory / "pgwarden.yaml"
    path.write_text(text)
    return path


def requirement(max_window_ms: int = HOUR_MS, approvers: Sequence[str] = ("dba",)) -> ApprovalRequirement:
    return ApprovalRequirement(approvers=tuple(approvers), timeout_ms=600_000, max_window_ms=max_window_ms,
                               triggers=("ddl",))


def store_for(config_path: Path) -> SqliteStore | PostgresStore:
    from pgwarden.engine.approvals import build_store

    config = load_config(config_path)
    return build_store(config.approvals, config.base_dir)  # type: ignore[arg-type]


def hold(config_path: Path, statement: str = "DROP TABLE public.orders", *, requester: Principal = AGENT,
         max_window_ms: int = HOUR_MS, scope: Sequence[tuple[str, str]] | None = None,
         **extra: Any) -> ApprovalRequest:
    """Create a held request in the config's store, as a gateway would (another broker, same store).

    Each gets a scope of its own unless one is given, so a window granted in one test covers nothing else.
    """
    if scope is None:
        scope = ((f"public.t{next(_scopes)}", "ddl"),)
    async def go() -> ApprovalRequest:
        broker = ApprovalBroker(store_for(config_path))
        await broker.start(background=False)
        try:
            return await broker.request(
                requester=requester, target="main", role=None, statement=statement, parameters=(),
                policy_version="v-test", reasons=[("approval_required", "DDL waits for a DBA")],
                lint_findings=[{"rule": "drop-table", "level": "warning", "message": "drops <data>"}],
                channel="mcp", requirement=requirement(max_window_ms), scope=scope, **extra)
        finally:
            await broker.close()

    return run_async(go)


def get_request(config_path: Path, request_id: str) -> ApprovalRequest:
    async def go() -> ApprovalRequest:
        broker = ApprovalBroker(store_for(config_path))
        await broker.start(background=False)
        try:
            return await broker.get(request_id)
        finally:
            await broker.close()

    return run_async(go)


class ServerThread:
    """A real uvicorn server on 127.0.0.1 (free port) serving :func:`build_app` over a started Runtime."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            runtime = await Runtime.start(load_config(self.config_path), load_catalogs=False)
            try:
                self.runtime = runtime
                config = uvicorn.Config(build_app(runtime), log_level="warning", lifespan="off")
                self.server = uvicorn.Server(config)
                task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
                while not self.server.started and not task.done():
                    await asyncio.sleep(0.01)
                self._ready.set()
                await task
            finally:
                await runtime.close()

        try:
            asyncio.run(serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the console server did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", *, token: str | None = None, body: Any = None,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())


SAMPLE_COLUMNS = ["id", "email", "card_number"]
SAMPLE_ROWS = [["1", "a***@example.org", "************1111"], ["2", None, "<b>************4242</b>"]]


def write_journal(journal_dir: Path, *, subject: str = "agent-7", groups: Sequence[str] = ("ai-agents",),
                  target: str = "main") -> str:
    """A session written by a real AuditRecorder: an allowed read with a masked sample, a held DDL that was
    approved, and a denied statement. Returns the session id."""
    from pgwarden.audit import AuditRecorder, AuditSettings, result_digest, schema

    recorder = AuditRecorder(AuditSettings(journal_dir=journal_dir, checkpoint_every=2))
    try:
        session = recorder.start_session(subject, list(groups), "mcp", target, client_address="127.0.0.1",
                                         auth_method="jwt")
        text = "SELECT id, email, card_number FROM customers -- <script>alert(1)</script>"
        with recorder.statement(session, text) as st:
            st.decided({schema.DECISION: "allow", schema.RULE: "ai-agents", schema.POLICY_VERSION: "v1",
                        schema.REASONS: ["masked: card_number is masked for ai-agents"],
                        schema.MASKED_COLUMNS: ["public.customers.card_number"],
                        schema.DB_OPERATION_NAME: "SELECT", schema.DB_COLLECTION_NAME: "public.customers"})
            st.result(SAMPLE_COLUMNS, SAMPLE_ROWS, len(SAMPLE_ROWS), result_digest(SAMPLE_COLUMNS, SAMPLE_ROWS))
        with recorder.statement(session, "ALTER TABLE orders ADD COLUMN note text") as st:
            st.decided({schema.DECISION: "needs_approval", schema.RULE: "ai-agents",
                        schema.REASONS: ["approval_required: DDL waits for a DBA"]})
            st.approval_requested("apr_journal1", ["dba"])
            st.approval_decided("apr_journal1", "alice", "approved", 4200.0)
        with recorder.statement(session, "SELECT * FROM secrets") as st:
            st.decided({schema.DECISION: "deny", schema.RULE: "ai-agents",
                        schema.REASONS: ["table_denied: public.secrets is not allowed"]})
            st.error("42501", "public.secrets is not allowed")
        session.end()
        return session.id
    finally:
        recorder.close()
