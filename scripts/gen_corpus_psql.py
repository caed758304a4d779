#!/usr/bin/env python3
"""Generate tests/corpus/psql_describe.yaml: the catalog queries psql sends for its
backslash commands.

End to end: starts a throwaway PostgreSQL with ``pgserver`` (the project's dev
dependency), creates a small schema that has one object of most kinds, runs the
system ``psql`` with ``-E`` (ECHO_HIDDEN) and ``-L`` (a log file that receives the
same echo) for a long list of backslash commands, and extracts each query text
exactly as psql printed it between its ``QUERY`` markers. The server is stopped
and its data directory removed afterwards.

Run with the project venv:  .venv/bin/python scripts/gen_corpus_psql.py

This module also holds the small helpers the other ``gen_corpus_*`` scripts share
(embedded server with ``log_statement=all`` + log parser, YAML writer with pglast
validation).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "tests" / "corpus"

# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------

LOG_PREFIX = "@@%a@@ "  # log_line_prefix: application_name between @@ markers
_ENTRY_RE = re.compile(r"^@@(?P<app>.*?)@@ (?P<level>[A-Z0-9]+):  (?P<msg>.*)$")
_STMT_RE = re.compile(r"^statement: (?P<sql>.*)\Z", re.S)
_EXEC_RE = re.compile(r"^execute (?P<fetch>fetch from )?(?P<name>[^\s:]*): (?P<sql>.*)\Z", re.S)


class EmbeddedPG:
    """A throwaway PostgreSQL (pgserver) whose log records every statement."""

    def __init__(self, server, workdir: Path):
        self._server = server
        self.workdir = workdir
        self.pgdata = Path(server.pgdata)
        self.log_path = Path(server.log)
        self.uri = server.get_uri()
        m = re.search(r"host=([^&]+)", self.uri)
        self.host = m.group(1) if m else None

    def dsn(self, dbname: str = "postgres", application_name: str | None = None) -> str:
        uri = self._server.get_uri(dbname)
        if application_name:
            uri += ("&" if "?" in uri else "?") + f"application_name={application_name}"
        return uri

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as superuser through the system psql (quiet, stops on error)."""
        res = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.dsn(dbname, "corpus_setup")],
            input=sql,
            text=True,
            capture_output=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"setup SQL failed: {res.stderr}")
        return res.stdout

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def logged_statements(self, since: int = 0, app: str | None = None) -> list[str]:
        """Statements recorded by log_statement=all since byte offset ``since``.

        Multi-line messages are written with a tab after every newline; that tab is
        removed so the text is the one the client sent. ``execute fetch from``
        (resumed portals) entries are skipped as duplicates.
        """
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            fh.seek(since)
            text = fh.read()
        entries: list[tuple[str, str, list[str]]] = []
        for line in text.split("\n"):
            m = _ENTRY_RE.match(line)
            if m:
                entries.append((m["app"], m["level"], [m["msg"]]))
            elif line.startswith("\t") and entries:
                entries[-1][2].append(line[1:])
        out: list[str] = []
        for e_app, level, parts in entries:
            if level != "LOG" or (app is not None and e_app != app):
                continue
            msg = "\n".join(parts)
            m = _STMT_RE.match(msg)
            if m:
                out.append(m["sql"])
                continue
            m = _EXEC_RE.match(msg)
            if m and not m["fetch"]:
                out.append(m["sql"])
        return out


@contextlib.contextmanager
def embedded_pg(log_all: bool = True) -> Iterator[EmbeddedPG]:
    """Start a fresh pgserver cluster in a temp dir; stop it and delete it on exit."""
    import pgserver  # project dev dependency

    workdir = Path(tempfile.mkdtemp(prefix="pgw_corpus_", dir="/tmp"))
    server = pgserver.get_server(workdir / "pg", cleanup_mode="delete")
    try:
        pg = EmbeddedPG(server, workdir)
        if log_all:
            pg.psql(
                "ALTER SYSTEM SET log_statement = 'all';\n"
                f"ALTER SYSTEM SET log_line_prefix = '{LOG_PREFIX}';\n"
                "ALTER SYSTEM SET lc_messages = 'C';\n"
                "SELECT pg_reload_conf();\n"
            )
            # make sure the reload happened before anything we want to capture
            pg.psql("SELECT pg_sleep(0.3);")
        yield pg
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def server_version(pg: EmbeddedPG) -> str:
    return subprocess.run(
        ["psql", "-X", "-At", "-c", "SHOW server_version", pg.dsn(application_name="corpus_setup")],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()


def dedupe(stmts: Iterable[str]) -> list[str]:
    """Keep the first of identical statements (a trailing ';' and whitespace ignored)."""
    seen: set[str] = set()
    out: list[str] = []
    for s in stmts:
        key = s.strip().rstrip(";").rstrip()
        if key and key not in seen:
            seen.add(key)
            out.append(s)
    return out


_STR_LIT = re.compile(r"'(?:[^']|'')*'")
_NUM_LIT = re.compile(r"-?\b\d+(?:\.\d+)?\b")


def literal_shape(sql: str) -> str:
    """The text with quoted string literals and numbers blanked: statements that differ
    only in the values a client plugged in get the same key."""
    return _NUM_LIT.sub("N", _STR_LIT.sub("S", sql))


def dedupe_by_shape(stmts: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for s in stmts:
        key = literal_shape(s)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def validate(stmts: Iterable[str]) -> tuple[list[str], list[dict]]:
    """Split statements into (parsable, unparsable-with-error) using pglast."""
    import pglast

    ok: list[str] = []
    bad: list[dict] = []
    for s in stmts:
        try:
            pglast.parser.parse_sql_json(s)
        except Exception as exc:  # pglast.parser.ParseError and friends
            bad.append({"sql": s, "error": f"{type(exc).__name__}: {exc}"})
        else:
            ok.append(s)
    return ok, bad


def _yaml_dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def str_repr(dumper, data):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, str_repr)
    return Dumper


def write_corpus(name: str, source: str, statements: Iterable[str]) -> Path:
    """Dedupe, validate with pglast, and write tests/corpus/<name>.yaml."""
    import yaml

    stmts = dedupe(statements)
    ok, bad = validate(stmts)
    doc: dict = {"source": " ".join(source.split()), "statements": ok}
    if bad:
        doc["unparsable"] = bad
    text = yaml.dump(doc, Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True, width=100)
    # round-trip check: every statement must come back byte for byte
    back = yaml.safe_load(text)
    assert back["statements"] == ok, "YAML round trip changed a statement"
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    path = CORPUS_DIR / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}: {len(ok)} statements, {len(bad)} unparsable")
    return path


def tool_version(cmd: list[str]) -> str:
    return subprocess.run(cmd, text=True, capture_output=True, check=True).stdout.strip()


# Throwaway venv (outside the project) for the ORMs and third-party drivers.
TMP_VENV = Path("/tmp/corpus_venv")
TMP_VENV_PINS = [
    "django==5.2.19",
    "alembic==1.20.1",
    "sqlalchemy[asyncio]==2.1.9",
    "asyncpg==0.32.0",
    "psycopg[binary]==3.3.9",
    "psycopg2-binary==2.9.13",
]


def ensure_tmp_venv() -> Path:
    """Create /tmp/corpus_venv with the pinned packages if missing; return its python."""
    py = TMP_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run(["python3", "-m", "venv", str(TMP_VENV)], check=True)
    res = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", *TMP_VENV_PINS], text=True, capture_output=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"pip install into {TMP_VENV} failed:\n{res.stderr}")
    return py


def venv_versions(py: Path, dists: list[str]) -> str:
    code = (
        "import importlib.metadata as m, sys\nprint(', '.join(f'{d} {m.version(d)}' for d in sys.argv[1:]))"
    )
    return subprocess.run(
        [str(py), "-c", code, *dists], text=True, capture_output=True, check=True
    ).stdout.strip()


# --------------------------------------------------------------------------------------
# psql describe corpus
# --------------------------------------------------------------------------------------

SCHEMA_SQL = r"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'application objects';
CREATE TYPE app.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE TYPE app.money_pair AS (amount numeric(12,2), currency char(3));
CREATE DOMAIN app.email AS text CHECK (VALUE ~ '^[^@]+@[^@]+$');
CREATE SEQUENCE app.invoice_no START 1000 INCREMENT 1;
CREATE TABLE app.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email app.email NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    profile jsonb DEFAULT '{}'::jsonb
);
COMMENT ON TABLE app.customers IS 'people who buy things';
COMMENT ON COLUMN app.customers.email IS 'login address';
CREATE TABLE app.orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES app.customers(id) ON DELETE CASCADE,
    status app.order_status NOT NULL DEFAULT 'new',
    total numeric(12,2) NOT NULL CHECK (total >= 0),
    invoice_no integer DEFAULT nextval('app.invoice_no'),
    placed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_idx ON app.orders (customer_id);
CREATE INDEX orders_open_idx ON app.orders (placed_at) WHERE status IN ('new', 'paid');
CREATE TABLE app.order_items (
    order_id bigint REFERENCES app.orders(id),
    line smallint,
    sku text NOT NULL,
    qty integer NOT NULL DEFAULT 1,
    embedding vector(3),
    PRIMARY KEY (order_id, line)
);
CREATE TABLE app.events (
    id bigint NOT NULL,
    happened_at date NOT NULL,
    payload jsonb
) PARTITION BY RANGE (happened_at);
CREATE TABLE app.events_2024 PARTITION OF app.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX events_payload_gin ON app.events USING gin (payload);
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE ROLE app_reader NOLOGIN;
CREATE ROLE app_writer LOGIN PASSWORD 'x' IN ROLE app_reader;
GRANT USAGE ON SCHEMA app TO app_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA app TO app_reader;
GRANT INSERT, UPDATE ON app.orders TO app_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO app_reader;
CREATE POLICY orders_owner ON app.orders FOR SELECT TO app_reader USING (customer_id > 0);
CREATE VIEW app.open_orders AS
    SELECT o.id, c.email, o.total FROM app.orders o JOIN app.customers c ON c.id = o.customer_id
    WHERE o.status IN ('new', 'paid');
CREATE MATERIALIZED VIEW app.daily_totals AS
    SELECT placed_at::date AS day, sum(total) AS total FROM app.orders GROUP BY 1;
CREATE FUNCTION app.order_total(p_order bigint) RETURNS numeric
    LANGUAGE sql STABLE AS $$ SELECT total FROM app.orders WHERE id = p_order $$;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.placed_at := now();
    RETURN NEW;
END $$;
CREATE PROCEDURE app.cancel(p_order bigint) LANGUAGE sql AS $$
    UPDATE app.orders SET status = 'cancelled' WHERE id = p_order $$;
CREATE AGGREGATE app.mul(numeric) (SFUNC = numeric_mul, STYPE = numeric, INITCOND = '1');
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION app.on_ddl();
CREATE RULE orders_no_delete AS ON DELETE TO app.order_items DO INSTEAD NOTHING;
CREATE STATISTICS app.orders_stats (dependencies) ON customer_id, status FROM app.orders;
CREATE COLLATION app.c_posix (provider = libc, locale = 'C');
CREATE TEXT SEARCH CONFIGURATION app.english_simple (COPY = pg_catalog.english);
CREATE FUNCTION app.status_to_text(app.order_status) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1::text $$;
CREATE CAST (app.order_status AS text) WITH FUNCTION app.status_to_text(app.order_status);
CREATE FUNCTION app.money_eq(app.money_pair, app.money_pair) RETURNS boolean LANGUAGE sql IMMUTABLE
    AS $$ SELECT $1.amount = $2.amount AND $1.currency = $2.currency $$;
CREATE OPERATOR app.=== (LEFTARG = app.money_pair, RIGHTARG = app.money_pair, FUNCTION = app.money_eq);
CREATE FOREIGN DATA WRAPPER dummy_fdw;
CREATE SERVER remote_srv FOREIGN DATA WRAPPER dummy_fdw OPTIONS (host 'example.invalid');
CREATE USER MAPPING FOR app_writer SERVER remote_srv OPTIONS (user 'remote');
CREATE FOREIGN TABLE app.remote_orders (id bigint, total numeric) SERVER remote_srv;
CREATE PUBLICATION orders_pub FOR TABLE app.orders, app.customers;
SELECT lo_create(4242);
COMMENT ON LARGE OBJECT 4242 IS 'an attachment';
"""

PSQL_COMMANDS = [
    r"\d",
    r"\d+",
    r"\d app.*",
    r"\d app.customers",
    r"\d+ app.customers",
    r"\d app.orders",
    r"\d+ app.orders",
    r"\d+ app.order_items",
    r"\d app.events",
    r"\d+ app.events",
    r"\d+ app.events_2024",
    r"\d app.open_orders",
    r"\d+ app.open_orders",
    r"\d+ app.daily_totals",
    r"\d app.orders_pkey",
    r"\d+ app.orders_open_idx",
    r"\d app.invoice_no",
    r"\d app.orders_id_seq",
    r"\d app.money_pair",
    r"\d+ app.remote_orders",
    r"\dt",
    r"\dt+",
    r"\dt app.*",
    r"\dt+ app.*",
    r"\dtS pg_class",
    r"\dv",
    r"\dv app.*",
    r"\dv+ app.*",
    r"\dm app.*",
    r"\di",
    r"\di app.*",
    r"\di+ app.*",
    r"\ds",
    r"\ds app.*",
    r"\ds+ app.*",
    r"\dE app.*",
    r"\df",
    r"\df app.*",
    r"\df+ app.*",
    r"\dfa app.*",
    r"\dfn app.*",
    r"\dfp app.*",
    r"\dft app.*",
    r"\df app.order_total",
    r"\da app.*",
    r"\dn",
    r"\dn+",
    r"\du",
    r"\du+",
    r"\dg",
    r"\drds",
    r"\dT",
    r"\dT app.*",
    r"\dT+ app.*",
    r"\dD app.*",
    r"\dD+ app.*",
    r"\dx",
    r"\dx+ vector",
    r"\l",
    r"\l+",
    r"\dp",
    r"\dp app.*",
    r"\z app.orders",
    r"\ddp",
    r"\dd",
    r"\dd app.*",
    r"\dc",
    r"\dc+",
    r"\dC",
    r"\dC app.*",
    r"\do app.*",
    r"\dO app.*",
    r"\dO+",
    r"\dF",
    r"\dF+ app.english_simple",
    r"\dFd",
    r"\dFp",
    r"\dFt",
    r"\des",
    r"\des+",
    r"\dew",
    r"\dew+",
    r"\det",
    r"\deu",
    r"\deu+",
    r"\dy",
    r"\dy+",
    r"\dconfig",
    r"\dconfig work_mem",
    r"\dconfig+ *log*",
    r"\dX",
    r"\dP",
    r"\dP+",
    r"\dA",
    r"\dA+",
    r"\dAc btree",
    r"\dAf hash",
    r"\dAo btree int4_ops",
    r"\dAp btree int4_ops",
    r"\db",
    r"\db+",
    r"\dL",
    r"\dRp",
    r"\dRp+",
    r"\dRs",
    r"\dl",
    r"\lo_list",
    r"\sf app.order_total",
    r"\sf+ app.touch",
    r"\sf app.cancel",
    r"\sv app.open_orders",
    r"\sv+ app.open_orders",
]

_QUERY_BLOCK = re.compile(
    # psql <= 15: "********* QUERY **********"; psql >= 16: "/******** QUERY *********/"
    r"^(?:\*{9} QUERY \*{10}|/\*{8} QUERY \*{9}/)\n(?P<sql>.*?)\n(?:\*{26}|/\*{24}/)\n",
    re.S | re.M,
)


def extract_echo_hidden(text: str) -> list[str]:
    return [m["sql"] for m in _QUERY_BLOCK.finditer(text)]


def main() -> int:
    psql_version = tool_version(["psql", "--version"])
    with embedded_pg(log_all=False) as pg:
        srv_version = server_version(pg)
        pg.psql(SCHEMA_SQL)
        logfile = pg.workdir / "psql_echo.log"
        script = "\n".join(PSQL_COMMANDS) + "\n"
        res = subprocess.run(
            [
                "psql",
                "-X",
                "-E",
                "-L",
                str(logfile),
                "-o",
                "/dev/null",
                "-P",
                "pager=off",
                pg.dsn(application_name="psql"),
            ],
            input=script,
            text=True,
            capture_output=True,
            check=False,
            env={**os.environ, "PAGER": "cat", "LC_ALL": "C"},
        )
        if res.stderr.strip():
            print("psql stderr:\n" + res.stderr, file=sys.stderr)
        statements = extract_echo_hidden(logfile.read_text(encoding="utf-8"))
    if not statements:
        print("no queries captured", file=sys.stderr)
        return 1
    source = (
        f"Captured with scripts/gen_corpus_psql.py: {psql_version} run with -X -E -L against a "
        f"throwaway PostgreSQL {srv_version} started by the pgserver package, after creating a small "
        "schema (schema app with enum/composite/domain types, a sequence, tables with identity/PK/FK/"
        "unique/check/partial and GIN indexes, a range-partitioned table, a view, a materialized view, "
        "SQL and plpgsql functions, a procedure, an aggregate, a trigger, an event trigger, a rule, RLS "
        "policy, extended statistics, a libc collation, a text search config, a cast, an operator, a "
        "dummy FDW/server/user mapping/foreign table, a publication, a large object, the pgvector "
        "extension, roles and grants). psql ran these backslash commands: "
        + " ".join(PSQL_COMMANDS)
        + " . Each statement is the exact text psql echoed between its QUERY markers (ECHO_HIDDEN); "
        "identical texts are kept once, in first-seen order."
    )
    write_corpus("psql_describe", source, statements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
