"""The MCP door driven the way an agent drives it: ``pgwarden mcp`` as a subprocess, the SDK's client over
stdio, the token in ``PGWARDEN_TOKEN``."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import anyio

from support.wire import REPO


def tool_results(config: Path, token: str, calls: list[tuple[str, dict]], *, mask_key: str) -> list[tuple[bool, str]]:
    """Each ``(tool, arguments)`` called in one MCP session: ``(is_error, the text of its content)``."""
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters

    env = {"PATH": os.environ.get("PATH", ""), "PGWARDEN_MASK_KEY": mask_key, "PYTHONPATH": str(REPO / "src"),
           "HOME": os.environ.get("HOME", "/tmp"), "PGWARDEN_TOKEN": token}
    params = StdioServerParameters(command=sys.executable, args=["-m", "pgwarden.cli", "mcp", "--config",
                                                                 str(config)], env=env, cwd=str(config.parent))
    out: list[tuple[bool, str]] = []

    async def go() -> None:
        async with Client(params) as client:
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                out.append((bool(result.is_error), "".join(getattr(c, "text", "") for c in result.content)))
    anyio.run(go)
    return out


def query_outcomes(config: Path, token: str, texts: list[str], *, mask_key: str, tool: str = "query") -> list[str]:
    """Each text through the ``query`` tool (or ``tool``): ``"ok"``, or the SQLSTATE (else the code) of its
    error."""
    out: list[str] = []
    for is_error, text in tool_results(config, token, [(tool, {"sql": sql}) for sql in texts], mask_key=mask_key):
        if not is_error:
            out.append("ok")
            continue
        body = json.loads(re.sub(r"^[^{]*", "", text, count=1))
        out.append(body.get("sqlstate") or body.get("code") or "?")
    return out
