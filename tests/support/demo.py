"""Run ``pgwarden demo`` as a subprocess for tests: both doors over one engine, on embedded PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def demo_process(directory: Path) -> Iterator[tuple[dict, subprocess.Popen]]:
    ready = directory / "ready.json"
    exe = Path(sys.executable).with_name("pgwarden")
    proc = subprocess.Popen([str(exe), "demo", "--state", str(directory / "s"), "--ready-file", str(ready),
                             "--proxy-port", "0", "--http-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=directory)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read() if proc.stdout else ""
            proc.kill()
            pytest.fail(f"pgwarden demo did not come up:\n{out[-3000:]}")
        time.sleep(0.2)
    try:
        yield json.loads(ready.read_text()) | {"ready_file": str(ready)}, proc
    finally:
        if proc.poll() is None:
            import signal

            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
