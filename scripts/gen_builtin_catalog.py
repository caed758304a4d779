#!/usr/bin/env python3
"""Generate src/pgwarden/policy/data/pg_catalog.json: the builtin catalog shipped with the package.

It reads a stock PostgreSQL with the same queries as the live catalog loader
(``pgwarden.engine.catalog_loader.read_rows``), so offline and live snapshots
agree on column types and function names, and keeps only ``pg_catalog`` and
``information_schema``: their relations (kinds r, v, m, p, f, with columns) and
functions. Output is compact JSON in a fixed order, so regenerating against the
same server version gives the same bytes. By default it starts a throwaway
embedded server (pgserver's PostgreSQL 16.2); ``--dsn`` reads another server
instead, which should be an untouched one (extensions add functions to pg_catalog).

Run with the project venv:  .venv/bin/python scripts/gen_builtin_catalog.py [--dsn DSN] [--output PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from pgwarden.engine.catalog_loader import read_rows
from pgwarden.devtools.embedded import start_embedded

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "pgwarden" / "policy" / "data" / "pg_catalog.json"
BUILTIN_SCHEMAS = ("pg_catalog", "information_schema")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    rows = read_rows(conn)
    relations = sorted(
        (
            {"schema": schema, "name": name, "kind": kind,
             "columns": [list(col) for col in zip(names or (), nums or (), types or (), strict=True)]}
            for schema, name, kind, _oid, _view_sql, names, nums, types in rows.relations
            if schema in BUILTIN_SCHEMAS
        ),
        key=lambda r: (r["schema"], r["name"]),
    )
    functions = {
        name: sorted(s for s in schemas if s in BUILTIN_SCHEMAS)
        for name, schemas in sorted(rows.functions)
        if any(s in BUILTIN_SCHEMAS for s in schemas)
    }
    version = conn.execute("SELECT pg_catalog.current_setting('server_version')").fetchone()
    assert version is not None
    # "16.2" rather than "16.2 (Debian 16.2-1.pgdg120+2)"
    return {"server_version": version[0].split()[0], "relations": relations, "functions": functions}


@contextlib.contextmanager
def embedded_dsn() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="pgw-gen-"))
    server = start_embedded(directory)
    try:
        yield server.dsn()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="read this server instead of a throwaway embedded one")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn or stack.enter_context(embedded_dsn())
        with psycopg.connect(dsn, autocommit=True) as conn:
            data = snapshot(conn)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.output}: PostgreSQL {data['server_version']}, {len(data['relations'])} relations, "
          f"{len(data['functions'])} function names")


if __name__ == "__main__":
    main()
