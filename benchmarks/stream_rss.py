"""Peak RSS of the engine session reading a 10^6-row table under ``max_rows: 1000``.

The session streams rows in chunks (libpq's chunked-rows mode) and stops the server once the
row limit is reached, so it never holds more than the rows it returns plus one chunk. Each
measurement runs in a fresh subprocess; its peak RSS (``ru_maxrss``) is compared with the same
subprocess doing everything but the query (the baseline: interpreter, imports, gateway, pool).
A third run fetches the whole table with psycopg's default cursor (``fetchall``), the way the
engine used to before it streamed, for scale.

Run: ``PGWARDEN_BENCH_DSN=postgresql://postgres@127.0.0.1:55432/postgres .venv/bin/python
benchmarks/stream_rss.py [--rows N]``. It creates (and drops) a database of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid

import psycopg

CHILD = r"""
import json, resource, sys, time, anyio, psycopg, yaml
from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.principal import Principal
from pgwarden.engine.session import Session
dsn, mode = sys.argv[1], sys.argv[2]
cfg = {"version": 1, "targets": {"main": {"dsn": dsn}},
       "rules": [{"name": "agents", "match": {"groups": ["agents"]}, "target": "main", "max_rows": 1000,
                  "statement_timeout": "600s"}]}
gw = Gateway(parse_config(yaml.safe_dump(cfg), "bench"))
async def go():
    await gw.refresh_catalog("main")
    async with Session(gw, Principal.local("agent", {"agents"}), "main") as s:
        await s.run("SELECT 1")
        t = time.perf_counter()
        rows = 0
        if mode == "session":
            r = await s.run("SELECT * FROM big")
            rows = len(r.results[0].rows)
        elif mode == "fetchall":
            with psycopg.connect(dsn) as c:
                rows = len(c.execute("SELECT * FROM big").fetchall())
        elapsed = time.perf_counter() - t
    await gw.close()
    return rows, elapsed
rows, elapsed = anyio.run(go)
print(json.dumps({"rows": rows, "seconds": elapsed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(dsn: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, dsn, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    admin = os.environ.get("PGWARDEN_BENCH_DSN", "postgresql://postgres@127.0.0.1:55432/postgres")
    name = f"pgw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE big AS SELECT g AS id, 'user' || g || '@example.org' AS email, "
                         "repeat('x', 100) AS note FROM generate_series(1, %s) g", (args.rows,))
        base = measure(dsn, "baseline")
        session = measure(dsn, "session")
        full = measure(dsn, "fetchall")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    print(f"table: {args.rows:,} rows of ~140 bytes; rule max_rows: 1000")
    print(f"{'run':<34}{'rows':>10}{'seconds':>10}{'peak RSS MB':>14}{'vs baseline':>13}")
    for label, m in (("baseline (no query)", base), ("engine session, streamed", session),
                     ("psycopg fetchall (buffered)", full)):
        print(f"{label:<34}{m['rows']:>10,}{m['seconds']:>10.3f}{m['peak_rss_mb']:>14.1f}"
              f"{m['peak_rss_mb'] / base['peak_rss_mb']:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
