"""The MCP door under test: a real database, keys, a configuration, and the SDK's own client.

Principals: ``agent`` (group ai-agents: read-only, DDL needs a dba), ``dev`` (group developers: reads
and writes, DDL and destructive statements approvable by ``self`` or a dba), ``dana`` (dba).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from mcp_helpers import MASK_KEY, PYTHON, Env, write_config

from support.cases import load_public_cases


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", MASK_KEY)


@pytest.fixture(scope="module")
def env(make_db_module, tmp_path_factory) -> Env:
    dsn = make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")
    directory = tmp_path_factory.mktemp("mcp")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Env(directory, write_config(directory, dsn, pem), dsn, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_server(env: Env) -> Iterator[str]:
    """A real ``pgwarden serve`` subprocess; yields the MCP URL."""
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "pgwarden.cli", "serve", "--config", str(env.config), "--listen",
                             f"127.0.0.1:{port}"], env=env.server_env(), stderr=subprocess.PIPE, cwd=env.dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("pgwarden serve exited: " + proc.stderr.read().decode()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("pgwarden serve did not listen")
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
