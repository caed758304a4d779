#!/usr/bin/env python3
"""Generate tests/corpus/pgbench.yaml: the statements pgbench really sends.

End to end: starts a throwaway PostgreSQL (pgserver) with log_statement=all, runs the
system ``pgbench`` to initialise (``-i``, in its default and in server-side /
partitioned / foreign-key variants) and to run each built-in script in simple
(literals) and extended/prepared (``$n`` parameters) protocol modes, then reads
every statement back from the server log (only sessions whose application_name is
``pgbench``). The server is stopped and deleted afterwards.

Run with the project venv:  .venv/bin/python scripts/gen_corpus_pgbench.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_corpus_psql import (
    dedupe_by_shape,
    embedded_pg,
    server_version,
    tool_version,
    write_corpus,
)

SEED = "4242"

INIT_RUNS = [
    ["-i", "-s", "1"],  # default steps dtgvp: client-side COPY
    ["-i", "-s", "1", "-I", "dtGvpf", "--partitions=2"],  # server-side generate, range partitions, FKs
    ["-i", "-s", "1", "-I", "dtgvpf", "--partitions=2", "--partition-method=hash", "--unlogged-tables"],
    ["-i", "-s", "1", "-I", "dtgvp", "--fillfactor=90"],  # leave the default layout for the runs
]

BENCH_RUNS = []
for script in ("tpcb-like", "simple-update", "select-only"):
    BENCH_RUNS.append(["-b", script, "-t", "5", "-M", "simple", f"--random-seed={SEED}"])
    BENCH_RUNS.append(["-b", script, "-t", "2", "-M", "extended", f"--random-seed={SEED}"])
    BENCH_RUNS.append(["-b", script, "-t", "2", "-M", "prepared", f"--random-seed={SEED}"])
BENCH_RUNS.append(["-b", "tpcb-like", "-t", "2", "-n", "-M", "simple", f"--random-seed={SEED}"])


def main() -> int:
    version = tool_version(["pgbench", "--version"])
    with embedded_pg() as pg:
        srv_version = server_version(pg)
        pg.psql("CREATE DATABASE bench;")
        dsn_args = ["-h", pg.host, "-U", "postgres", "bench"]
        mark = pg.log_mark()
        for args in INIT_RUNS + BENCH_RUNS:
            res = subprocess.run(["pgbench", *args, *dsn_args], text=True, capture_output=True, check=False)
            if res.returncode != 0:
                print(f"pgbench {' '.join(args)} failed:\n{res.stderr}", file=sys.stderr)
                return 1
        logged = pg.logged_statements(since=mark, app="pgbench")
    statements = dedupe_by_shape(logged)
    source = (
        f"Captured with scripts/gen_corpus_pgbench.py from the server log (log_statement=all) of a "
        f"throwaway PostgreSQL {srv_version} (pgserver package) while {version} ran: "
        + "; ".join("pgbench " + " ".join(a) for a in INIT_RUNS + BENCH_RUNS)
        + ". Simple-protocol runs send the built-in scripts with the :aid/:bid/:tid/:delta variables "
        "already replaced by literals; extended/prepared runs send $n parameters. Each statement is the "
        "exact text the server logged (one tab after each newline, added by the logger, removed). "
        "Statements that differ only in literal values (the random values of repeated transactions, "
        "partition bounds) are kept once, first seen."
    )
    write_corpus("pgbench", source, statements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
