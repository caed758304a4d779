"""The client configurations in examples/mcp are valid for each client's format."""

from __future__ import annotations

import json
import shlex

import pytest
from mcp_helpers import REPO

EXAMPLES = REPO / "examples" / "mcp"


def _servers(path: str, key: str) -> dict:
    data = json.loads((EXAMPLES / path).read_text())
    assert set(data) <= {key, "inputs"}, f"{path}: unexpected top-level keys {set(data)}"
    assert isinstance(data[key], dict) and data[key]
    return data


def _check_stdio(name: str, server: dict) -> None:
    assert server["command"] == "pgwarden" and server["args"][0] == "mcp", name
    assert "--config" in server["args"], name
    assert all(isinstance(a, str) for a in server["args"])
    assert "PGWARDEN_TOKEN" in server["env"], name
    shlex.join([server["command"], *server["args"]])


def _check_http(name: str, server: dict) -> None:
    assert server["url"].endswith("/mcp"), name
    assert server["headers"]["Authorization"].startswith("Bearer "), name


def test_claude_code() -> None:
    data = _servers(".mcp.json", "mcpServers")
    for name, server in data["mcpServers"].items():
        assert server["type"] in {"stdio", "http", "sse"}
        (_check_stdio if server["type"] == "stdio" else _check_http)(name, server)


def test_claude_desktop_is_stdio_only() -> None:
    data = _servers("claude_desktop_config.json", "mcpServers")
    for name, server in data["mcpServers"].items():
        assert set(server) <= {"command", "args", "env"}, name
        _check_stdio(name, server)


def test_cursor() -> None:
    data = _servers(".cursor/mcp.json", "mcpServers")
    for name, server in data["mcpServers"].items():
        assert ("command" in server) != ("url" in server), name
        (_check_stdio if "command" in server else _check_http)(name, server)
        assert "${env:" in json.dumps(server) or "Bearer" not in json.dumps(server)


def test_vscode_uses_servers_key_and_declared_inputs() -> None:
    data = _servers(".vscode/mcp.json", "servers")
    assert "mcpServers" not in data
    inputs = {i["id"] for i in data.get("inputs", [])}
    for name, server in data["servers"].items():
        assert server["type"] in {"stdio", "http", "sse"}, name
        (_check_stdio if server["type"] == "stdio" else _check_http)(name, server)
        for ref in json.dumps(server).split("${input:")[1:]:
            assert ref.split("}")[0] in inputs, name


@pytest.mark.parametrize("path", [".mcp.json", "claude_desktop_config.json", ".cursor/mcp.json", ".vscode/mcp.json"])
def test_no_inline_secret(path: str) -> None:
    assert "eyJ" not in (EXAMPLES / path).read_text()
