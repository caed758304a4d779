"""Shared by the MCP tests: keys, tokens, the configuration, and the SDK's own clients."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
ISSUER = "https://id.example.test"
AUDIENCE = "pgwarden"
MASK_KEY = "test-mask-key-0123456789"


@dataclass
class Env:
    dir: Path
    config: Path
    dsn: str
    key: ed25519.Ed25519PrivateKey

    def token(self, sub: str, groups: list[str], *, aud: str = AUDIENCE, exp_in: int = 3600,
              key: ed25519.Ed25519PrivateKey | None = None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": aud, "sub": sub, "groups": groups, "iat": now, "exp": now + exp_in}
        return jwt.encode(claims, key or self.key, algorithm="EdDSA")

    def server_env(self, token: str | None = None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", ""), "PGWARDEN_MASK_KEY": MASK_KEY, "PYTHONPATH": str(REPO / "src"),
               "HOME": os.environ.get("HOME", "/tmp")}
        if token is not None:
            env["PGWARDEN_TOKEN"] = token
        return env


def write_config(directory: Path, dsn: str, public_pem: bytes) -> Path:
    data = yaml.safe_load((REPO / "examples" / "public_cases.yaml").read_text())
    data["targets"]["main"]["dsn"] = dsn
    data["targets"]["main"].pop("password", None)
    (directory / "issuer.pem").write_bytes(public_pem)
    data["identity"] = {"issuer": ISSUER, "audience": AUDIENCE, "public_key_file": "issuer.pem",
                        "algorithms": ["EdDSA"]}
    dev = {"name": "developers", "match": {"groups": ["developers"]}, "target": "main",
           "statements": {"allow": ["read", "write"]},
           "approval": {"required_for": ["ddl", "destructive"], "approvers": ["self", "dba"]},
           "schemas": {"allow": ["public"]}, "tables": {"allow": ["*"], "deny": ["public.secrets"]}}
    data["rules"].insert(1, dev)
    data["approvals"] = {"store": {"sqlite": {"path": "approvals.db"}}, "poll_interval": 100}
    data["audit"] = {"journal_dir": "journal", "fsync": "batch"}
    path = directory / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(data))
    return path



@asynccontextmanager
async def stdio_client(env: Env, token: str, **kwargs: Any):
    params = StdioServerParameters(command=PYTHON, args=["-m", "pgwarden.cli", "mcp", "--config", str(env.config)],
                                   env=env.server_env(token), cwd=str(env.dir))
    async with Client(params, **kwargs) as client:
        yield client


@asynccontextmanager
async def http_client(url: str, token: str | None, **kwargs: Any):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http,
                Client(streamable_http_client(url, http_client=http), **kwargs) as client):
        yield client


def payload(result: CallToolResult) -> dict[str, Any]:
    """The tool's JSON (structured content, else the text), error or not."""
    if result.structured_content is not None and not result.is_error:
        return result.structured_content
    text = "".join(getattr(c, "text", "") for c in result.content)
    try:
        return json.loads(text[text.index("{"):] if "{" in text else text)
    except ValueError:
        return {"error": "text", "message": text}


def everything(result: CallToolResult) -> str:
    """Every byte the client received in a tool result (for sentinel checks)."""
    return result.model_dump_json()


SENTINELS = ("4111111111111111", "5500005555555559", "078-05-1120", "219-09-9999", "zed.sentinel@example.org",
             "sk_live_SENTINEL123", "DE89370400440532013000")


async def dba_broker(env: Env):
    """The approval broker on the gateway's store, as the approvals CLI or console would open it."""
    from pgwarden.engine.approvals import build_broker
    from pgwarden.engine.config import load_config

    config = load_config(env.config)
    broker = build_broker(config.approvals, env.dir)
    await broker.start(background=False)
    return broker


def journal_records(env: Env) -> list[dict[str, Any]]:
    out = []
    for path in sorted((env.dir / "journal").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def db_state(dsn: str) -> tuple:
    import psycopg

    with psycopg.connect(dsn) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'billing')").fetchone()[0]
        secrets = conn.execute("SELECT count(*) FROM secrets").fetchone()[0]
    return orders, tables, secrets
