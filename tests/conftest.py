"""Shared fixtures: one real PostgreSQL per test session, a fresh database per test.

``PGWARDEN_TEST_DSN`` (a superuser DSN, PostgreSQL 13+) points the suite at an
existing server; otherwise an embedded one (``pgwarden.devtools.embedded``) is
started in a temp directory and stopped at session end. Tests get their own
database, created from ``template0`` under a unique name (so several sessions
can share one server) and dropped ``WITH (FORCE)`` afterwards, which also ends
connections a test forgot to close. DSNs handed to tests are plain libpq
conninfo strings: pass them to ``psycopg.connect``, psql or pgbench.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgwarden.devtools.embedded import EmbeddedPostgres, start_embedded
from support.cases import PublicCases, load_public_cases

_db_names = itertools.count(1)


def _with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def _create_database(admin_dsn: str, prefix: str = "pgw_test") -> tuple[str, str]:
    """Create an empty database; return its name and DSN."""
    # pid + counter keep names unique within a run, the random part across runs sharing one server.
    name = f"{prefix}_{os.getpid()}_{next(_db_names)}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return name, _with_dbname(admin_dsn, name)


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_setup(dsn: str, setup_sql: str) -> None:
    if setup_sql.strip():
        # No parameters, so psycopg sends the text as one simple query: several statements are fine.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(setup_sql.encode())  # bytes: runtime text is not a LiteralString


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres | None]:
    """The embedded server this session started, or None when ``PGWARDEN_TEST_DSN`` is used."""
    if os.environ.get("PGWARDEN_TEST_DSN"):
        yield None
        return
    # Not tmp_path_factory: its base dir is mode 0700 and long; the server (user "pgserver" under root)
    # must traverse the path, and the socket path must stay under ~100 bytes.
    directory = Path(tempfile.mkdtemp(prefix="pgwarden-test-pg-"))
    server = start_embedded(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_dsn(pg_server: EmbeddedPostgres | None) -> str:
    """A superuser DSN for the session's server (connects to its maintenance database)."""
    external = os.environ.get("PGWARDEN_TEST_DSN")
    if external:
        return external
    assert pg_server is not None
    return pg_server.dsn()


def _database_factory(admin_dsn: str) -> Iterator[Callable[[str], str]]:
    names: list[str] = []

    def make(setup_sql: str = "") -> str:
        name, dsn = _create_database(admin_dsn)
        names.append(name)
        _run_setup(dsn, setup_sql)
        return dsn

    yield make
    for name in names:
        _drop_database(admin_dsn, name)


@pytest.fixture
def make_db(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    """A factory: ``make_db(setup_sql)`` creates a new database, runs ``setup_sql`` in it, returns its DSN.

    Every database it made is dropped when the test ends.
    """
    yield from _database_factory(pg_admin_dsn)


@pytest.fixture(scope="module")
def make_db_module(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    """:func:`make_db` whose databases live until the test module ends (for read-only sharing)."""
    yield from _database_factory(pg_admin_dsn)


@pytest.fixture
def fresh_db(make_db: Callable[[str], str]) -> str:
    """The DSN of a new, empty database of this test's own (dropped afterwards)."""
    return make_db("")


@pytest.fixture(scope="session")
def public_cases() -> PublicCases:
    return load_public_cases()


@pytest.fixture(scope="session")
def public_cases_db(pg_admin_dsn: str, public_cases: PublicCases) -> Iterator[str]:
    """A database seeded with the public cases' ``fixture_sql`` and ANALYZEd, shared by the session.

    Treat it as read-only (run writes in a transaction you roll back); for a database to change,
    use ``make_db(public_cases.fixture_sql)``.
    """
    name, dsn = _create_database(pg_admin_dsn, prefix="pgw_cases")
    try:
        # ANALYZE matters: the statistics bypass class reads pg_stats, which is empty until then.
        _run_setup(dsn, public_cases.fixture_sql + "\nANALYZE;")
        yield dsn
    finally:
        _drop_database(pg_admin_dsn, name)
