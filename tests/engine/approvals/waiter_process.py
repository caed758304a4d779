"""A second OS process for the multi-process tests: waits on approval requests named on stdin.

``python waiter_process.py postgres DSN`` (or ``sqlite PATH``). For each request id read
from stdin it prints ``ready <id>``, waits on it with the broker, and prints one JSON
line with the status it woke to and the wall-clock time it woke (``time.time()``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from pgwarden.engine.approvals import ApprovalBroker, PostgresStore, SqliteStore


async def main(kind: str, where: str) -> None:
    store = PostgresStore(where, poll_interval=1.0) if kind == "postgres" else SqliteStore(where, poll_interval=0.02)
    async with ApprovalBroker(store) as broker:
        print("open", flush=True)
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            print(f"ready {line}", flush=True)
            request = await broker.wait(line, timeout=20)
            woke = time.time()
            print(json.dumps({"id": request.id, "status": request.status.value, "woke": woke}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
