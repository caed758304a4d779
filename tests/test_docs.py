"""The documentation holds together: links resolve, commands exist, config snippets parse, the collector
configuration is well formed.

Fast by design (no database, no network): it reads README.md, docs/*.md and
examples/otel-collector/collector.yaml, asks ``pgwarden --help`` (and the help of each command that has
sub-commands) once, and validates configuration snippets with the real parser.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pgwarden.engine.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]
COLLECTOR = ROOT / "examples" / "otel-collector" / "collector.yaml"

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                   re.M | re.S)
LINK = re.compile(r"(?<!\!)\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]\n]*\]\((?P<img>[^)\s]+)\)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# A command line: optional prompt, ExecStart=, VAR=value assignments, a path, then `pgwarden WORD [WORD]`.
COMMAND_LINE = re.compile(
    r"^(?:\$\s+)?(?:ExecStart=)?(?:[A-Z_][A-Z0-9_]*=(?:\$\([^)]*\)|\S+)\s+)*(?:\S*/)?pgwarden\s+(?P<cmd>[a-z][a-z-]*)"
    r"(?:\s+(?P<sub>[a-z][a-z-]*)\b)?"
)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _fences(text: str) -> list[tuple[str, str]]:
    return [(m["info"].strip().split(" ")[0].lower(), m["body"]) for m in FENCE.finditer(text)]


def _without_fences(text: str) -> str:
    return FENCE.sub("", text)


# --- the CLI as `pgwarden --help` describes it ---------------------------------------------------------

def _help(*args: str) -> str:
    """`pgwarden [ARGS] --help`, from the installed command."""
    exe = Path(sys.executable).with_name("pgwarden")
    command = [str(exe)] if exe.exists() else [shutil.which("pgwarden") or "pgwarden"]
    out = subprocess.run([*command, *args, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _parser_help(*args: str) -> str:
    """The same help text, from the parser in-process (a process start costs about a second each)."""
    import argparse

    from pgwarden.cli.main import build_parser

    parser = build_parser()
    for name in args:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser.format_help()


def _commands(help_text: str) -> set[str]:
    """Sub-command names from an argparse help: the `{a,b,c}` choice list, or the indented listing."""
    names: set[str] = set()
    braces = re.search(r"\{([a-z][a-z,-]*)\}", help_text)
    if braces:
        names.update(braces.group(1).split(","))
    section = re.search(r"^(?:\w+ )?commands:\n(?:\s+COMMAND\n)?(?P<body>(?:[ \t]+.*\n?)+)", help_text, re.M)
    if section:
        for line in section["body"].splitlines():
            m = re.match(r"^ {4}([a-z][a-z-]*)(?:\s|$)", line)
            if m:
                names.add(m.group(1))
    return names


@functools.cache
def cli_tree() -> dict[str, set[str]]:
    top = _commands(_help())  # the real `pgwarden --help`, once
    assert {"check", "config", "audit", "proxy", "serve", "mcp", "demo"} <= top, top
    assert _commands(_parser_help()) == top
    tree = {}
    for name in sorted(top):
        text = _parser_help(name)
        tree[name] = _commands(text) if "COMMAND" in text else set()
    return tree


def _mentions(path: Path) -> list[tuple[str, str | None, str]]:
    """Every `pgwarden CMD [SUB]` in code: inline code spans and command lines of shell-ish fenced blocks."""
    text = _read(path)
    found: list[tuple[str, str | None, str]] = []
    for info, body in _fences(text):
        if info in {"yaml", "yml", "json", "haproxy", "text", "python"}:
            continue  # not command lines (an `ini` block is a systemd unit: its ExecStart= lines count)
        for line in body.splitlines():
            line = line.strip()
            if info == "console" and not line.startswith("$"):
                continue  # output, not a command
            m = COMMAND_LINE.match(line)
            if m:
                found.append((m["cmd"], m["sub"], line))
    for span in INLINE_CODE.findall(_without_fences(text)):
        m = COMMAND_LINE.match(span.strip())
        if m:
            found.append((m["cmd"], m["sub"], span))
    return found


# --- tests --------------------------------------------------------------------------------------------

def test_readme_names_the_two_commands():
    text = _read(README)
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path):
    broken = []
    for m in LINK.finditer(_without_fences(_read(path))):
        target = m["target"] or m["img"]
        parts = urlsplit(target)
        if parts.scheme or target.startswith(("#", "//", "mailto:")):
            continue
        if not parts.path:
            continue
        if not (path.parent / parts.path).exists():
            broken.append(target)
    assert not broken, f"{path.name}: links to missing files: {broken}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_pgwarden_command_mentioned_exists(path: Path):
    tree = cli_tree()
    unknown = []
    for cmd, sub, where in _mentions(path):
        if cmd not in tree or (tree[cmd] and sub is not None and sub not in tree[cmd]):
            unknown.append(where)
    assert not unknown, f"{path.name}: not pgwarden commands: {unknown}"


def test_the_mentions_are_found_at_all():
    """Guard against a parser that silently finds nothing (and so checks nothing)."""
    mentions = {(c, s) for p in MARKDOWN for c, s, _ in _mentions(p)}
    assert ("audit", "verify") in mentions and ("config", "check") in mentions
    assert any(c == "serve" for c, _ in mentions) and any(c == "proxy" for c, _ in mentions)


def _config_snippets():
    for path in MARKDOWN:
        for index, (info, body) in enumerate(_fences(_read(path))):
            if info in {"yaml", "yml"} and re.search(r"^version:\s*1\s*$", body, re.M) \
                    and re.search(r"^targets:", body, re.M):
                yield pytest.param(path, body, id=f"{path.relative_to(ROOT)}#{index}")


CONFIG_SNIPPETS = list(_config_snippets())


def test_docs_hold_complete_config_examples():
    assert len(CONFIG_SNIPPETS) >= 2, "README/docs should show at least two complete pgwarden.yaml examples"


@pytest.mark.parametrize(("path", "body"), CONFIG_SNIPPETS)
def test_config_snippets_parse(path: Path, body: str):
    parse_config(body, f"{path.name} snippet", base_dir=path.parent)


# --- the OpenTelemetry Collector example ----------------------------------------------------------------

KNOWN_COMPONENT_TYPES = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter", "attributes", "resource", "filter", "transform", "tail_sampling"},
    "exporters": {"debug", "otlp", "otlphttp", "file", "kafka"},
}


@functools.cache
def collector() -> dict:
    return yaml.safe_load(_read(COLLECTOR))


def test_collector_sections_and_component_types():
    conf = collector()
    assert isinstance(conf, dict)
    assert set(conf) <= {"receivers", "processors", "exporters", "connectors", "extensions", "service"}
    for section, types in KNOWN_COMPONENT_TYPES.items():
        assert isinstance(conf.get(section), dict) and conf[section], section
        for component_id in conf[section]:
            # component ids are `type` or `type/name`
            assert re.fullmatch(r"[a-z][a-z0-9_]*(/[\w.-]+)?", component_id), component_id
            assert component_id.split("/", 1)[0] in types, f"{section}: unknown component type {component_id}"
    assert "debug" in {c.split("/")[0] for c in conf["exporters"]}
    assert "otlphttp" in {c.split("/")[0] for c in conf["exporters"]}
    assert "batch" in conf["processors"]


def test_collector_pipelines_reference_defined_components():
    conf = collector()
    pipelines = conf["service"]["pipelines"]
    assert "traces" in {p.split("/")[0] for p in pipelines}
    for name, pipeline in pipelines.items():
        assert set(pipeline) <= {"receivers", "processors", "exporters"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"{name}: needs receivers and exporters"
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section) or []:
                assert component in conf[section], f"pipeline {name} uses undefined {section[:-1]} {component}"
    assert "batch" in pipelines["traces"]["processors"]


def _receiver_http_endpoint() -> tuple[str, int]:
    http = collector()["receivers"]["otlp"]["protocols"]["http"]
    assert isinstance(http, dict) and http.get("endpoint"), "otlp receiver needs protocols.http.endpoint"
    host, _, port = str(http["endpoint"]).rpartition(":")
    assert host and port.isdigit(), http["endpoint"]
    return host, int(port)


def test_collector_otlp_receiver_listens_on_http_4318():
    assert _receiver_http_endpoint()[1] == 4318


def _documented_otlp_endpoints() -> list[str]:
    urls = []
    for path in [*MARKDOWN, COLLECTOR]:
        for info, body in _fences(_read(path)) if path.suffix == ".md" else [("yaml", _read(path))]:
            if info in {"yaml", "yml"}:
                urls += re.findall(r"otlp_endpoint:\s*[\"']?(\S+?)[\"']?\s*(?:#.*)?$", body, re.M)
    return urls


def test_documented_otlp_endpoint_points_at_the_receiver():
    urls = _documented_otlp_endpoints()
    assert urls, "docs should show audit.otlp_endpoint"
    _, port = _receiver_http_endpoint()
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in {"http", "https"}, url
        assert parts.port == port, f"{url} does not reach the collector's OTLP/HTTP port {port}"
        assert parts.path == "/v1/traces", f"{url}: OTLP/HTTP traces are posted to /v1/traces"
