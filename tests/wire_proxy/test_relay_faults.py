"""Attacks on the callback relay (``wire_proxy/_relay.py``, :class:`Relay`, driven from
``ProxyServer._relay``) with raw sockets and real clients: backpressure and flat memory, lost or reordered
bytes, client and upstream leaving at awkward moments, approvals withdrawn, idle timeout, TLS, churn.

Faults found (each test asserts the correct behaviour; all fixed since — the upstream aborted when bytes
are still queued, the client read through a hold and the request withdrawn whenever the session ends, a
half-closed client answered (a probe tells a closed one apart), the bytes behind the password handed on):

* a client leaving while its pipelined burst is stuck leaks the upstream backend forever (Terminate queued
  behind a full write buffer, ``UpstreamConnection.close`` never aborts);
* a client closing while its statement waits for approval is noticed only when the next NOTICE fails
  (``Relay._start_hold`` stops reading the client for the whole hold);
* the upstream lost while a statement waits for approval leaves the request pending (the hold task is
  cancelled, ``ProxyServer._approve`` never withdraws on cancellation);
* a half-close loses the replies of what the client already sent (``Relay.ended`` → ``client_gone``);
* a query pipelined right behind the password is dropped (``_read_password``'s FrameReader is discarded).

Held: flat memory and both sides paused under a never-read burst (plain and TLS) and a slow reader of a
million rows; the upstream freed when the client leaves mid-result; withdrawal on disconnect with a short
notice interval; order behind a held statement; FATAL on upstream termination; 08P01 on malformed bytes
for that session only; idle timeout; churn of many connections.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgwarden.wire_proxy import FrameReader, PasswordMessage, Query, StartupMessage, Terminate, encode
from pgwarden.wire_proxy._relay import Relay
from support.wire import Keys, RawClient, RunningProxy, config_data

SETUP = """
CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL);
INSERT INTO jobs SELECT g, 'queued' FROM generate_series(1, 200) g;
"""
RUNNER = ("job-runners",)
SSL_REQUEST = struct.pack("!II", 8, 80877103)
MB = 1 << 20


def _data(db: str, directory: Path, keys: Keys, **proxy) -> dict:
    data = config_data(db, directory, keys, proxy={"approval_notice_interval": 100, **proxy})
    data["rules"].insert(0, {
        "name": "job-runner", "match": {"groups": list(RUNNER)}, "target": "main",
        "statements": {"allow": ["read", "write", "transaction"]},
        "approval": {"required_for": ["destructive", "ddl"], "approvers": ["dba"]},
        "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.jobs"]},
    })
    for rule in data["rules"]:
        if rule["name"] == "ai-agents":
            rule["max_rows"] = 100_000_000  # whole results reach the client: backpressure is exercised
    return data


@pytest.fixture(scope="module")
def relay_db(make_db_module) -> str:
    return make_db_module(SETUP)


@pytest.fixture(scope="module")
def rp(relay_db: str, tmp_path_factory, keys: Keys) -> Iterator[RunningProxy]:
    os.environ.setdefault("PGWARDEN_MASK_KEY", "test-mask-key-0123456789")
    directory = tmp_path_factory.mktemp("relay-faults")
    p = RunningProxy(_data(relay_db, directory, keys), directory)
    yield p
    p.close()


@pytest.fixture(scope="module")
def idle_rp(relay_db: str, tmp_path_factory, keys: Keys) -> Iterator[RunningProxy]:
    directory = tmp_path_factory.mktemp("relay-idle")
    p = RunningProxy(_data(relay_db, directory, keys, idle_timeout=800), directory)
    yield p
    p.close()


@pytest.fixture(scope="module")
def quiet_rp(relay_db: str, tmp_path_factory, keys: Keys) -> Iterator[RunningProxy]:
    """Approval notices every 6 s (the default is 10 s): a client leaving is seen only by reading."""
    directory = tmp_path_factory.mktemp("relay-quiet")
    p = RunningProxy(_data(relay_db, directory, keys, approval_notice_interval=6000), directory)
    yield p
    p.close()


@pytest.fixture(scope="module")
def tls_rp(relay_db: str, tmp_path_factory, keys: Keys, tls_files) -> Iterator[RunningProxy]:
    directory = tmp_path_factory.mktemp("relay-tls")
    p = RunningProxy(_data(relay_db, directory, keys, tls_cert=str(tls_files.cert), tls_key=str(tls_files.key)),
                     directory)
    yield p
    p.close()


# ---- helpers ------------------------------------------------------------------------------------------


class Client(RawClient):
    """RawClient, optionally over TLS (SSLRequest), with a unique subject so its upstream is findable."""

    def __init__(self, proxy: RunningProxy, keys: Keys, sub: str, *, groups=("ai-agents",), tls: bool = False,
                 timeout: float = 20, rcvbuf: int | None = None) -> None:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", proxy.port))
        if tls:
            sock.sendall(SSL_REQUEST)
            assert sock.recv(1) == b"S"
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        self.sock = sock
        self.received = bytearray()
        self.frames = FrameReader(1 << 30)
        self.sub = sub
        sock.sendall(encode(StartupMessage({"user": sub, "database": "main"}, 3, 0)))
        self.startup = self.read_until({ord("R")})
        sock.sendall(encode(PasswordMessage(keys.token(sub, groups).encode() + b"\0")))
        self.startup += self.read_until({ord("Z")})
        assert self.startup[-1][0] == ord("Z"), self.startup

    def until_eof(self, timeout: float = 15) -> list[tuple[int, bytes]]:
        self.sock.settimeout(timeout)
        out = [(f.type, bytes(f.payload)) for f in self.frames]
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                return out
            self.frames.feed(data)
            out += [(f.type, bytes(f.payload)) for f in self.frames]


def kinds(frames) -> str:
    return "".join(chr(k) for k, _ in frames if k != ord("N"))


def backends(db: str, sub: str, state: str | None = None) -> list[tuple]:
    with psycopg.connect(db, autocommit=True) as admin:
        rows = admin.execute("SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s "
                             "AND datname = current_database()", [f"pgwarden:{sub}"]).fetchall()
    return [r for r in rows if state is None or r[1] == state]


def eventually(check, timeout: float = 10, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def relays(proxy: RunningProxy) -> list[dict]:
    """The live relays of the proxy and what each holds in memory (transport and parser buffers)."""

    async def look() -> list[dict]:
        out = []
        for o in gc.get_objects():
            if isinstance(o, Relay) and not o._done.done():
                out.append({"client_out": o._ct.get_write_buffer_size(), "upstream_out": o._ut.get_write_buffer_size(),
                            "client_in": len(o.conn._frames._buf) + sum(map(len, o._backlog)),
                            "upstream_in": len(o.conn._ubuf), "reading": list(o._reading)})
        return out

    return proxy.call(look())


def held_requests(proxy: RunningProxy) -> list:
    return proxy.call(proxy.runtime.broker.list("pending"))  # type: ignore[union-attr]


def wait_pending(proxy: RunningProxy, statement_part: str, timeout: float = 10):
    found = eventually(lambda: [r for r in held_requests(proxy) if statement_part in r.statement], timeout)
    assert found, held_requests(proxy)
    return found[0]


def status(proxy: RunningProxy, request_id: str) -> str:
    return proxy.call(proxy.runtime.broker.get(request_id)).status.value  # type: ignore[union-attr]


def approve(proxy: RunningProxy, request_id: str) -> None:
    proxy.call(proxy.runtime.broker.approve(request_id, "dana", ["dba"]))  # type: ignore[union-attr]


def job_exists(db: str, job: int) -> bool:
    with psycopg.connect(db, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM jobs WHERE id = %s", [job]).fetchone() == (1,)


def serves(proxy: RunningProxy, keys: Keys) -> None:
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as conn:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def burst(sock: socket.socket, payload: bytes, limit: int, stall: float = 1.0) -> int:
    """Send ``payload`` repeatedly until ``limit`` bytes went or the socket stayed full ``stall`` seconds."""
    sock.settimeout(stall)
    sent = 0
    with contextlib.suppress(TimeoutError, OSError):
        while sent < limit:
            sent += sock.send(payload)
    return sent


# ---- backpressure, flat memory ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_pipelined_burst_never_read_keeps_memory_flat(rp, tls_rp, keys: Keys, relay_db: str, tls: bool) -> None:
    """~200 MB of pipelined queries whose replies are never read: both sides pause, buffers stay bounded."""
    proxy = tls_rp if tls else rp
    client = Client(proxy, keys, f"burst{int(tls)}", tls=tls)
    try:
        query = encode(Query("SELECT repeat('x', 4000)")) * 64
        sent = burst(client.sock, query, 200 * MB)
        assert sent < 200 * MB, "nothing pushed back: the proxy took every byte"
        (relay,) = relays(proxy)
        total = relay["client_out"] + relay["upstream_out"] + relay["client_in"] + relay["upstream_in"]
        assert total < 4 * MB, relay
        assert relay["reading"] == [False, False], relay  # both sides paused
    finally:
        client.close()
    assert eventually(lambda: not relays(proxy))
    serves(proxy, keys)


@pytest.mark.slow
def test_client_leaving_a_stuck_burst_releases_the_upstream(rp, keys: Keys, relay_db: str) -> None:
    client = Client(rp, keys, "burstgone")
    query = encode(Query("SELECT repeat('x', 4000)")) * 64
    burst(client.sock, query, 200 * MB)
    assert backends(relay_db, "burstgone")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert eventually(lambda: not relays(rp))  # the relay itself ends
    assert eventually(lambda: not backends(relay_db, "burstgone"), 5), backends(relay_db, "burstgone")


def test_slow_reader_of_a_million_rows_stays_flat_and_gets_every_row(rp, keys: Keys) -> None:
    client = Client(rp, keys, "slowreader", rcvbuf=1 << 15)
    try:
        client.send(Query("SELECT g, repeat('z', 40) FROM generate_series(1, 1000000) g"))
        # not reading: the result backs up to PostgreSQL, which the proxy stops reading
        assert eventually(lambda: relays(rp)[0]["reading"][1] is False), relays(rp)
        (relay,) = relays(rp)
        assert relay["client_out"] + relay["upstream_in"] < 4 * MB, relay
        rows = 0
        client.sock.settimeout(20)
        for i in range(200):  # a slow start, then full speed
            data = client.sock.recv(1 << 14)
            client.frames.feed(data)
            rows += sum(1 for f in client.frames if f.type == ord("D"))
            if i % 50 == 0:
                (relay,) = relays(rp)
                assert relay["client_out"] + relay["upstream_in"] < 4 * MB, relay
        tail = client.read_until({ord("Z")})
        rows += sum(1 for k, _ in tail if k == ord("D"))
        assert rows == 1_000_000
        assert tail[-2][1].startswith(b"SELECT 1000000")
        assert kinds(client.query("SELECT 'after'"))[-1] == "Z"
    finally:
        client.close()


# ---- the client leaves ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_gone_mid_result_frees_the_upstream(rp, tls_rp, keys: Keys, relay_db: str, tls: bool) -> None:
    proxy = tls_rp if tls else rp
    sub = f"midresult{int(tls)}"
    client = Client(proxy, keys, sub, tls=tls)
    client.send(Query("SELECT g, repeat('y', 100) FROM generate_series(1, 20000000) g"))
    client.sock.recv(1 << 16)
    assert backends(relay_db, sub, "active")
    client.close()
    assert eventually(lambda: not backends(relay_db, sub), 10), backends(relay_db, sub)
    assert eventually(lambda: not relays(proxy))
    serves(proxy, keys)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_gone_while_held_withdraws_the_request(rp, tls_rp, keys: Keys, relay_db: str, tls: bool) -> None:
    proxy = tls_rp if tls else rp
    job = 10 + int(tls)
    client = Client(proxy, keys, f"heldgone{int(tls)}", groups=RUNNER, tls=tls)
    client.send(Query(f"DELETE FROM jobs WHERE id = {job}"))
    request = wait_pending(proxy, f"id = {job}")
    client.close()
    assert eventually(lambda: status(proxy, request.id) == "withdrawn"), status(proxy, request.id)
    assert eventually(lambda: not relays(proxy))
    assert job_exists(relay_db, job)


def test_client_gone_while_held_is_noticed_without_waiting_for_a_notice(quiet_rp, keys: Keys, relay_db: str) -> None:
    client = Client(quiet_rp, keys, "heldquiet", groups=RUNNER)
    client.send(Query("DELETE FROM jobs WHERE id = 13"))
    request = wait_pending(quiet_rp, "id = 13")
    client.close()
    try:
        assert eventually(lambda: status(quiet_rp, request.id) == "withdrawn", 3), status(quiet_rp, request.id)
    finally:
        with contextlib.suppress(Exception):
            proxy_withdraw(quiet_rp, request.id)


def test_upstream_killed_while_held_withdraws_the_request(rp, keys: Keys, relay_db: str) -> None:
    client = Client(rp, keys, "heldkill", groups=RUNNER)
    try:
        client.send(Query("DELETE FROM jobs WHERE id = 12"))
        request = wait_pending(rp, "id = 12")
        ((pid, _, _),) = backends(relay_db, "heldkill")
        with psycopg.connect(relay_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        frames = client.until_eof()
        assert any(k == ord("E") and b"SFATAL" in p for k, p in frames), frames
        assert eventually(lambda: status(rp, request.id) != "pending", 3), status(rp, request.id)
    finally:
        client.close()
        with contextlib.suppress(Exception):
            proxy_withdraw(rp, request.id)


def proxy_withdraw(proxy: RunningProxy, request_id: str) -> None:
    proxy.call(proxy.runtime.broker.withdraw(request_id, "test cleanup"))  # type: ignore[union-attr]


def test_half_close_still_gets_the_replies_of_what_was_sent(rp, keys: Keys) -> None:
    client = Client(rp, keys, "halfclose")
    try:
        client.send(Query("SELECT pg_sleep(0.3), 'first'"), Query("SELECT 'second'"))
        client.sock.shutdown(socket.SHUT_WR)
        frames = client.until_eof()
        texts = b"".join(p for k, p in frames if k == ord("D"))
        assert b"first" in texts and b"second" in texts, frames
    finally:
        client.close()


def test_half_close_ends_the_session_and_frees_the_upstream(rp, keys: Keys, relay_db: str) -> None:
    client = Client(rp, keys, "halfclose2")
    try:
        client.sock.shutdown(socket.SHUT_WR)
        client.until_eof()
    finally:
        client.close()
    assert eventually(lambda: not backends(relay_db, "halfclose2"))


# ---- order ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one_packet", "later_packet"])
def test_bytes_pipelined_behind_a_held_statement_run_after_it_in_order(rp, keys: Keys, relay_db: str,
                                                                       split: bool) -> None:
    job = 20 + int(split)
    client = Client(rp, keys, f"behind{int(split)}", groups=RUNNER)
    try:
        first = encode(Query(f"DELETE FROM jobs WHERE id = {job} RETURNING id"))
        rest = b"".join(encode(Query(f"SELECT count(*) FROM jobs WHERE id = {job}")) for _ in range(3))
        if split:
            client.sock.sendall(first)
            request = wait_pending(rp, f"id = {job} RETURNING")
            client.sock.sendall(rest)
        else:
            client.sock.sendall(first + rest)
            request = wait_pending(rp, f"id = {job} RETURNING")
        time.sleep(0.2)
        assert job_exists(relay_db, job)  # nothing behind it ran ahead
        approve(rp, request.id)
        replies = []
        for _ in range(4):
            replies += client.read_until({ord("Z")})
        assert kinds(replies) == "TDCZ" + "TDCZ" * 3, kinds(replies)
        rows = [p for k, p in replies if k == ord("D")]
        assert rows[0].endswith(str(job).encode()) and all(r.endswith(b"0") for r in rows[1:]), rows
    finally:
        client.close()


def test_query_pipelined_behind_the_password_is_answered(rp, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", rp.port), timeout=2) as sock:
        sock.sendall(encode(StartupMessage({"user": "agent", "database": "main"}, 3, 0)))
        assert sock.recv(9)[:1] == b"R"
        sock.sendall(encode(PasswordMessage(keys.token().encode() + b"\0")) + encode(Query("SELECT 'piped'")))
        reader = FrameReader(1 << 24)
        got: list[tuple[int, bytes]] = []
        with contextlib.suppress(TimeoutError):
            while sum(1 for k, _ in got if k == ord("Z")) < 2:
                data = sock.recv(65536)
                if not data:
                    break
                reader.feed(data)
                got += [(f.type, bytes(f.payload)) for f in reader]
        assert any(k == ord("D") and b"piped" in p for k, p in got), got


# ---- the upstream leaves, malformed input --------------------------------------------------------------


@pytest.mark.parametrize("when", ["idle", "mid_statement"])
def test_upstream_killed_ends_the_session_with_a_fatal(rp, keys: Keys, relay_db: str, when: str) -> None:
    sub = f"upkill{when[0]}"
    client = Client(rp, keys, sub)
    try:
        if when == "mid_statement":
            client.send(Query("SELECT pg_sleep(30)"))
            assert eventually(lambda: backends(relay_db, sub, "active"))
        ((pid, _, _),) = backends(relay_db, sub)
        with psycopg.connect(relay_db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        started = time.monotonic()
        frames = client.until_eof()  # returns only at the end of the stream: the session ended
        assert time.monotonic() - started < 10
        fatals = [p for k, p in frames if k == ord("E") and b"SFATAL" in p]
        assert fatals and (b"C08006" in fatals[-1] or b"C57P01" in fatals[-1]), frames
    finally:
        client.close()
    assert eventually(lambda: not relays(rp))
    serves(rp, keys)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_malformed_bytes_mid_stream_end_that_session_only(rp, tls_rp, keys: Keys, tls: bool) -> None:
    proxy = tls_rp if tls else rp
    with psycopg.connect(proxy.dsn(keys.token()), autocommit=True) as bystander:
        client = Client(proxy, keys, f"garbage{int(tls)}", tls=tls)
        try:
            assert kinds(client.query("SELECT 1")) == "TDCZ"
            client.sock.sendall(b"\x01\x00\x00\x00\x08abcd")  # an unknown message type
            frames = client.until_eof()
            assert frames and frames[-1][0] == ord("E") and b"C08P01" in frames[-1][1], frames
        finally:
            client.close()
        assert bystander.execute("SELECT 5").fetchone() == (5,)


# ---- idle timeout --------------------------------------------------------------------------------------


def test_idle_timeout_ends_an_idle_session_and_frees_the_upstream(idle_rp, keys: Keys, relay_db: str) -> None:
    client = Client(idle_rp, keys, "idler")
    try:
        frames = client.until_eof()
        assert frames and b"C57P05" in frames[-1][1], frames
    finally:
        client.close()
    assert eventually(lambda: not backends(relay_db, "idler"))


def test_idle_timeout_spares_work_in_flight_and_a_held_statement(idle_rp, keys: Keys, relay_db: str) -> None:
    busy = Client(idle_rp, keys, "busyidle")
    held = Client(idle_rp, keys, "heldidle", groups=RUNNER)
    try:
        busy.send(Query("SELECT pg_sleep(1.5), 'slept'"))
        held.send(Query("DELETE FROM jobs WHERE id = 30"))
        request = wait_pending(idle_rp, "id = 30")
        replies = busy.read_until({ord("Z")})
        assert kinds(replies) == "TDCZ", replies  # 1.5 s upstream, silent client: not idle
        time.sleep(0.5)
        approve(idle_rp, request.id)  # waited > idle_timeout for its approval
        assert kinds(held.read_until({ord("Z")})) == "CZ"
        assert not job_exists(relay_db, 30)
    finally:
        busy.close()
        held.close()


# ---- churn ---------------------------------------------------------------------------------------------


def test_many_connections_opening_and_closing_leave_nothing_behind(rp, keys: Keys, relay_db: str) -> None:
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            for j in range(4):
                client = Client(rp, keys, "churn")
                if j % 2:
                    client.send(Query("SELECT g FROM generate_series(1, 50000) g"))  # leave mid-result
                    client.sock.recv(100)
                elif i % 3 == 0:
                    client.send(Terminate())
                else:
                    assert kinds(client.query(f"SELECT {i}")) == "TDCZ"
                client.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert eventually(lambda: not relays(rp)), relays(rp)
    assert eventually(lambda: not backends(relay_db, "churn")), backends(relay_db, "churn")
    server = rp.server
    assert server is not None
    assert eventually(lambda: server._count == 0 and not server._cancel and server._starting == 0)
    serves(rp, keys)

