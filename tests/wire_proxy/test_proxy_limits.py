"""Limits and timeouts with real sockets and clients (startup_timeout, idle_timeout, max_connections,
max_connections_per_principal, max_message_size), malformed start-up bytes, and the target down at
connect or killed mid-session: each ends that one client with a clear FATAL and the proxy keeps serving."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.wire_proxy import FrameReader, PasswordMessage, Query, StartupMessage, encode
from support.wire import Keys, RawClient, RunningProxy, config_data

LIMITS = {"startup_timeout": 800, "idle_timeout": 1000, "max_connections": 4, "max_connections_per_principal": 2,
          "max_message_size": 1 << 16}


@pytest.fixture(scope="module")
def limited(cases_db_module: str, wire_dir: Path, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    p = RunningProxy(config_data(cases_db_module, wire_dir, keys, proxy=LIMITS), wire_dir)
    yield p
    p.close()


def frames_until_eof(sock: socket.socket, timeout: float = 10) -> list[tuple[int, bytes]]:
    sock.settimeout(timeout)
    reader = FrameReader(1 << 24)
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return out
        reader.feed(data)
        out += [(f.type, bytes(f.payload)) for f in reader]


def fatal(frames: list[tuple[int, bytes]]) -> bytes:
    errors = [p for k, p in frames if k == ord("E")]
    assert errors, frames
    assert b"SFATAL" in errors[-1]
    return errors[-1]


def serves(proxy: RunningProxy, keys: Keys, sub: str = "agent", groups: tuple[str, ...] = ("ai-agents",)) -> None:
    with psycopg.connect(proxy.dsn(keys.token(sub, groups), user=sub), autocommit=True) as conn:
        assert conn.execute("SELECT 11").fetchone() == (11,)


def connect(proxy: RunningProxy, keys: Keys, sub: str = "agent", groups: tuple[str, ...] = ("ai-agents",)):
    return psycopg.connect(proxy.dsn(keys.token(sub, groups), user=sub), autocommit=True)


# ---- startup_timeout ----------------------------------------------------------------------------------


def test_silent_client_is_told_and_closed_after_startup_timeout(limited: RunningProxy, keys: Keys) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        error = fatal(frames_until_eof(sock))
    elapsed = time.monotonic() - started
    assert b"C08P01" in error and b"startup_timeout" in error
    assert 0.6 < elapsed < 5, elapsed
    serves(limited, keys)


@pytest.mark.parametrize("sent", ["half a packet", "no password"])
def test_slow_start_up_is_closed_after_startup_timeout(limited: RunningProxy, keys: Keys, sent: str) -> None:
    startup = encode(StartupMessage({"user": "agent", "database": "main"}))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(startup[:6] if sent == "half a packet" else startup)
        error = fatal(frames_until_eof(sock))
    assert b"C08P01" in error and b"startup_timeout" in error
    assert time.monotonic() - started < 5
    serves(limited, keys)


# ---- idle_timeout -------------------------------------------------------------------------------------


def test_idle_client_gets_57p05_and_is_closed(limited: RunningProxy, keys: Keys) -> None:
    client = RawClient(limited.port, keys.token())
    try:
        assert client.startup[-1][0] == ord("Z")
        started = time.monotonic()
        error = fatal(frames_until_eof(client.sock))
        assert b"C57P05" in error and b"idle timeout" in error
        assert 0.8 < time.monotonic() - started < 5
    finally:
        client.close()
    serves(limited, keys)


def test_idle_timeout_with_psycopg(limited: RunningProxy, keys: Keys) -> None:
    with connect(limited, keys) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        time.sleep(1.6)
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        assert "idle timeout" in str(info.value) or conn.closed
    serves(limited, keys)


def test_a_long_statement_is_not_idle(limited: RunningProxy, keys: Keys) -> None:
    with connect(limited, keys) as conn:
        rows = conn.execute("SELECT count(*) FROM generate_series(1, 3) g, pg_sleep(0.5)").fetchone()
        assert rows == (3,)  # 1.5 s upstream with the client silent: busy, not idle


# ---- connection limits --------------------------------------------------------------------------------


def test_max_connections_per_principal(limited: RunningProxy, keys: Keys) -> None:
    with connect(limited, keys), connect(limited, keys):
        with pytest.raises(psycopg.OperationalError) as info:
            connect(limited, keys)
        text = str(info.value)
        assert "too many connections for 'agent'" in text and "max_connections_per_principal" in text
        assert info.value.sqlstate in (None, "53300")
        serves(limited, keys, "dana", ("dba",))  # another principal is not limited by agent's count
    serves(limited, keys)  # the slots are given back


def test_max_connections_overall(limited: RunningProxy, keys: Keys) -> None:
    with contextlib.ExitStack() as stack:
        for sub in ("a1", "a2", "a3", "a4"):
            stack.enter_context(connect(limited, keys, sub))
        client = RawClient(limited.port, keys.token("a5"), user="a5")
        try:
            error = fatal(client.startup)
        finally:
            client.close()
        assert b"C53300" in error and b"max_connections" in error and b"try again later" in error
    serves(limited, keys, "a5")


def test_connections_still_starting_up_are_bounded(limited: RunningProxy, keys: Keys) -> None:
    silent = [socket.create_connection(("127.0.0.1", limited.port)) for _ in range(LIMITS["max_connections"])]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", limited.port)) as extra:
            error = fatal(frames_until_eof(extra, timeout=2))
        assert b"C53300" in error and b"starting up" in error
    finally:
        for sock in silent:
            sock.close()
    time.sleep(0.1)
    serves(limited, keys)


def test_connections_refused_at_start_up_give_their_slot_back(limited: RunningProxy, keys: Keys) -> None:
    for _ in range(6):  # more than max_connections
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(limited.dsn(keys.token(), options="-c search_path=evil"))
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(limited.dsn("not a token"))
    serves(limited, keys)


# ---- oversized and malformed input --------------------------------------------------------------------


def test_oversized_message_closes_that_client_only(limited: RunningProxy, keys: Keys) -> None:
    with connect(limited, keys) as bystander:
        client = RawClient(limited.port, keys.token())
        try:
            client.send(Query("SELECT '" + "x" * (1 << 17) + "'"))
            error = fatal(frames_until_eof(client.sock))
            assert b"C08P01" in error or b"C54000" in error
            assert b"more than the limit of 65536" in error and b"maximum message size" in error, error
        finally:
            client.close()
        assert bystander.execute("SELECT 12").fetchone() == (12,)
    serves(limited, keys)


def test_a_message_just_under_the_limit_passes(limited: RunningProxy, keys: Keys) -> None:
    with connect(limited, keys) as conn:
        text = "y" * ((1 << 16) - 100)
        assert conn.execute("SELECT length('" + text + "')").fetchone() == (len(text),)


@pytest.mark.parametrize("packet", [
    struct.pack("!II", 1 << 30, 196608),  # a start-up packet claiming 1 GiB
    struct.pack("!II", 3, 196608),  # a length below the minimum
    struct.pack("!II", 8, 0x00020000),  # protocol 2.0
    struct.pack("!II", 16, 196608) + b"user\0agent",  # parameters without their terminators
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_malformed_start_up_bytes_get_a_fatal(limited: RunningProxy, keys: Keys, packet: bytes) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(packet)
        error = fatal(frames_until_eof(sock))
    assert b"C08P01" in error or b"C0A000" in error
    serves(limited, keys)


def test_oversized_password_message(limited: RunningProxy, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        sock.settimeout(10)
        assert sock.recv(9)[:1] == b"R"
        sock.sendall(encode(PasswordMessage(b"x" * (1 << 17) + b"\0")))
        error = fatal(frames_until_eof(sock))
    assert b"C08P01" in error
    serves(limited, keys)


def test_client_dropping_mid_start_up_loses_nothing(limited: RunningProxy, keys: Keys) -> None:
    for cut in (3, 9, 20):
        with socket.create_connection(("127.0.0.1", limited.port)) as sock:
            sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"}))[:cut])
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        sock.recv(9)
    serves(limited, keys)


# ---- the target down or gone --------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for s in held:
        s.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_target_down_at_connect(wire_dir: Path, keys: Keys, silent_port: int, where: str) -> None:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    os.environ["PGW_TEST_DOWN_PASSWORD"] = "s3cret-upstream-password"
    port = closed_port() if where == "refused" else silent_port
    data = config_data(f"postgresql://postgres@127.0.0.1:{port}/x?sslmode=disable", wire_dir, keys)
    data["targets"]["main"]["password"] = {"env": "PGW_TEST_DOWN_PASSWORD"}
    data["targets"]["main"]["connect_timeout"] = 1000
    proxy = RunningProxy(data, wire_dir)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(proxy.dsn(keys.token()), connect_timeout=20)
        assert time.monotonic() - started < 8
        text = str(info.value)
        assert "pgwarden: target 'main' is unavailable" in text, text
        assert ("could not connect" in text) if where == "refused" else ("no answer" in text), text
        assert "s3cret" not in text and keys.token() not in text
        assert info.value.sqlstate in (None, "08006", "08001")
    finally:
        proxy.close()


def test_upstream_killed_mid_session(limited: RunningProxy, keys: Keys, cases_db_module: str) -> None:
    with connect(limited, keys) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        dbname = conn.info.dbname
        with psycopg.connect(cases_db_module, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden:agent' "
                "AND datname = current_database()").fetchall()
        assert killed == [(True,)], (dbname, killed)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        assert time.monotonic() - started < 5
        text = str(info.value)
        assert "terminating connection due to administrator command" in text or "lost" in text, text
    serves(limited, keys)
