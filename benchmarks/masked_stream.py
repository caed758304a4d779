"""A masked 10^6-row result streamed through the engine session, against the same query unmasked.

The masks are computed upstream (policy/_rewrite.py: the hash of every e-mail, keep-last-4 of every
card number, in SQL), so the session passes values through; this measures what that costs end to
end. Run: ``PGWARDEN_BENCH_DSN=postgresql://postgres@127.0.0.1:55432/postgres .venv/bin/python
benchmarks/masked_stream.py [--rows N]``. It creates (and drops) a database of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import anyio
import psycopg
import yaml

from pgwarden.engine.config import parse_config
from pgwarden.engine.gateway import Gateway
from pgwarden.engine.identity import Principal
from pgwarden.engine.session import Session

CONFIG = """
version: 1
targets:
  main: {dsn: "%s", search_path: [public]}
rules:
  - name: agents
    match: {groups: [agents, support]}
    target: main
    max_rows: 2000000
    max_result_bytes: 4000000000
    statement_timeout: 600s
masking:
  columns:
    - {column: public.big.email, strategy: hash, key: {env: PGWARDEN_MASK_KEY}, unless_groups: [support]}
    - {column: public.big.card, strategy: keep_last, keep: 4, unless_groups: [support]}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    admin = os.environ.get("PGWARDEN_BENCH_DSN", "postgresql://postgres@127.0.0.1:55432/postgres")
    os.environ.setdefault("PGWARDEN_MASK_KEY", "bench-mask-key-0123456789")
    name = f"pgw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(admin, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE big (id int, email text, card text, note text)")
            conn.execute("INSERT INTO big SELECT g, 'user' || g || '@example.org', "
                         "lpad((4000000000000000 + g)::text, 16, '0'), 'n' || g FROM generate_series(1, %s) g",
                         (args.rows,))
        config = yaml.safe_load(CONFIG % dsn)
        gateway = Gateway(parse_config(yaml.safe_dump(config), "bench", base_dir="."))
        anyio.run(gateway.refresh_catalog, "main")
        sql = "SELECT id, email, card, note FROM big"

        async def stream(principal: Principal) -> tuple[float, int, str]:
            try:
                async with Session(gateway, principal, "main") as session:
                    started = time.perf_counter()
                    result = await session.run(sql)
                    elapsed = time.perf_counter() - started
                    return elapsed, len(result.results[0].rows), result.results[0].rows[0][1]
            finally:
                await gateway.close()

        masked_p = Principal.local("agent", {"agents"})
        plain_p = Principal.local("helper", {"support"})
        print(f"{args.rows} rows, 4 columns (2 masked: hash and keep_last), through Session.run, "
              "best of 3 each, alternating")
        best = {"masked": float("inf"), "unmasked": float("inf")}
        for _ in range(3):
            for label, principal in (("masked", masked_p), ("unmasked", plain_p)):
                elapsed, n, sample = anyio.run(stream, principal)
                assert n == args.rows
                assert sample.startswith("h:") == (label == "masked"), sample
                best[label] = min(best[label], elapsed)
        for label, elapsed in best.items():
            print(f"  {label:9s} {elapsed:7.2f} s  {args.rows / elapsed:12,.0f} rows/s")
        print(f"  masked / unmasked throughput: {best['unmasked'] / best['masked']:.2f}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
