"""Round trip of an MCP ``query`` call: pgwarden (stdio, HTTP) against peers, same database, same run.

Three queries — ``SELECT 1``, a one-row primary-key lookup, a 100-row result — each called N times
through the SDK's own client; median and p95 in milliseconds, the ratio to the fastest peer, and
each server's resident memory (VmRSS) after the run. Peers are installed from npm into a temporary
directory when npm works here (``@modelcontextprotocol/server-postgres``, ``@bytebase/dbhub``);
a peer that does not install is reported and skipped.

    PGWARDEN_TEST_DSN=postgresql://postgres@127.0.0.1:55432/postgres .venv/bin/python benchmarks/mcp_latency.py --quick
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import jwt
import psycopg
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
QUERIES = {"select_1": "SELECT 1", "pk_lookup": "SELECT id, v FROM bench WHERE id = 42",
           "rows_100": "SELECT id, v FROM bench ORDER BY id LIMIT 100"}


def setup_db(admin_dsn: str) -> str:
    name = "pgw_mcp_bench"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    dsn = make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO bench SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        conn.execute("ANALYZE bench")
    return dsn


def dsn_url(dsn: str) -> str:
    d = conninfo_to_dict(dsn)
    user = d.get("user", "postgres")
    pw = f":{d['password']}" if d.get("password") else ""
    return f"postgresql://{user}{pw}@{d.get('host', '127.0.0.1')}:{d.get('port', 5432)}/{d['dbname']}"


def pgwarden_config(directory: Path, dsn: str) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    (directory / "issuer.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    config = {"version": 1, "targets": {"main": {"dsn": dsn, "search_path": ["public"]}},
              "identity": {"issuer": "https://id.bench", "audience": "pgwarden", "public_key_file": "issuer.pem",
                           "algorithms": ["EdDSA"]},
              "rules": [{"name": "bench", "match": {"groups": ["bench"]}, "target": "main",
                         "statements": {"allow": ["read"]}, "schemas": {"allow": ["public"]}}],
              "masking": {"columns": [{"column": "public.bench.v", "strategy": "keep_last", "keep": 4}]},
              "approvals": {"store": {"sqlite": {"path": "approvals.db"}}},
              "audit": {"journal_dir": "journal", "fsync": "batch"}}
    path = directory / "pgwarden.yaml"
    path.write_text(yaml.safe_dump(config))
    now = int(time.time())
    token = jwt.encode({"iss": "https://id.bench", "aud": "pgwarden", "sub": "bench-agent", "groups": ["bench"],
                        "iat": now, "exp": now + 7200}, key, algorithm="EdDSA")
    return path, token


def children() -> set[int]:
    out = set()
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                out.add(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    found, frontier = [pid], [pid]
    while frontier:
        parent = str(frontier.pop())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == parent:
                        found.append(int(entry.name))
                        frontier.append(int(entry.name))
                except OSError:
                    continue
    return found


def rss_mb(pid: int) -> float:
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen")


async def measure(client: Client, tool: str, arg: str, sql: str, n: int) -> list[float]:
    for _ in range(max(3, n // 10)):
        result = await client.call_tool(tool, {arg: sql})
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.call_tool(tool, {arg: sql})
        times.append((time.perf_counter() - t0) * 1000)
    return times


@asynccontextmanager
async def stdio(command: str, args: list[str], env: dict[str, str], cwd: str | None = None):
    before = children()
    async with Client(StdioServerParameters(command=command, args=args, env=env, cwd=cwd)) as client:
        pid = next(iter(children() - before), None)
        yield client, pid


@asynccontextmanager
async def http(url: str, token: str | None, pid: int):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (httpx2.AsyncClient(headers=headers, timeout=60) as h,
                Client(streamable_http_client(url, http_client=h)) as client):
        yield client, pid


def npm_install(directory: Path, package: str) -> Path | None:
    try:
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(directory), package],
                       check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"  {package}: not installed ({type(exc).__name__})", file=sys.stderr)
        return None
    return directory / "node_modules"


async def main(args: argparse.Namespace) -> None:
    admin = args.dsn or os.environ.get("PGWARDEN_TEST_DSN") or "postgresql://postgres@127.0.0.1:55432/postgres"
    dsn = setup_db(admin)
    n = 30 if args.quick else args.n
    work = Path(tempfile.mkdtemp(prefix="pgw-mcp-bench-"))
    config, token = pgwarden_config(work, dsn)
    base_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(REPO / "src")}
    results: dict[str, dict[str, list[float]]] = {}
    rss: dict[str, float] = {}

    async def bench(name: str, connect, tool: str, arg: str) -> None:
        try:
            async with connect as (client, pid):
                results[name] = {q: await measure(client, tool, arg, sql, n) for q, sql in QUERIES.items()}
                if pid:
                    rss[name] = rss_mb(pid)
        except Exception as exc:
            print(f"  {name}: failed: {exc!r}"[:300], file=sys.stderr)

    await bench("pgwarden stdio", stdio(PYTHON, ["-m", "pgwarden.cli", "mcp", "--config", str(config)],
                                         {**base_env, "PGWARDEN_TOKEN": token}, str(work)), "query", "sql")
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "pgwarden.cli", "serve", "--config", str(config), "--listen",
                             f"127.0.0.1:{port}"], env={**base_env, "PGWARDEN_LOG_LEVEL": "WARNING"}, cwd=work,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        await bench("pgwarden http", http(f"http://127.0.0.1:{port}/mcp", token, proc.pid), "query", "sql")
    finally:
        proc.terminate()
        proc.wait(10)

    if not args.no_peers:
        url = dsn_url(dsn)
        modules = npm_install(work / "peers", "@modelcontextprotocol/server-postgres")
        if modules:
            entry = modules / "@modelcontextprotocol" / "server-postgres" / "dist" / "index.js"
            await bench("server-postgres stdio", stdio("node", [str(entry), url], base_env), "query", "sql")
        modules = npm_install(work / "dbhub", "@bytebase/dbhub")
        if modules:
            entry = modules / "@bytebase" / "dbhub" / "dist" / "index.js"
            await bench("dbhub stdio", stdio("node", [str(entry), "--transport", "stdio", "--dsn", url + "?sslmode=disable"],
                                             base_env), "execute_sql", "sql")
            port = free_port()
            proc = subprocess.Popen(["node", str(entry), "--transport", "http", "--port", str(port), "--dsn",
                                     url + "?sslmode=disable"], env=base_env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                wait_port(port, proc)
                await bench("dbhub http", http(f"http://127.0.0.1:{port}/mcp", None, proc.pid), "execute_sql", "sql")
            except RuntimeError as exc:
                print(f"  dbhub http: {exc}", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(10)

    print(f"\nMCP query round trip, ms (n={n} per cell; median / p95); server RSS after the run")
    header = f"{'server':<24}" + "".join(f"{q:>22}" for q in QUERIES) + f"{'RSS MB':>10}"
    print(header)
    medians: dict[str, dict[str, float]] = {}
    for name, per in results.items():
        cells = ""
        medians[name] = {}
        for q in QUERIES:
            times = sorted(per[q])
            med = statistics.median(times)
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            medians[name][q] = med
            cells += f"{med:>11.2f} / {p95:>7.2f}"
        print(f"{name:<24}{cells}{rss.get(name, float('nan')):>10.1f}")
    peers = [p for p in medians if not p.startswith("pgwarden")]
    if peers:
        print("\nratio pgwarden / fastest peer (median; < 1 is faster)")
        for name in (p for p in medians if p.startswith("pgwarden")):
            parts = []
            for q in QUERIES:
                fastest = min(peers, key=lambda p: medians[p][q])
                parts.append(f"{q}: {medians[name][q] / medians[fastest][q]:.2f}x vs {fastest}")
            print(f"  {name}: " + "; ".join(parts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="superuser DSN (default: $PGWARDEN_TEST_DSN)")
    parser.add_argument("-n", type=int, default=200, help="calls per query and server")
    parser.add_argument("--quick", action="store_true", help="30 calls per cell")
    parser.add_argument("--no-peers", action="store_true", help="measure pgwarden only")
    anyio.run(main, parser.parse_args())
