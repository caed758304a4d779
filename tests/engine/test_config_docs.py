"""docs/configuration.md documents every key of the JSON Schema, so the docs cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgwarden.engine.config import config_json_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _walk(node: Any, properties: set[str], enums: set[str]) -> None:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            properties.add(name)
            _walk(sub, properties, enums)
        for value in node.get("enum", []):
            enums.add(str(value))
        for key, sub in node.items():
            if key != "properties":
                _walk(sub, properties, enums)
    elif isinstance(node, list):
        for sub in node:
            _walk(sub, properties, enums)


def _names() -> tuple[set[str], set[str]]:
    properties: set[str] = set()
    enums: set[str] = set()
    _walk(config_json_schema(), properties, enums)
    return properties, enums


def test_schema_walk_finds_keys_from_every_section() -> None:
    properties, _ = _names()
    assert {"version", "dsn", "issuer", "jwks_refresh_cooldown", "required_for", "unless_groups"} <= properties


def test_every_key_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    properties, _ = _names()
    missing = sorted(name for name in properties if f"`{name}`" not in doc)
    assert not missing, f"keys missing from {DOC.name} (document them as `name`): {missing}"


def test_every_enumerated_value_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    _, enums = _names()
    missing = sorted(value for value in enums if f"`{value}`" not in doc)
    assert not missing, f"allowed values missing from {DOC.name}: {missing}"
