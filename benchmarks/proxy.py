"""Wire proxy speed: pgbench -S directly, through PgBouncer (session mode), through a bare Python byte relay
on uvloop (benchmarks/bare_relay.py: the floor of any Python proxy here) and through pgwarden (policy and
audit journal on), then a 1,000,000-row result streamed directly and through pgwarden, with and without
masked columns.

    .venv/bin/python benchmarks/proxy.py [--dsn postgresql://postgres@127.0.0.1:55432/postgres] [--seconds 15]

Prints TPS, mean latency and ratios; rows/s, the ratio and the proxy's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import psycopg
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parents[1]
PGBENCH = shutil.which("pgbench") or "/usr/bin/pgbench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def pgbench(host: str, port: int, user: str, db: str, clients: int, mode: str, seconds: int,
            password: str | None = None) -> tuple[float, float]:
    env = {**os.environ, "PGSSLMODE": "disable"}
    if password:
        env["PGPASSWORD"] = password
    out = subprocess.run([PGBENCH, "-h", host, "-p", str(port), "-U", user, "-S", "-n", "-T", str(seconds),
                          "-c", str(clients), "-j", str(min(clients, 2)), "-M", mode, db], capture_output=True,
                         text=True, env=env, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))
    return tps, lat


def start_pgbouncer(work: Path, host: str, port: int, db: str, user: str) -> tuple[subprocess.Popen, int] | None:
    exe = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if exe is None:
        return None
    listen = free_port()
    (work / "users.txt").write_text(f'"{user}" ""\n')
    ini = work / "pgbouncer.ini"
    ini.write_text(f"""[databases]
{db} = host={host} port={port} dbname={db} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
auth_type = trust
auth_file = {work / 'users.txt'}
pool_mode = session
max_client_conn = 100
default_pool_size = 20
unix_socket_dir =
""")
    os.chmod(work.parent, 0o755)  # mkdtemp makes 0700: pgbouncer runs as nobody
    os.chmod(work, 0o755)
    for f in work.iterdir():
        os.chmod(f, 0o644)
    cmd = [exe, str(ini)]
    if os.geteuid() == 0:
        cmd = [exe, "-u", "nobody", str(ini)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(listen)
    return proc, listen


def start_pgwarden(work: Path, dsn: str, *, masked: bool, digest: bool,
                   journal: bool = True) -> tuple[subprocess.Popen, int, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))
    port = free_port()
    config = {
        "version": 1,
        "targets": {"main": {"dsn": dsn, "search_path": ["public"]}},
        "identity": {"issuer": "https://bench", "audience": "pgwarden", "public_key_file": str(work / "pub.pem"),
                     "algorithms": ["ES256"]},
        "rules": [{"name": "bench", "match": {"groups": ["bench"]}, "target": "main",
                   "statements": {"allow": ["read"]}, "schemas": {"allow": ["public"]},
                   # the streaming run reads 10⁶ rows through the proxy, for longer than the default timeout
                   "max_rows": None, "statement_timeout": 600_000}],
        "masking": {"columns": [{"column": "public.stream_rows.card", "strategy": "keep_last", "keep": 4}]
                    if masked else []},
        "audit": {"journal_dir": str(work / "journal"), "fsync": "batch", "journal_enabled": journal},
        "approvals": {"store": {"sqlite": {"path": str(work / "a.db")}}},
        "proxy": {"listen": f"127.0.0.1:{port}"},
    }
    (work / "pgwarden.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "pgwarden.cli", "proxy", "--config", str(work / "pgwarden.yaml"), "--uvloop"]
    if not digest:
        cmd.append("--no-digest")
    with open(work / "proxy.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port)
    now = int(time.time())
    token = jwt.encode({"iss": "https://bench", "aud": "pgwarden", "sub": "bench", "groups": ["bench"],
                        "iat": now, "exp": now + 3600}, key, algorithm="ES256")
    return proc, port, token


def start_bare_relay(host: str, port: int) -> tuple[subprocess.Popen, int]:
    listen = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "bare_relay.py"), str(listen), host,
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(listen)
    return proc, listen


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream(conninfo: str, sql: str) -> float:
    with psycopg.connect(conninfo) as conn:
        started = time.perf_counter()
        rows = 0
        with conn.cursor() as cur:
            cur.execute(sql)
            while batch := cur.fetchmany(10_000):
                rows += len(batch)
        return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:55432/postgres")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-digest", action="store_true", help="pgwarden without whole-result digests")
    parser.add_argument("--no-journal", action="store_true", help="pgwarden with audit.journal_enabled: false")
    args = parser.parse_args()
    info = conninfo_to_dict(args.dsn)
    host, port, user = info.get("host", "127.0.0.1"), int(info.get("port", 5432)), info.get("user", "postgres")
    db = "pgwarden_bench"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {db}")
    bench_dsn = make_conninfo(args.dsn, dbname=db)
    subprocess.run([PGBENCH, "-h", host, "-p", str(port), "-U", user, "-i", "-q", "-s", str(args.scale), db],
                   check=True, capture_output=True)
    with psycopg.connect(bench_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE stream_rows AS SELECT g AS id, 'row ' || g AS label, "
                     f"lpad(g::text, 16, '4') AS card FROM generate_series(1, {args.rows}) g")
    work = Path(tempfile.mkdtemp(prefix="pgwarden-bench-"))
    procs = []
    try:
        (work / "b").mkdir()
        bouncer = start_pgbouncer(work / "b", host, port, db, user)
        if bouncer is not None:
            procs.append(bouncer[0])
        else:
            print("PgBouncer is not installed: its column is skipped")
        bare, bare_port = start_bare_relay(host, port)
        procs.append(bare)
        pw, pw_port, token = start_pgwarden(work, bench_dsn, masked=True, digest=not args.no_digest,
                                            journal=not args.no_journal)
        procs.append(pw)
        print(f"pgbench -S, scale {args.scale}, {args.seconds} s each (pgwarden: policy + audit journal "
              f"{'off' if args.no_journal else 'on'}, "
              f"digest {'off' if args.no_digest else 'on'}, uvloop)")
        print(f"{'mode':<9} {'-c':>3} {'direct tps':>11} {'bouncer tps':>12} {'bare tps':>9} {'pgwarden tps':>13} "
              f"{'pgw/bouncer':>12} {'pgw/bare':>9} {'pgw/direct':>11} {'lat direct ms':>14} {'lat pgw ms':>11} "
              f"{'added µs':>9} {'bare added':>11}")
        for mode in ("simple", "prepared"):
            for clients in (1, 8):
                d_tps, d_lat = pgbench(host, port, user, db, clients, mode, args.seconds)
                b_tps = float("nan")
                if bouncer is not None:
                    b_tps, _ = pgbench("127.0.0.1", bouncer[1], user, db, clients, mode, args.seconds)
                r_tps, r_lat = pgbench("127.0.0.1", bare_port, user, db, clients, mode, args.seconds)
                w_tps, w_lat = pgbench("127.0.0.1", pw_port, "bench", "main", clients, mode, args.seconds, token)
                print(f"{mode:<9} {clients:>3} {d_tps:>11.0f} {b_tps:>12.0f} {r_tps:>9.0f} {w_tps:>13.0f} "
                      f"{w_tps / b_tps:>12.2f} {w_tps / r_tps:>9.2f} {w_tps / d_tps:>11.2f} {d_lat:>14.3f} "
                      f"{w_lat:>11.3f} {(w_lat - d_lat) * 1000:>9.0f} {(r_lat - d_lat) * 1000:>11.0f}", flush=True)
        through = make_conninfo(f"host=127.0.0.1 port={pw_port} dbname=main user=bench sslmode=disable",
                                password=token)
        print(f"\nstreaming {args.rows:,} rows (psycopg, text, fetchmany 10k)")
        for label, sql in (("unmasked", "SELECT id, label FROM stream_rows"),
                           ("masked", "SELECT id, label, card FROM stream_rows")):
            direct = stream(bench_dsn, sql)
            proxied = stream(through, sql)
            print(f"{label:<9} direct {direct:>10.0f} rows/s   pgwarden {proxied:>10.0f} rows/s   "
                  f"ratio {proxied / direct:.2f}   proxy peak RSS {peak_rss_mb(pw.pid):.0f} MB", flush=True)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
