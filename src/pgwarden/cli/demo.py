"""``pgwarden demo``: the whole story on embedded defaults, in one process.

It starts an embedded PostgreSQL (the test suite's own, ``pgwarden.devtools.embedded``) seeded with
a demo schema — customers with card numbers, e-mails and SSNs, orders, a secrets table — writes a
demo policy (``ai-agents`` read with masking and their DDL waits for ``dba``; ``dba`` may do more),
sets up the local development token issuer, and runs the wire proxy, the MCP HTTP server and the
console together over one engine. It prints the psql command line with a minted token, the MCP
client configuration (stdio and HTTP), the console URL and a DBA token to sign in with, then logs
one line per statement (principal, verdict, masks, time) until Ctrl-C, which stops everything.

Everything lives in the state folder (``.demo`` by default). Each start drops and recreates the demo
database, the approval store and the journal, so a second ``make demo`` starts again cleanly; the
PostgreSQL cluster itself is reused (initdb runs once) and stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psycopg
import yaml
from opentelemetry.sdk.trace import SpanProcessor

from . import exits

DEMO_DB = "demo"
AGENT = "nightly-migration-agent"
AGENT_LOGIN = "pgwarden_agent"

SCHEMA = f"""
CREATE TABLE customers (id int PRIMARY KEY, full_name text NOT NULL, email text, card_number text, ssn text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(10,2),
                     placed_at date, note text);
CREATE TABLE secrets (id int PRIMARY KEY, name text, api_key text);
INSERT INTO customers VALUES
  (1, 'Ada Lovelace', 'ada@example.org', '4111111111111111', '078-05-1120'),
  (2, 'Grace Hopper', 'grace@navy.example', '5500005555555559', '219-09-9999'),
  (3, 'Edsger Dijkstra', 'ewd@example.nl', '340000000000009', '457-55-5462'),
  (4, 'Barbara Liskov', 'liskov@mit.example', '6011000000000004', '123-45-6789');
INSERT INTO orders
  SELECT g, 1 + g % 4, (g * 7.5)::numeric(10,2), DATE '2026-11-01' + g % 30, 'order ' || g
  FROM generate_series(1, 40) g;
INSERT INTO secrets VALUES (1, 'payments', 'sk_live_DEMO0000000000000000');
ANALYZE;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{AGENT_LOGIN}') THEN
    CREATE ROLE {AGENT_LOGIN} LOGIN;
  END IF;
END $$;
GRANT USAGE, CREATE ON SCHEMA public TO {AGENT_LOGIN};
GRANT SELECT ON customers TO {AGENT_LOGIN};
-- The migration agent's own role owns the table its migrations change; it only reads customers.
ALTER TABLE orders OWNER TO {AGENT_LOGIN};
"""


def policy(dsn: str, jwks: Path, proxy_port: int, http_port: int) -> dict:
    """The demo's pgwarden.yaml."""
    return {
        "version": 1,
        "targets": {"main": {"dsn": dsn, "search_path": ["public"],
                             "description": "the demo shop: customers, orders, secrets"}},
        "identity": {"issuer": "https://pgwarden-dev-issuer.invalid", "audience": "pgwarden", "jwks_file": str(jwks),
                     "algorithms": ["EdDSA"]},
        "rules": [
            {"name": "ai-agents", "match": {"groups": ["ai-agents"]}, "target": "main",
             "upstream_login": {"user": AGENT_LOGIN},
             "statements": {"allow": ["read"]},
             "approval": {"required_for": ["ddl"], "approvers": ["dba"], "timeout": "15min", "window": "1h"},
             "schemas": {"allow": ["public"]}, "tables": {"allow": ["*"], "deny": ["public.secrets"]},
             "max_rows": 200, "statement_timeout": "30s"},
            {"name": "dba", "match": {"groups": ["dba"]}, "target": "main",
             "statements": {"allow": ["read", "write", "ddl", "transaction"]},
             "schemas": {"allow": ["*"]}, "max_rows": 10000, "statement_timeout": "5min"},
        ],
        "masking": {"columns": [
            {"column": "public.customers.card_number", "strategy": "keep_last", "keep": 4, "unless_groups": ["dba"]},
            {"column": "public.customers.ssn", "strategy": "redact", "unless_groups": ["dba"]},
            {"column": "public.customers.email", "strategy": "hash", "key": {"file": "mask.key"},
             "unless_groups": ["dba"]},
        ]},
        "approvals": {"store": {"sqlite": {"path": "approvals.db"}},
                      "console_url": f"http://127.0.0.1:{http_port}/console"},
        "audit": {"journal_dir": "journal"},
        "proxy": {"listen": f"127.0.0.1:{proxy_port}"},
        "serve": {"listen": f"127.0.0.1:{http_port}"},
    }


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free TCP port on 127.0.0.1")


@dataclass
class DemoStack:
    """A running demo: where everything is, and the tokens to reach it."""

    state: Path
    config_path: Path
    proxy: tuple[str, int]
    http: str
    agent_token: str
    dba_token: str
    pg_dsn: str
    _closers: list = field(default_factory=list, repr=False)

    def psql_command(self) -> str:
        host, port = self.proxy
        return (f"PGPASSWORD=$(cat {self.state}/agent.token) psql "
                f"'host={host} port={port} dbname=main user={AGENT} sslmode=disable'")

    def mcp_config(self, pgwarden: str) -> dict:
        return {"mcpServers": {
            "pgwarden": {"command": pgwarden, "args": ["mcp", "--config", str(self.config_path)],
                         "env": {"PGWARDEN_TOKEN": self.agent_token}},
            "pgwarden-http": {"type": "http", "url": f"{self.http}/mcp",
                              "headers": {"Authorization": f"Bearer {self.agent_token}"}},
        }}


def prepare(state: Path, *, proxy_port: int = 6432, http_port: int = 8080) -> tuple[Path, str, str, str]:
    """Start PostgreSQL, seed the demo database, write the policy and keys. Returns (config, dsn, agent, dba)."""
    from pgwarden.devtools.embedded import start_embedded
    from pgwarden.engine.dev_issuer import DevIssuer

    state.mkdir(parents=True, exist_ok=True)
    for stale in ("approvals.db", "approvals.db-wal", "approvals.db-shm", "journal"):
        path = state / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    server = start_embedded(state / "pg", tcp_port=0)
    admin = server.tcp_dsn()
    assert admin is not None
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DEMO_DB} TEMPLATE template0")
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=DEMO_DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
    issuer = DevIssuer.init(state / "issuer")
    key = state / "mask.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32) + "\n")
        key.chmod(0o600)
    config = state / "pgwarden.yaml"
    data = policy(dsn, issuer.jwks_file, _free_port(proxy_port), _free_port(http_port))
    config.write_text("# pgwarden demo policy — DEVELOPMENT ONLY (a local token issuer, a trust-auth database)\n"
                      + yaml.safe_dump(data, sort_keys=False))
    agent = issuer.mint(AGENT, ["ai-agents"], ttl_s=8 * 3600)
    dba = issuer.mint("dana", ["dba"], ttl_s=8 * 3600)
    for name, token in (("agent.token", agent), ("dba.token", dba)):
        path = state / name
        path.write_text(token + "\n")
        path.chmod(0o600)
    return config, dsn, agent, dba


class StatementLog(SpanProcessor):
    """A span processor printing one line per statement as it ends: principal, verdict, masks, time."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream

    def on_end(self, span) -> None:
        from pgwarden.audit import schema

        a = span.attributes or {}
        if a.get(schema.RECORD) != schema.RECORD_STATEMENT:
            return
        ms = (span.end_time - span.start_time) / 1e6 if span.end_time and span.start_time else 0.0
        text = " ".join(str(a.get(schema.DB_QUERY_TEXT, "")).split())
        if len(text) > 70:
            text = text[:67] + "..."
        masks = ",".join(m.rsplit(".", 1)[-1] for m in a.get(schema.MASKED_COLUMNS, ()) or ())
        decision = str(a.get(schema.DECISION, "?"))
        for event in span.events or ():
            if event.name == schema.EVENT_APPROVAL_DECIDED:
                ev = event.attributes or {}
                decision = f"{ev.get(schema.APPROVAL_DECISION, 'decided')} by {ev.get(schema.APPROVER, '?')}"
        codes = ",".join(a.get(schema.REASON_CODES, ()) or ())
        line = (f"{time.strftime('%H:%M:%S')} {a.get(schema.CHANNEL, '?'):<4} {a.get(schema.ENDUSER_ID, '?'):<24} "
                f"{decision:<14} {ms:7.1f} ms  {text}"
                + (f"  masks={masks}" if masks else "") + (f"  [{codes}]" if codes and decision != "allow" else ""))
        print(line, file=self.stream, flush=True)


@contextlib.asynccontextmanager
async def running(state: Path, *, proxy_port: int = 6432, http_port: int = 8080,
                  log: StatementLog | None = None) -> AsyncIterator[DemoStack]:
    """The demo stack, up: the wire proxy, the MCP HTTP server and the console over one engine."""
    import uvicorn

    from pgwarden.audit import ensure_tracer_provider
    from pgwarden.console import console_routes
    from pgwarden.devtools.embedded import stop_embedded
    from pgwarden.engine.config import load_config
    from pgwarden.engine.runtime import Runtime
    from pgwarden.mcp_server import build_http_app
    from pgwarden.wire_proxy.server import ProxyServer

    ensure_tracer_provider()  # the SDK's tools/call spans get real ids: statements become their children

    config_path, dsn, agent, dba = await anyio.to_thread.run_sync(
        lambda: prepare(state, proxy_port=proxy_port, http_port=http_port))
    config = load_config(config_path)
    runtime = await Runtime.start(config, span_processors=[log] if log is not None else [])
    proxy = ProxyServer(runtime)
    await proxy.start()
    listen = str(config.serve.listen)
    host, _, port = listen.rpartition(":")
    app = build_http_app(runtime, extra_routes=console_routes(runtime), listen=listen)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # the demo's own handler stops everything in order
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.05)
        stack = DemoStack(state, config_path, proxy.address, f"http://{listen}", agent, dba, dsn)
        try:
            yield stack
        finally:
            server.should_exit = True
            await proxy.close()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0)  # let uvicorn see should_exit
    await runtime.close()
    await anyio.to_thread.run_sync(lambda: stop_embedded(state / "pg"))


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "run the whole story locally: embedded PostgreSQL, wire proxy, MCP over HTTP, console"
    parser = subparsers.add_parser("demo", help=help_text, description=__doc__.split("\n\n")[1],
                                   epilog=exits.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", default=".demo", help="state folder (default: .demo)")
    parser.add_argument("--proxy-port", type=int, default=6432, help="wire proxy port (a free one if taken)")
    parser.add_argument("--http-port", type=int, default=8080, help="HTTP port for MCP and the console")
    parser.add_argument("--ready-file", default=None, help="write the stack's addresses and tokens here as JSON "
                        "once it is up (for scripts and tests)")
    parser.set_defaults(handler=run)


def _banner(stack: DemoStack, started: float) -> str:
    pgwarden = shutil.which("pgwarden") or str(Path(sys.executable).with_name("pgwarden"))
    cfg = json.dumps(stack.mcp_config(pgwarden), indent=2)
    return f"""
pgwarden demo is up ({time.monotonic() - started:.1f} s) — DEVELOPMENT ONLY: local token issuer, trust-auth database.

Connect as the nightly migration agent (it holds no database password: the token is its identity):
  {stack.psql_command()}
  try:  SELECT * FROM customers;          -- card numbers, e-mails and SSNs arrive masked
        CREATE INDEX ON orders (placed_at); -- held until a DBA approves (watch the NOTICE)
        SELECT * FROM secrets;            -- refused, with the reason

Approve as the DBA (CLI):
  PGWARDEN_TOKEN=$(cat {stack.state}/dba.token) {pgwarden} approvals list --config {stack.config_path}
  PGWARDEN_TOKEN=$(cat {stack.state}/dba.token) {pgwarden} approvals approve ID --config {stack.config_path}
…or in the console: {stack.http}/console   (sign in with the token in {stack.state}/dba.token)

MCP client configuration (Claude Code .mcp.json; stdio and HTTP; the token is {stack.state}/agent.token):
{cfg}

The security team's view afterwards:
  {pgwarden} audit sessions --config {stack.config_path}
  {pgwarden} audit verify --config {stack.config_path}

One line per statement follows. Ctrl-C stops everything.
"""


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("PGWARDEN_LOG_LEVEL", "WARNING"))
    started = time.monotonic()
    state = Path(args.state).resolve()

    async def main() -> int:
        stop = anyio.Event()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with running(state, proxy_port=args.proxy_port, http_port=args.http_port,
                               log=StatementLog()) as stack:
                print(_banner(stack, started), flush=True)
                if args.ready_file:
                    Path(args.ready_file).write_text(json.dumps({
                        "proxy_host": stack.proxy[0], "proxy_port": stack.proxy[1], "http": stack.http,
                        "agent_token": stack.agent_token, "dba_token": stack.dba_token,
                        "config": str(stack.config_path), "seconds_to_ready": time.monotonic() - started}))

                async def wait_signal() -> None:
                    async for _ in signals:
                        stop.set()
                        return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait_signal)
                    await stop.wait()
                    tg.cancel_scope.cancel()
                print("\nstopping…", flush=True)
        print("pgwarden demo stopped; state kept in", state, flush=True)
        return exits.OK

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        return exits.OK


__all__: Sequence[str] = ["DemoStack", "prepare", "register", "running"]
