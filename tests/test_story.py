"""The mission's story, end to end: ``pgwarden demo`` up, the scripted story through psql and MCP.

Starts the real demo (embedded PostgreSQL, wire proxy, MCP over HTTP, console, one process) as a
subprocess, plays ``examples/nightly-migration/story.py`` once through psql and once through the MCP
SDK's client, then stops the demo with Ctrl-C (SIGINT) and checks that it stopped cleanly.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.demo import demo_process

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "examples" / "nightly-migration" / "story.py"


def _psql() -> str | None:
    from pgwarden.devtools.embedded import EmbeddedPostgres

    found = shutil.which("psql")
    if found:
        return found
    candidate = EmbeddedPostgres(Path("/"), Path("/"), Path("/"), 0).bin_dir / "psql"
    return str(candidate) if candidate.exists() else None


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with demo_process(tmp_path_factory.mktemp("demo")) as (ready, proc):
        yield Path(ready["ready_file"]), proc


@pytest.mark.parametrize("door", ["psql", "mcp"])
def test_the_story_holds_through_each_door(demo, door: str) -> None:
    ready, _ = demo
    psql = _psql()
    if door == "psql" and psql is None:
        pytest.skip("no psql binary on this machine")
    out = subprocess.run([sys.executable, str(STORY), "--ready", str(ready), "--door", door,
                          *(["--psql", psql] if psql else [])], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "the story holds." in out.stdout


def test_ctrl_c_stops_everything_cleanly(demo) -> None:
    ready, proc = demo
    info = json.loads(ready.read_text())
    assert info["seconds_to_ready"] < 60
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "pgwarden demo stopped" in out
    assert "one line per statement" in out.lower()
    assert "nightly-migration-agent" in out  # the per-statement log lines were printed
    assert "approved by dana" in out  # the held DDL, once a DBA approved it
    import socket

    with socket.socket() as s:  # the proxy's port is free again
        s.bind((info["proxy_host"], info["proxy_port"]))
