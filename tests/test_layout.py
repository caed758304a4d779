"""The layout stays honest: faces resolve, packages import only what the design allows.

docs/architecture.md draws the picture these tests keep true: ``policy`` and ``audit`` depend on
nothing of ours (but ``pgwarden.errors``); ``engine`` on them; the doors on ``engine``; the CLI
sits above everything. Nobody imports another package's private (``_``) modules, and the policy
core does no I/O.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pgwarden"
ALLOWED = {  # package -> the packages of ours it may import
    "policy": {"errors", "_face"},
    "audit": {"errors", "_face"},
    "engine": {"errors", "_face", "policy", "audit"},
    "wire_proxy": {"errors", "_face", "policy", "audit", "engine"},
    "mcp_server": {"errors", "_face", "policy", "audit", "engine", "console"},
    "console": {"errors", "_face", "policy", "audit", "engine"},
    "devtools": {"errors", "_face"},
    "cli": None,  # above everything
}
IO_MODULES = {"psycopg", "psycopg_pool", "socket", "asyncio", "anyio", "sqlite3", "subprocess", "httpx", "ssl",
              "urllib", "http"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module or "")
    return names


def _modules():
    return [p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts]


def test_every_face_resolves() -> None:
    for package in ("policy", "engine", "audit", "wire_proxy", "engine.approvals", "policy.sql"):
        module = importlib.import_module(f"pgwarden.{package}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"pgwarden.{package}.{name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layering(path: Path) -> None:
    rel = path.relative_to(SRC).parts
    own = rel[0] if len(rel) > 1 else None
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "pgwarden" or len(parts) < 2:
            continue
        target = parts[1]
        if own is not None and target != own:
            allowed = ALLOWED.get(own, set())
            assert allowed is None or target in allowed, f"{'/'.join(rel)} imports pgwarden.{target}"
            private = [p for p in parts[2:] if p.startswith("_") and p != "__init__"]
            assert not private, f"{'/'.join(rel)} imports the private module {name}"


def test_the_policy_core_does_no_io() -> None:
    for path in (SRC / "policy").rglob("*.py"):
        for name in _imports(path):
            assert name.split(".")[0] not in IO_MODULES, f"{path.relative_to(SRC)} imports {name}"
