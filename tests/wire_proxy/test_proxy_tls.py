"""TLS to the proxy with real clients: SSLRequest (psycopg, psql, asyncpg), direct TLS (libpq 17+
``sslnegotiation=direct``, and Python's ssl with a hand-built StartupMessage), ALPN, the cleartext token
refused off loopback without TLS, and the malformed or unexpected TLS openings."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from pgwarden.wire_proxy import FrameReader, PasswordMessage, Query, StartupMessage, encode
from pgwarden.wire_proxy.server import _loopback
from support.wire import Keys, RunningProxy, config_data

PSQL = shutil.which("psql") or "/usr/bin/psql"
SSL_REQUEST = struct.pack("!II", 8, 80877103)


@pytest.fixture(scope="module")
def tls_proxy(cases_db_module: str, wire_dir: Path, keys: Keys, tls_files) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    # every address: a client reaching the machine's own non-loopback address arrives from off loopback
    p = RunningProxy(config_data(cases_db_module, wire_dir, keys, proxy={
        "listen": "0.0.0.0:0", "tls_cert": str(tls_files.cert), "tls_key": str(tls_files.key)}), wire_dir)
    yield p
    p.close()


def conninfo(proxy: RunningProxy, token: str, host: str = "127.0.0.1", **extra: str) -> str:
    return proxy.dsn(token, **extra).replace("host='127.0.0.1'", f"host='{host}'")


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    reader = FrameReader(1 << 24)
    reader.feed(data)
    return [(f.type, bytes(f.payload)) for f in reader]


def read_all(sock, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return out
        if not data:
            return out
        out += data


def proxy_still_serves(proxy: RunningProxy, keys: Keys) -> None:
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        assert conn.execute("SELECT 7").fetchone() == (7,)


# ---- SSLRequest with real clients ---------------------------------------------------------------------


def test_psycopg_sslmode_require_runs_a_masked_query(tls_proxy: RunningProxy, keys: Keys, tls_files) -> None:
    dsn = tls_proxy.dsn(keys.token(), sslmode="verify-full", sslrootcert=str(tls_files.cert))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT card_number FROM customers WHERE id = 1").fetchone() == ("************1111",)


@pytest.mark.skipif(psycopg.pq.version() < 170000, reason="sslnegotiation=direct needs libpq 17")
def test_psycopg_direct_tls_with_alpn(tls_proxy: RunningProxy, keys: Keys, tls_files) -> None:
    dsn = tls_proxy.dsn(keys.token(), sslmode="verify-full", sslrootcert=str(tls_files.cert),
                        sslnegotiation="direct")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)


@pytest.mark.parametrize("version", ["3.0", "3.2"])
def test_cancel_over_tls_with_protocol_3_0_and_3_2(tls_proxy: RunningProxy, keys: Keys, version: str) -> None:
    # libpq 17+ opens its cancel connection with TLS too: the CancelRequest arrives inside a TLS session
    extra = {"max_protocol_version": version, "min_protocol_version": version} \
        if psycopg.pq.version() >= 180000 else {}
    if version == "3.2" and not extra:
        pytest.skip("protocol 3.2 needs libpq 18")
    with psycopg.connect(tls_proxy.dsn(keys.token(), sslmode="require", **extra), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        if extra:
            assert conn.pgconn.full_protocol_version == (30002 if version == "3.2" else 30000)
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < 5
        assert conn.execute("SELECT 5").fetchone() == (5,)


def test_psql_sslmode_require(tls_proxy: RunningProxy, keys: Keys) -> None:
    dsn = tls_proxy.dsn(keys.token(), sslmode="require")
    out = subprocess.run([PSQL, dsn, "-XAtc", "SELECT 'over tls'"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "over tls"


def test_asyncpg_with_ssl_context(tls_proxy: RunningProxy, keys: Keys, tls_files) -> None:
    async def run() -> object:
        ctx = ssl.create_default_context(cafile=str(tls_files.cert))
        conn = await asyncpg.connect(host="127.0.0.1", port=tls_proxy.port, user="agent", password=keys.token(),
                                     database="main", ssl=ctx)
        try:
            return await conn.fetchval("SELECT id FROM customers WHERE id = 1")
        finally:
            await conn.close()

    assert asyncio.run(run()) == 1


def test_direct_tls_by_hand_with_alpn_postgresql(tls_proxy: RunningProxy, keys: Keys, tls_files) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_files.cert))
    ctx.set_alpn_protocols(["postgresql"])
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        kind, payload = frames_of(tls.recv(65536))[0]
        assert (kind, payload[:4]) == (ord("R"), b"\0\0\0\x03")  # cleartext password: safe inside TLS
        tls.sendall(encode(PasswordMessage(keys.token().encode() + b"\0")))
        got = b""
        while not got.endswith(b"Z\0\0\0\x05I"):
            got += tls.recv(65536)
        tls.sendall(encode(Query("SELECT 'direct'")))
        got = b""
        while not got.endswith(b"Z\0\0\0\x05I"):
            got += tls.recv(65536)
        rows = [p for k, p in frames_of(got) if k == ord("D")]
        assert rows and rows[0].endswith(b"direct")


@pytest.mark.parametrize("alpn", [None, ["http/1.1"]])
def test_direct_tls_without_alpn_postgresql_is_refused(tls_proxy: RunningProxy, keys: Keys, alpn) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname="localhost")
        except ssl.SSLError:
            data = b""  # an alert during the handshake is a refusal too
        else:
            assert tls.selected_alpn_protocol() is None
            tls.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
            data = read_all(tls)
    if data:
        (kind, payload), = frames_of(data)
        assert kind == ord("E") and b"C08P01" in payload and b"ALPN" in payload
    proxy_still_serves(tls_proxy, keys)


# ---- cleartext tokens off loopback --------------------------------------------------------------------


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.0.9", True), ("::1", True), ("/tmp/.s.PGSQL.6432", True),
    ("", True), ("192.0.2.2", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("fd00::2", False),
    ("0.0.0.0", False), ("::ffff:127.0.0.1", True), ("::ffff:127.1.2.3", True), ("::ffff:0.0.0.0", False),
    ("fe80::1%eth0", False), ("::", False), ("not-an-address", False),
])
def test_loopback_decision(address: str, loopback: bool) -> None:
    assert _loopback(address) is loopback


def _dual_stack() -> bool:
    """Whether an IPv6 listener on :: here also accepts IPv4 clients (IPv6 present, bindv6only off)."""
    try:
        with socket.create_server(("::", 0)) as server, \
                socket.create_connection(("127.0.0.1", server.getsockname()[1]), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _dual_stack(), reason="this machine has no IPv6 socket to listen on")
def test_ipv4_loopback_client_of_a_dual_stack_listener_may_send_a_token(cases_db_module: str, tmp_path: Path,
                                                                         keys: Keys) -> None:
    # On "[::]:port" an IPv4 client's address arrives as ::ffff:127.0.0.1: still loopback.
    # (its own journal and approvals store: the module's proxy keeps writing to wire_dir's)
    p = RunningProxy(config_data(cases_db_module, tmp_path, keys, proxy={"listen": "[::]:0"}), tmp_path)
    try:
        with psycopg.connect(p.dsn(keys.token()), autocommit=True) as conn:
            assert conn.execute("SELECT 7").fetchone() == (7,)
    finally:
        p.close()


def test_token_off_loopback_needs_tls(tls_proxy: RunningProxy, keys: Keys, non_loopback: str | None) -> None:
    if non_loopback is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    token = keys.token()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(conninfo(tls_proxy, token, non_loopback), autocommit=True)
    assert "needs TLS off loopback" in str(info.value)
    assert token not in str(info.value)
    dsn = conninfo(tls_proxy, token, non_loopback, sslmode="verify-full") + \
        f" sslrootcert='{tls_proxy.config.proxy.tls_cert}'"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT inet_client_addr() IS NOT NULL, 5").fetchone()[1] == 5


def test_token_off_loopback_refused_before_the_password_is_asked(tls_proxy: RunningProxy, keys: Keys,
                                                                   non_loopback: str | None) -> None:
    if non_loopback is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    with socket.create_connection((non_loopback, tls_proxy.port), timeout=10) as sock:
        sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        (kind, payload), = frames_of(read_all(sock))
    assert kind == ord("E") and b"C28000" in payload and b"sslmode=require" in payload


# ---- malformed and unexpected openings ----------------------------------------------------------------


def test_bytes_after_ssl_request_before_the_answer(tls_proxy: RunningProxy, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST + encode(StartupMessage({"user": "agent", "database": "main"})))
        data = read_all(sock)
    (kind, payload), = frames_of(data)  # in the clear: nothing was encrypted yet
    assert kind == ord("E") and b"C08P01" in payload and b"after SSL request" in payload
    proxy_still_serves(tls_proxy, keys)


def test_garbage_instead_of_a_client_hello_after_s(tls_proxy: RunningProxy, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"S"
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f" * 4)
        data = read_all(sock)
    assert b"SFATAL" not in data or data[:1] == b"\x15"  # a TLS alert at most; never a readable leak
    proxy_still_serves(tls_proxy, keys)


def test_ssl_request_gets_n_when_tls_is_off(proxy: RunningProxy, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(1) == b"N"
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn(keys.token(), sslmode="require"))
    assert "SSL" in str(info.value)
    with psycopg.connect(proxy.dsn(keys.token(), sslmode="prefer"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_direct_tls_when_tls_is_off_is_closed_silently(proxy: RunningProxy, keys: Keys) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])
    incoming = ssl.MemoryBIO()
    outgoing = ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(hello)
        assert read_all(sock) == b""  # closed: no cleartext error a TLS client would misread
    assert time.monotonic() - started < 5
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn(keys.token(), sslmode="require", sslnegotiation="direct"), connect_timeout=5)
    proxy_still_serves(proxy, keys)


def test_gssenc_request_gets_n_then_startup_proceeds(tls_proxy: RunningProxy, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        sock.sendall(struct.pack("!II", 8, 80877104))
        assert sock.recv(1) == b"N"
        sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        kind, payload = frames_of(sock.recv(65536))[0]
        assert (kind, payload[:4]) == (ord("R"), b"\0\0\0\x03")


# ---- bad TLS configuration: the proxy refuses to start, saying why -----------------------------------


@pytest.mark.parametrize(("settings", "words"), [
    ({"tls_key": "{key}"}, "tls_key is set without proxy.tls_cert"),
    ({"tls_cert": "{dir}/missing.crt", "tls_key": "{key}"}, "cannot be loaded"),
    ({"tls_cert": "{key}", "tls_key": "{cert}"}, "cannot be loaded"),  # swapped
    ({"tls_cert": "{cert}", "tls_key": "{other_key}"}, "cannot be loaded"),  # a key of another certificate
    ({"tls_cert": "{cert}"}, "cannot be loaded"),  # the key is not in the certificate file
])
def test_bad_tls_configuration_refuses_to_start(wire_dir: Path, keys: Keys, tls_files, make_tls, settings,
                                                words) -> None:
    import types

    import yaml

    from pgwarden.engine.config import parse_config
    from pgwarden.engine.errors import GatewayError
    from pgwarden.wire_proxy.server import ProxyServer

    other = make_tls("unrelated")
    values = {"key": str(tls_files.key), "cert": str(tls_files.cert), "dir": str(wire_dir),
              "other_key": str(other.key)}
    proxy = {k: v.format(**values) for k, v in settings.items()}
    config = parse_config(yaml.safe_dump(config_data("postgresql://x@127.0.0.1/x", wire_dir, keys, proxy=proxy)),
                          "test")
    with pytest.raises(GatewayError) as info:
        ProxyServer(types.SimpleNamespace(config=config))
    assert words in info.value.message
    assert tls_files.key_pem.decode() not in info.value.message
