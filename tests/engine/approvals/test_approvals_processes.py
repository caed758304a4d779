"""Two OS processes sharing one store: process A waits, process B (this test) decides, A wakes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from approvals_support import ALICE, ask

from pgwarden.engine.approvals import ApprovalBroker, PostgresStore, SqliteStore

pytestmark = pytest.mark.anyio

WAITER = Path(__file__).with_name("waiter_process.py")


def _start(kind: str, where: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(WAITER), kind, where], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "open"
    return proc


async def _latencies(broker: ApprovalBroker, proc: subprocess.Popen[str], rounds: int) -> list[float]:
    assert proc.stdin is not None and proc.stdout is not None
    out = []
    for i in range(rounds):
        req = await broker.request(**ask(parameters=[str(i)]))
        proc.stdin.write(req.id + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["ready", req.id]
        time.sleep(0.03)  # let A reach its wait
        decided_at = time.time()
        await broker.approve(req.id, *ALICE)
        woke = json.loads(proc.stdout.readline())
        assert woke["id"] == req.id and woke["status"] == "approved"
        out.append(woke["woke"] - decided_at)
    return out


async def test_postgres_waiter_in_another_process_wakes_within_milliseconds(fresh_db: str) -> None:
    async with ApprovalBroker(PostgresStore(fresh_db)) as broker:  # creates the schema before A starts
        proc = _start("postgres", fresh_db)
        try:
            latencies = await _latencies(broker, proc, 8)
        finally:
            proc.kill()
            proc.wait()
    median = statistics.median(latencies)
    print(f"postgres cross-process wake: median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    # A's poll interval is 1 s: waking well under it proves LISTEN/NOTIFY did the waking.
    assert median < 0.2, latencies


async def test_sqlite_waiter_in_another_process_wakes_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    async with ApprovalBroker(SqliteStore(path)) as broker:
        proc = _start("sqlite", str(path))
        try:
            latencies = await _latencies(broker, proc, 4)
        finally:
            proc.kill()
            proc.wait()
    assert max(latencies) < 1.0, latencies
