"""The proxy at the protocol level: every byte a client receives for the public security cases, the PG 19
beta start-up, limits, malformed bytes (hypothesis), many connections at once, pgbench."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgwarden.wire_proxy import NegotiateProtocolVersion, decode_backend
from support.cases import load_public_cases
from support.wire import Keys, RawClient, RunningProxy, config_data

SENTINELS = (b"4111111111111111", b"5500005555555559", b"078-05-1120", b"219-09-9999",
             b"zed.sentinel@example.org", b"sk_live_SENTINEL123", b"DE89370400440532013000")
PGBENCH = shutil.which("pgbench")


def _tables_digest(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        rows = []
        for table in ("customers", "orders", "secrets", "billing.invoices"):
            rows.append(conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t")
                        .fetchone())
        names = conn.execute("SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class "
                             "WHERE relnamespace IN ('public'::regnamespace, 'billing'::regnamespace)").fetchone()
        return hashlib.sha256(repr((rows, names)).encode()).hexdigest()


def test_public_cases_leak_nothing_in_any_byte(proxy: RunningProxy, keys: Keys, cases_db_module: str) -> None:
    before = _tables_digest(cases_db_module)
    client = RawClient(proxy.port, keys.token())
    leaks = []
    try:
        for case in load_public_cases().cases:
            start = len(client.received)
            client.query(case.sql)
            client.extended(case.sql)
            got = bytes(client.received[start:])
            if case.expect != "allow":
                leaks += [(case.sql, s) for s in SENTINELS if s in got]
        assert client.query("SELECT 1")[-1][0] == ord("Z")
    finally:
        client.close()
    assert not leaks
    assert _tables_digest(cases_db_module) == before


def test_pg19_beta_startup_gets_negotiate_protocol_version(proxy: RunningProxy, keys: Keys) -> None:
    client = RawClient(proxy.port, keys.token(), params={"_pq_.test_protocol_negotiation": "1"}, minor=9999)
    try:
        kinds = [k for k, _ in client.startup]
        assert kinds[0] == ord("v")
        npv = decode_backend(*client.startup[0])
        assert isinstance(npv, NegotiateProtocolVersion)
        assert npv.newest_minor == 2 and npv.unrecognised == ("_pq_.test_protocol_negotiation",)
        key = next(p for k, p in client.startup if k == ord("K"))
        assert len(key) == 4 + 32  # protocol 3.2 keys are longer
        assert client.query("SELECT 1")[-1][0] == ord("Z")
    finally:
        client.close()


def test_message_larger_than_the_limit_is_fatal_without_reading_it(proxy: RunningProxy, keys: Keys) -> None:
    client = RawClient(proxy.port, keys.token())
    try:
        client.sock.sendall(b"Q" + struct.pack("!I", 500 << 20))  # announces 500 MiB, sends 5 bytes
        reply = client.read_until({ord("Z")})
        assert reply and reply[-1][0] == ord("E") and b"08P01" in reply[-1][1]
        assert client.sock.recv(10) == b""
    finally:
        client.close()
    with psycopg.connect(proxy.dsn(keys.token())) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_function_call_is_refused(proxy: RunningProxy, keys: Keys) -> None:
    from pgwarden.wire_proxy import FunctionCall

    client = RawClient(proxy.port, keys.token())
    try:
        client.send(FunctionCall(1))
        reply = client.read_until({ord("Z")})
        assert reply[0][0] == ord("E") and b"FunctionCall" in reply[0][1]
        assert client.query("SELECT 1")[-1][0] == ord("Z")
    finally:
        client.close()


def test_ssl_request_answered_n_and_gssenc_n(proxy: RunningProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        assert s.recv(1) == b"N"
        s.sendall(struct.pack("!II", 8, 80877104))
        assert s.recv(1) == b"N"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(junk=st.binary(min_size=1, max_size=300))
def test_malformed_bytes_end_only_that_session(proxy: RunningProxy, keys: Keys, junk: bytes) -> None:
    client = RawClient(proxy.port, keys.token(), timeout=5)
    try:
        client.sock.sendall(junk)
        client.sock.settimeout(0.3)
        try:
            while client.sock.recv(65536):
                pass
        except (TimeoutError, OSError):
            pass
    finally:
        client.close()
    other = RawClient(proxy.port, keys.token())
    try:
        assert other.query("SELECT 1")[-1][0] == ord("Z")
    finally:
        other.close()


@pytest.mark.slow
def test_many_concurrent_connections(proxy: RunningProxy, keys: Keys) -> None:
    errors: list[BaseException] = []
    token = keys.token()

    def work() -> None:
        try:
            with psycopg.connect(proxy.dsn(token), autocommit=True) as conn:
                for i in range(10):
                    assert conn.execute("SELECT %s::int", [i]).fetchone() == (i,)
                    assert conn.execute("SELECT card_number FROM customers WHERE id = 1").fetchone() == (
                        "************1111",)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


# ---- pgbench under a permissive policy -------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_proxy(make_db_module, wire_dir: Path, keys: Keys):
    dsn = make_db_module("")
    data = config_data(dsn, wire_dir, keys)
    data["rules"] = [{"name": "bench", "match": {"groups": ["bench"]}, "target": "main",
                      "statements": {"allow": ["read", "write", "ddl", "transaction"]}, "schemas": {"allow": ["*"]}}]
    data["masking"] = {"columns": []}
    d = Path(tempfile.mkdtemp(prefix="pgw-bench-", dir=wire_dir))
    data["audit"]["journal_dir"] = str(d / "journal")
    data["approvals"]["store"]["sqlite"]["path"] = str(d / "a.db")
    p = RunningProxy(data, d)
    yield p
    p.close()


@pytest.mark.skipif(PGBENCH is None, reason="pgbench not installed")
@pytest.mark.slow
def test_pgbench_init_and_select_only_in_every_mode(bench_proxy: RunningProxy, keys: Keys) -> None:
    env = {**os.environ, "PGPASSWORD": keys.token("bench", ("bench",)), "PGSSLMODE": "disable"}
    base = [PGBENCH, "-h", "127.0.0.1", "-p", str(bench_proxy.port), "-U", "bench"]
    init = subprocess.run([*base, "-i", "-s", "1", "-I", "dtgp", "main"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert init.returncode == 0, init.stderr
    for mode in ("simple", "extended", "prepared"):
        run = subprocess.run([*base, "-S", "-T", "2", "-c", "2", "-M", mode, "main"], capture_output=True,
                             text=True, env=env, timeout=60)
        assert run.returncode == 0, (mode, run.stderr)
        assert "tps" in run.stdout and "number of failed transactions: 0" in run.stdout, run.stdout
