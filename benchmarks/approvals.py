"""How fast a waiting statement wakes when a human decides: ``approve()`` → the waiter returns.

Run with ``.venv/bin/python benchmarks/approvals.py`` (starts an embedded PostgreSQL in a
temp directory, needs the ``pgserver`` wheel) or ``… --dsn postgresql://postgres@host/db``
(a superuser DSN: a control database ``pgw_bench_approvals_<pid>`` is created there and
dropped afterwards). ``--rounds N`` sets the number of decisions per scenario (≥ 50).

What is measured (wall clock, ``time.time()``, both processes on this machine):

* **PostgreSQL, across gateways**: process A (a child of this script, its own broker and
  store, ``poll_interval`` 1 s so only LISTEN/NOTIFY can explain a fast wake) waits on a
  request; process B (this script) calls ``approve()``; latency = A's wake time minus the
  time just before B's ``approve()``, so it includes B's read, conditional UPDATE, commit,
  the NOTIFY and A's re-read. Target: median < 50 ms.
* **SQLite, one process**: the waiter is a task in the same process; the decision wakes it
  directly (no polling).
* **SQLite, across processes** (informational): the child waits with a 50 ms poll interval;
  there is no notification between processes, so expect up to the poll interval (the fixed 30 ms
  pause below makes the figure steady rather than uniform).

For each request the child first reports ``ready`` and B sleeps 30 ms so A is inside
``wait()`` when the decision lands. Reported: median and p95 over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgwarden.engine.approvals import ApprovalBroker, PostgresStore, SqliteStore
from pgwarden.engine.principal import Principal
from pgwarden.policy.verdict import ApprovalRequirement

TARGET_MS = 50.0
AGENT = Principal.local("bench-agent", {"agents"})
REQUIREMENT = ApprovalRequirement(approvers=("dba",), timeout_ms=600_000, max_window_ms=0, triggers=("ddl",))


async def _ask(broker: ApprovalBroker, i: int) -> str:
    # A new text every time: the same text while its approval is valid would return the approved request.
    req = await broker.request(requester=AGENT, target="bench", role=None,
                               statement=f"DROP TABLE t{i} /* {time.time_ns()} */",
                               policy_version="bench", channel="wire", requirement=REQUIREMENT,
                               scope=[(f"public.t{i}", "ddl")])
    return req.id


async def child(kind: str, where: str) -> None:
    store = PostgresStore(where, poll_interval=1.0) if kind == "postgres" else SqliteStore(where, poll_interval=0.05)
    async with ApprovalBroker(store) as broker:
        print("open", flush=True)
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            print(f"ready {line}", flush=True)
            request = await broker.wait(line, timeout=30)
            print(json.dumps({"status": request.status.value, "woke": time.time()}), flush=True)


async def across_processes(broker: ApprovalBroker, kind: str, where: str, rounds: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, where], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "open":
            raise RuntimeError("the waiting process did not start")
        out = []
        for i in range(rounds + 3):  # three warm-up rounds
            request_id = await _ask(broker, i)
            proc.stdin.write(request_id + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().split() == ["ready", request_id]
            await asyncio.sleep(0.03)
            started = time.time()
            await broker.approve(request_id, "bench-dba", {"dba"})
            woke = json.loads(proc.stdout.readline())
            assert woke["status"] == "approved", woke
            if i >= 3:
                out.append((woke["woke"] - started) * 1000)
        return out
    finally:
        proc.kill()
        proc.wait()


async def one_process(broker: ApprovalBroker, rounds: int) -> list[float]:
    out = []
    for i in range(rounds + 3):
        request_id = await _ask(broker, i)
        woke: list[float] = []

        async def wait(rid: str = request_id, sink: list[float] = woke) -> None:
            await broker.wait(rid, timeout=30)
            sink.append(time.time())

        task = asyncio.create_task(wait())
        await asyncio.sleep(0.03)
        started = time.time()
        await broker.approve(request_id, "bench-dba", {"dba"})
        await task
        if i >= 3:
            out.append((woke[0] - started) * 1000)
    return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


async def run(dsn: str, rounds: int, workdir: Path) -> list[tuple[str, list[float], bool]]:
    results = []
    async with ApprovalBroker(PostgresStore(dsn)) as broker:
        results.append(("PostgreSQL, process B → process A", await across_processes(broker, "postgres", dsn, rounds),
                        True))
    path = workdir / "approvals.db"
    async with ApprovalBroker(SqliteStore(path, poll_interval=0.05)) as broker:
        results.append(("SQLite, one process", await one_process(broker, rounds), True))
        results.append(("SQLite, across processes (polling 50 ms)",
                        await across_processes(broker, "sqlite", str(path), rounds), False))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="superuser DSN of a PostgreSQL server (default: start an embedded one)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "WHERE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(*args.child))
        return
    if args.rounds < 50:
        parser.error("--rounds must be at least 50")

    with tempfile.TemporaryDirectory(prefix="pgw-bench-") as tmp:
        server = None
        admin = args.dsn
        if admin is None:
            from pgwarden.devtools.embedded import start_embedded

            server = start_embedded(Path(tmp) / "pg")
            admin = server.dsn()
        name = f"pgw_bench_approvals_{os.getpid()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            results = asyncio.run(run(make_conninfo(admin, dbname=name), args.rounds, Path(tmp)))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if server is not None:
                server.stop()

    print(f"\napprove() → waiter wakes, {args.rounds} decisions each (ms)")
    print(f"{'scenario':<44} {'median':>8} {'p95':>8} {'max':>8}  target")
    for label, values, targeted in results:
        median, p95 = statistics.median(values), _p95(values)
        verdict = (f"< {TARGET_MS:.0f} median: " + ("PASS" if median < TARGET_MS else "MISS")) if targeted else "-"
        print(f"{label:<44} {median:>8.1f} {p95:>8.1f} {max(values):>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
