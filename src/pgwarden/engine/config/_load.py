"""Reading ``pgwarden.yaml``: strict YAML (duplicate keys refused), validation, the JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._errors import ConfigError, ConfigProblem
from .models import GatewayConfig, _validate


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML keeps the last one silently, which could
    turn a reviewed ``deny`` list into a different one further down the file."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # unhashable key: construct_mapping below reports it
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark,
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, source: str) -> Any:
    try:
        # A SafeLoader subclass: as safe as yaml.safe_load, plus the duplicate-key check.
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(source, [ConfigProblem(where, f"expected valid YAML ({what})")], "config_syntax") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [ConfigProblem("", f"expected valid YAML ({exc})")], "config_syntax") from None


def parse_config(text: str, source_name: str = "<config>", *, base_dir: Path | str | None = None) -> GatewayConfig:
    """Validate configuration ``text``; raise :class:`ConfigError` listing every problem.

    ``source_name`` names the text in messages; ``base_dir`` is where relative paths in it
    (key and secret files) are read from.
    """
    config = _validate(_read_yaml(text, source_name), source_name)
    if base_dir is not None:
        config._base_dir = Path(base_dir).resolve()
    return config


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate the file at ``path``; relative paths inside it are relative to its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigProblem("", "file not found; check the path")],
                          "config_unreadable") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [ConfigProblem("", "expected UTF-8 text")], "config_unreadable") from None
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot be read ({exc.strerror})")],
                          "config_unreadable") from None
    return parse_config(text, str(path), base_dir=path.parent)


# -- JSON Schema ------------------------------------------------------------------------------------


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of ``pgwarden.yaml`` (what ``pgwarden config schema`` prints)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "pgwarden.yaml"
    return schema
