"""Service users (SCRAM-SHA-256 verifiers in the configuration) with real clients: SCRAM-SHA-256-PLUS with
channel binding ``tls-server-end-point`` under TLS (libpq ``channel_binding=require``), plain SCRAM-SHA-256
without TLS, wrong passwords, the downgrade flag and a channel binding for another certificate refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from scramp import ScramClient

from pgwarden.wire_proxy import FrameReader, SASLInitialResponse, SASLResponse, StartupMessage, encode
from pgwarden.wire_proxy.server import make_verifier
from support.wire import Keys, RunningProxy, config_data

PSQL = shutil.which("psql") or "/usr/bin/psql"
PASSWORD = "correct horse battery staple"
SSL_REQUEST = struct.pack("!II", 8, 80877103)


@pytest.fixture(scope="module")
def scram_proxy(cases_db_module: str, wire_dir: Path, keys: Keys, tls_files) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    os.environ["PGW_TEST_REPORTER_VERIFIER"] = make_verifier(PASSWORD)
    p = RunningProxy(config_data(cases_db_module, wire_dir, keys, proxy={
        "tls_cert": str(tls_files.cert), "tls_key": str(tls_files.key),
        "service_users": [{"name": "reporter", "verifier": {"env": "PGW_TEST_REPORTER_VERIFIER"},
                           "subject": "svc-reporter", "groups": ["ai-agents"]}]}), wire_dir)
    yield p
    p.close()


def service_dsn(proxy: RunningProxy, password: str = PASSWORD, **extra: str) -> str:
    return proxy.dsn(password, user="reporter", **extra)


def test_scram_sha_256_plus_with_channel_binding_required(scram_proxy: RunningProxy, tls_files) -> None:
    dsn = service_dsn(scram_proxy, sslmode="verify-full", sslrootcert=str(tls_files.cert), channel_binding="require")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        # the service user acts as its principal: the agents' rule and masks apply
        assert conn.execute("SELECT card_number FROM customers WHERE id = 1").fetchone() == ("************1111",)
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("pgwarden:svc-reporter",)


def test_psql_with_channel_binding_required(scram_proxy: RunningProxy) -> None:
    out = subprocess.run([PSQL, service_dsn(scram_proxy, sslmode="require", channel_binding="require"),
                          "-XAtc", "SELECT 'bound'"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bound"


def test_plain_scram_without_tls(scram_proxy: RunningProxy) -> None:
    with psycopg.connect(service_dsn(scram_proxy, sslmode="disable"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # libpq itself refuses when the server offers no channel binding and the client requires it
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(service_dsn(scram_proxy, sslmode="disable", channel_binding="require"))
    assert "channel binding" in str(info.value)


def test_plain_scram_under_tls_when_the_client_does_not_bind(scram_proxy: RunningProxy) -> None:
    with psycopg.connect(service_dsn(scram_proxy, sslmode="require", channel_binding="disable"),
                         autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 2").fetchone() == (2,)


@pytest.mark.parametrize("extra", [{"sslmode": "disable"}, {"sslmode": "require", "channel_binding": "require"}])
def test_wrong_password_is_28p01(scram_proxy: RunningProxy, extra: dict) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(service_dsn(scram_proxy, "wrong password", **extra))
    assert "password authentication failed for user 'reporter'" in str(info.value)
    assert info.value.sqlstate in (None, "28P01")


# ---- by hand: what libpq would never send --------------------------------------------------------


class TlsSasl:
    """A TLS connection to the proxy up to the SASL request (mechanisms offered)."""

    def __init__(self, port: int) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.frames = FrameReader(1 << 20)
        self.sock.sendall(encode(StartupMessage({"user": "reporter", "database": "main"})))
        kind, payload = self.next()
        assert kind == ord("R") and payload[:4] == struct.pack("!I", 10)
        self.mechanisms = [x.decode() for x in payload[4:].split(b"\0") if x]

    def next(self) -> tuple[int, bytes]:
        while True:
            frame = self.frames.next_frame()
            if frame is not None:
                return frame.type, bytes(frame.payload)
            data = self.sock.recv(65536)
            if not data:
                return 0, b""
            self.frames.feed(data)

    def close(self) -> None:
        self.sock.close()


def test_plus_is_offered_first_under_tls(scram_proxy: RunningProxy) -> None:
    c = TlsSasl(scram_proxy.port)
    try:
        assert c.mechanisms == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
    finally:
        c.close()


def test_downgrade_flag_y_under_tls_is_refused(scram_proxy: RunningProxy) -> None:
    # 'y': "I can bind, but I think you cannot" — the server offered PLUS, so someone stripped it
    c = TlsSasl(scram_proxy.port)
    try:
        client = ScramClient(["SCRAM-SHA-256"], "reporter", PASSWORD, channel_binding=("tls-server-end-point",
                                                                                      b"\x01" * 32))
        first = client.get_client_first()
        assert first.startswith("y,,")
        c.sock.sendall(encode(SASLInitialResponse("SCRAM-SHA-256", first.encode())))
        kind, payload = c.next()
        assert kind == ord("E") and b"C28P01" in payload
    finally:
        c.close()


def test_channel_binding_to_another_certificate_is_refused(scram_proxy: RunningProxy, make_tls) -> None:
    # a man in the middle terminating TLS with its own certificate: the client binds to that certificate
    other = make_tls("mitm")
    der = ssl.PEM_cert_to_DER_cert(other.cert_pem.decode())
    c = TlsSasl(scram_proxy.port)
    try:
        client = ScramClient(["SCRAM-SHA-256-PLUS"], "reporter", PASSWORD,
                             channel_binding=("tls-server-end-point", hashlib.sha256(der).digest()))
        c.sock.sendall(encode(SASLInitialResponse("SCRAM-SHA-256-PLUS", client.get_client_first().encode())))
        kind, payload = c.next()
        assert kind == ord("R")
        client.set_server_first(payload[4:].decode())
        c.sock.sendall(encode(SASLResponse(client.get_client_final().encode())))
        kind, payload = c.next()
        assert kind == ord("E") and b"C28P01" in payload
    finally:
        c.close()


def test_plus_with_the_right_binding_by_hand(scram_proxy: RunningProxy, tls_files) -> None:
    der = ssl.PEM_cert_to_DER_cert(tls_files.cert_pem.decode())
    c = TlsSasl(scram_proxy.port)
    try:
        client = ScramClient(["SCRAM-SHA-256-PLUS"], "reporter", PASSWORD,
                             channel_binding=("tls-server-end-point", hashlib.sha256(der).digest()))
        c.sock.sendall(encode(SASLInitialResponse("SCRAM-SHA-256-PLUS", client.get_client_first().encode())))
        client.set_server_first(c.next()[1][4:].decode())
        c.sock.sendall(encode(SASLResponse(client.get_client_final().encode())))
        kind, payload = c.next()
        assert (kind, payload[:4]) == (ord("R"), struct.pack("!I", 12))  # SASLFinal
        client.set_server_final(payload[4:].decode())  # the server proved it knows the verifier
        assert c.next() == (ord("R"), struct.pack("!I", 0))
    finally:
        c.close()


@pytest.mark.parametrize(("mechanism", "flag"), [("SCRAM-SHA-256", "p=tls-server-end-point"),
                                                 ("SCRAM-SHA-256-PLUS", "n"), ("SCRAM-SHA-1", "n")])
def test_mechanism_and_flag_must_agree(scram_proxy: RunningProxy, mechanism: str, flag: str) -> None:
    c = TlsSasl(scram_proxy.port)
    try:
        c.sock.sendall(encode(SASLInitialResponse(mechanism, f"{flag},,n=,r=abcdefghijklmnop".encode())))
        kind, payload = c.next()
        assert kind == ord("E") and b"C28000" in payload
    finally:
        c.close()


# ---- bad service-user configuration ----------------------------------------------------------------


@pytest.mark.parametrize(("verifier", "words"), [
    (None, "is not set"),
    ("md5abcdef0123456789", "the verifier is not"),
    ("SCRAM-SHA-256$4096:c2FsdA==$notbase64!:notbase64!", "the verifier is not"),
    ("SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=", "the verifier is not"),  # keys too short
    ("SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=", "the verifier is not"),
])
def test_bad_verifier_refuses_to_start(wire_dir: Path, keys: Keys, verifier: str | None, words: str) -> None:
    import types

    import yaml

    from pgwarden.engine.config import parse_config
    from pgwarden.engine.errors import GatewayError
    from pgwarden.wire_proxy.server import ProxyServer

    name = "PGW_TEST_BAD_VERIFIER"
    os.environ.pop(name, None)
    if verifier is not None:
        os.environ[name] = verifier
    data = config_data("postgresql://x@127.0.0.1/x", wire_dir, keys, proxy={"service_users": [
        {"name": "tool", "verifier": {"env": name}, "subject": "svc-tool"}]})
    with pytest.raises(GatewayError) as info:
        ProxyServer(types.SimpleNamespace(config=parse_config(yaml.safe_dump(data), "test")))
    assert "proxy.service_users 'tool'" in info.value.message and words in info.value.message
    if verifier:
        assert verifier not in info.value.message


def test_verifier_removed_after_start_refuses_the_login(scram_proxy: RunningProxy, keys: Keys) -> None:
    saved = os.environ.pop("PGW_TEST_REPORTER_VERIFIER")
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(service_dsn(scram_proxy, sslmode="disable"))
        assert "password authentication failed for user 'reporter'" in str(info.value)
    finally:
        os.environ["PGW_TEST_REPORTER_VERIFIER"] = saved
    with psycopg.connect(service_dsn(scram_proxy, sslmode="disable"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
