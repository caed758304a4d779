"""The proxy's own upstream login against a throwaway PostgreSQL with one pg_hba line per method (trust,
cleartext password, md5, SCRAM-SHA-256) and ``ssl=on``: each ``sslmode`` of the target (disable, prefer,
require, verify-full), and the failures a client sees as a clear FATAL naming the target, never the
gateway's credential."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.devtools.embedded import EmbeddedPostgres, start_embedded
from support.cases import load_public_cases
from support.wire import Keys, RunningProxy, config_data

PG15 = Path("/usr/lib/postgresql/15/bin")  # built with OpenSSL; pgserver's PostgreSQL has no TLS
pytestmark = pytest.mark.skipif(not (PG15 / "postgres").exists(), reason="needs PostgreSQL 15 with TLS in " + str(PG15))

PASSWORDS = {"u_plain": "plain-" + secrets.token_hex(6), "u_md5": "md5-" + secrets.token_hex(6),
             "u_scram": "scram-" + secrets.token_hex(6), "u_tls": "tls-" + secrets.token_hex(6)}

HBA = """
local all all trust
host all postgres 127.0.0.1/32 trust
host all u_trust 127.0.0.1/32 trust
host all u_plain 127.0.0.1/32 password
host all u_md5 127.0.0.1/32 md5
host all u_scram 127.0.0.1/32 scram-sha-256
hostssl all u_tls 127.0.0.1/32 scram-sha-256
hostnossl all u_notls 127.0.0.1/32 trust
"""


@pytest.fixture(scope="module")
def upstream_pg(tls_files) -> Iterator[EmbeddedPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="pgw-upauth-"))
    try:
        server = start_embedded(directory, tcp_port=0, hba=HBA, tls=(tls_files.cert_pem, tls_files.key_pem),
                                bin_dir=PG15)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE cases")
            for role in ("u_trust", "u_notls"):
                admin.execute(f"CREATE ROLE {role} LOGIN")
            for role, password in PASSWORDS.items():
                admin.execute(f"SET password_encryption = '{'md5' if role == 'u_md5' else 'scram-sha-256'}'")
                admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        with psycopg.connect(server.dsn("cases"), autocommit=True) as db:
            db.execute(load_public_cases().fixture_sql.encode())
            db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC")
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def proxy_for(upstream_pg: EmbeddedPostgres, wire_dir: Path, keys: Keys, role: str, query: str = "",
              password: str | None = None) -> RunningProxy:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    dsn = f"postgresql://{role}@127.0.0.1:{upstream_pg.port}/cases{query}"
    data = config_data(dsn, wire_dir, keys)
    secret = password if password is not None else PASSWORDS.get(role)
    if secret is not None:
        name = f"PGW_TEST_UPSTREAM_{role.upper()}_{secrets.token_hex(3)}"
        os.environ[name] = secret
        data["targets"]["main"]["password"] = {"env": name}
    data["targets"]["main"]["connect_timeout"] = 5000
    return RunningProxy(data, wire_dir)


def upstream_ssl(upstream_pg: EmbeddedPostgres, role: str) -> list[bool]:
    """Whether each of the proxy's sessions of ``role`` upstream runs over TLS (seen from the server)."""
    with psycopg.connect(upstream_pg.dsn(), autocommit=True) as admin:
        return [r[0] for r in admin.execute(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.usename = %s AND a.application_name = 'pgwarden:agent'", [role])]


@pytest.mark.parametrize(("role", "sslmode", "tls"), [
    ("u_trust", "disable", False),
    ("u_plain", "disable", False),  # cleartext password
    ("u_md5", "disable", False),
    ("u_scram", "disable", False),
    ("u_scram", "require", True),
    ("u_tls", "prefer", True),  # hostssl only: prefer must have used TLS
    ("u_tls", "require", True),
    ("u_notls", "disable", False),  # hostnossl only
    ("u_tls", "verify-full", True),
    ("u_tls", "verify-ca", True),
    ("u_tls", "require&sslrootcert={root}", True),
    ("u_tls", "require&channel_binding=require", True),  # SCRAM-SHA-256-PLUS upstream
    ("u_scram", "disable&require_auth=scram-sha-256", False),
    ("u_md5", "disable&require_auth=!password,!none", False),
])
def test_upstream_login_and_sslmode(upstream_pg, wire_dir, keys, tls_files, role, sslmode, tls) -> None:
    query = f"?sslmode={sslmode}".format(root=tls_files.cert) + (
        f"&sslrootcert={tls_files.cert}" if sslmode.startswith("verify") else "")
    proxy = proxy_for(upstream_pg, wire_dir, keys, role, query)
    try:
        with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
            assert conn.execute("SELECT current_user, card_number FROM customers WHERE id = 1").fetchone() == (
                role, "************1111")
            assert upstream_ssl(upstream_pg, role) == [tls]
    finally:
        proxy.close()


@pytest.mark.parametrize(("role", "query", "password", "sqlstate", "words"), [
    ("u_md5", "?sslmode=disable", "wrong", "28P01", "password authentication failed"),
    ("u_scram", "?sslmode=disable", "wrong", "28P01", "password authentication failed"),
    ("u_plain", "?sslmode=disable", "wrong", "28P01", "password authentication failed"),
    ("u_tls", "?sslmode=disable", None, "28000", "no pg_hba.conf entry"),
    ("u_notls", "?sslmode=require", None, "28000", "no pg_hba.conf entry"),
    ("u_tls", "?sslmode=verify-full&sslrootcert={other}", None, "08006", "certificate verify failed"),
    ("u_tls", "?sslmode=require&sslrootcert={other}", None, "08006", "certificate verify failed"),
    ("u_tls", "?sslmode=verify-ca&sslrootcert={other}", None, "08006", "certificate verify failed"),
    ("u_scram", "?sslmode=disable", "", "08006", "the gateway's credential for it cannot be read"),
    ("u_scram", "?sslmode=disable&channel_binding=require", None, "28000", "channel_binding=require"),
    ("u_trust", "?sslmode=require&channel_binding=require", None, "28000", "channel_binding=require"),
    ("u_plain", "?sslmode=disable&require_auth=scram-sha-256", None, "28000", "require_auth=scram-sha-256"),
    ("u_trust", "?sslmode=disable&require_auth=md5", None, "28000", "require_auth=md5"),
    ("u_tls", "?sslmode=verify_full", None, "08006", "sslmode='verify_full' is not one of"),
    ("u_tls", "?channel_binding=always", None, "08006", "channel_binding='always' is not"),
])
def test_upstream_login_failure_is_a_clear_fatal(upstream_pg, wire_dir, keys, make_tls, role, query, password,
                                                 sqlstate, words) -> None:
    if "{other}" in query:
        query = query.format(other=make_tls("other-ca").cert)
    proxy = proxy_for(upstream_pg, wire_dir, keys, role, query, password)
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(proxy.dsn(keys.token()), connect_timeout=20)
        text = str(info.value)
        assert "pgwarden: target 'main' is unavailable" in text and words in text, text
        for secret in PASSWORDS.values():
            assert secret not in text
        assert info.value.sqlstate in (None, sqlstate)
        with psycopg.connect(upstream_pg.dsn(), autocommit=True):
            pass
    finally:
        proxy.close()


def test_upstream_without_tls_when_require(wire_dir, keys, pg_admin_dsn, cases_db_module) -> None:
    """The development server has no TLS: a target with sslmode=require is refused, not downgraded."""
    with psycopg.connect(pg_admin_dsn) as probe:
        if probe.execute("SHOW ssl").fetchone() == ("on",):
            pytest.skip("the test server has TLS on")
    host = psycopg.conninfo.conninfo_to_dict(cases_db_module).get("host") or ""
    if not host or str(host).startswith("/"):
        pytest.skip("the test server is reached over a Unix socket, where sslmode does not apply (as in libpq)")
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    dsn = psycopg.conninfo.make_conninfo(cases_db_module, sslmode="require")
    proxy = RunningProxy(config_data(dsn, wire_dir, keys), wire_dir)
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(proxy.dsn(keys.token()))
        assert "refused TLS, which its sslmode=require requires" in str(info.value)
    finally:
        proxy.close()


def test_target_restart(upstream_pg, wire_dir, keys, tls_files) -> None:
    """The target stops under a session and comes back: the session ends with a clear error, a client
    while it is down is told the target is unavailable, and the proxy serves again once it is up."""
    proxy = proxy_for(upstream_pg, wire_dir, keys, "u_scram", "?sslmode=require")
    try:
        with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            upstream_pg.stop()
            try:
                with pytest.raises(psycopg.OperationalError) as info:
                    conn.execute("SELECT 1")
                text = str(info.value)
                assert "terminating connection due to administrator command" in text or "lost" in text, text
                with pytest.raises(psycopg.OperationalError) as down:
                    psycopg.connect(proxy.dsn(keys.token()), connect_timeout=20)
                assert "pgwarden: target 'main' is unavailable: could not connect" in str(down.value)
            finally:
                start_embedded(upstream_pg.directory, tcp_port=upstream_pg.port, hba=HBA,
                               tls=(tls_files.cert_pem, tls_files.key_pem), bin_dir=PG15)
        with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("u_scram",)
    finally:
        proxy.close()
