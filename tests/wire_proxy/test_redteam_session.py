"""Red-team of the wire door's start-up, authentication and session pinning (``wire_proxy/_startup.py``
``filter_startup_params``, ``server.py`` ``ProxyServer._authenticate`` / ``_scram`` / ``_cancel_request`` /
``_admit`` / ``_pinned``, and the policy's ``session_change`` / ``setting_not_allowed`` checks).

Claims attacked, as a holder of a token for the narrow read-only rule ``ai-agents`` (and of one for a writer
rule ``rt-writer`` that assumes a least-privilege ``upstream_role`` on top of a superuser login):

* a start-up packet cannot change the session under the policy: ``options`` (``-c``, ``-cname``, ``--name``,
  backslash escapes, server switches), plain parameters (``default_transaction_read_only``, ``role``,
  ``session_authorization``, ``search_path``, ``replication``…), odd case, duplicated keys, ``_pq_.`` options
  and non-UTF-8 bytes either end the start-up or leave the pinned session exactly as pinned;
* the principal is the token's: another user name, expired / not-yet-valid / wrong-audience / wrong-issuer /
  unsigned / HS256-with-the-public-key / unknown-``kid`` / oversized tokens are FATAL 28xxx; SCRAM service
  users refuse a wrong proof, a replayed client-final, a channel-binding claim without TLS;
* a CancelRequest only cancels the session whose proxy key it names; connections per principal are capped
  whatever user name the token is presented under;
* after start-up, the pinned ``default_transaction_read_only``, ``statement_timeout``, ``lock_timeout``,
  ``search_path``, ``application_name`` and the rule's role cannot be lifted (SET, SET LOCAL, RESET, RESET
  ALL, DISCARD ALL, SET … TO DEFAULT, set_config(), UPDATE pg_settings, BEGIN/START TRANSACTION READ WRITE,
  SET TRANSACTION READ WRITE, SET SESSION CHARACTERISTICS, SET ROLE / SESSION AUTHORIZATION, ALTER ROLE …
  SET, LOAD, ALTER SYSTEM, session_replication_role, row_security), and the text the gateway sends upstream
  (with the derived mask keys in it) is never shown to the client.

Breaches found (each test asserts the secure behaviour; both fixed since — ``client_min_messages`` is
bounded to notice, warning or error at start-up, in SET and in set_config (``BOUNDED_SETTINGS``), neither
door passes on a DEBUG or LOG message (``diagnostic_withheld``), and a pinned search_path is compared item
by item exactly as the server will take it):

* ``client_min_messages`` is on the start-up allow list (and on the SET harmless list), and PostgreSQL reports
  every extended-protocol Parse at DEBUG2 with the full text it parsed. A read-only agent connecting with
  ``client_min_messages=debug2`` (or sending ``SET client_min_messages = debug2``) and running
  ``Parse("SELECT email FROM customers")`` receives a NoticeResponse ``parse <unnamed>: SELECT email FROM
  (SELECT … pg_catalog.decode('<HMAC outer pad>', 'hex') …`` — the mask rewrite with the derived hash key
  (pad XOR 0x5c). With it the agent computes ``h:…`` of any guess offline (a dictionary attack on the hashed
  column, without a single query), against security.md's "only the derived keys' HMAC pads appear in the
  upstream text, and that text cannot be read back". Reproduction:
  ``RawClient(port, token, params={"client_min_messages": "debug2"}).extended("SELECT email FROM customers")``.
  At fault: ``ALLOWED_STARTUP_SETTINGS`` / ``HARMLESS_SETTINGS`` accept debug levels, and upstream notices
  are relayed with their text for rewritten statements. The test recovers the key from the notice and
  reproduces the served ``h:…`` of a row offline.
* ``SET search_path = 'public '`` (also ``'"public"'`` and ``public, ''``) is accepted as "the pinned value"
  (``_Checker._same_as_pinned`` strips white space and double quotes and drops empty items), but PostgreSQL
  quotes each string literal of a list setting as one identifier: the server's search_path becomes
  ``"public "`` / a schema named ``"public"`` (quotes included) / ``public, ""``, so names no longer resolve the way the analysis resolved
  them (against ``public``). Impact today is limited (those schemas do not exist unless someone with CREATE
  makes them; then unqualified names would resolve into a schema the rule does not allow), but the pin is
  changed. Reproduction: ``c.query("SET search_path = 'public '"); c.query("SHOW search_path")``.

Held: every start-up variant tried (refused FATAL 42501, or the session stayed pinned), ``replication``,
server switches in ``options``, duplicated keys (the last one wins, as in PostgreSQL, and is filtered), every
token forgery, SCRAM replay / wrong proof / ``p=`` without TLS, cancels with another session's pid and a
wrong key or with the upstream pid, the per-principal cap under ``user=jwt``/``token``, and every
post-start-up escape of the pinned settings and the role listed above.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import struct
import threading
import time

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from scramp import ScramClient

from pgwarden.wire_proxy import FrameReader, SASLInitialResponse, SASLResponse, StartupMessage, encode
from pgwarden.wire_proxy.server import make_verifier
from support.cases import load_public_cases
from support.wire import AUDIENCE, ISSUER, Keys, RawClient, RunningProxy, config_data
from support.wire import frame_codes as _codes
from support.wire import frame_errors as _errors
from support.wire import frame_ready as _ready
from support.wire import frame_rows as _rows

MASK_KEY = "test-mask-key-0123456789"
PASSWORD = "rt-session service secret"
ROLE = f"rt_sess_w_{os.getpid()}"
TIMEOUT_MS = 1500


@pytest.fixture(scope="module")
def rt(make_db_module, tmp_path_factory, keys: Keys):
    os.environ.setdefault("PGWARDEN_MASK_KEY", MASK_KEY)
    os.environ["PGW_RT_SESSION_VERIFIER"] = make_verifier(PASSWORD)
    dsn = make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {ROLE} NOLOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
        admin.execute(f"GRANT SELECT, INSERT, UPDATE ON public.orders TO {ROLE}")
    directory = tmp_path_factory.mktemp("redteam-session")
    data = config_data(dsn, directory, keys, proxy={
        "max_connections_per_principal": 3,
        "service_users": [{"name": "rt-svc", "verifier": {"env": "PGW_RT_SESSION_VERIFIER"},
                           "subject": "svc-rt", "groups": ["ai-agents"]}]})
    for rule in data["rules"]:
        if rule["name"] == "ai-agents":
            rule["statement_timeout"] = TIMEOUT_MS
            rule["lock_timeout"] = 700
    data["rules"].insert(0, {"name": "rt-writer", "match": {"groups": ["rt-writer"]}, "target": "main",
                             "upstream_role": ROLE, "statement_timeout": TIMEOUT_MS,
                             "statements": {"allow": ["read", "write", "transaction"]},
                             "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.orders"]}})
    proxy = RunningProxy(data, directory)
    try:
        yield proxy, dsn
    finally:
        proxy.close()
        with psycopg.connect(dsn, autocommit=True) as admin, contextlib.suppress(psycopg.Error):
            admin.execute(f"DROP OWNED BY {ROLE}")
            admin.execute(f"DROP ROLE {ROLE}")


# ---- helpers ----------------------------------------------------------------------------------------------


def _values(payload: bytes) -> list[str | None]:
    (n,) = struct.unpack_from("!h", payload, 0)
    pos, out = 2, []
    for _ in range(n):
        (size,) = struct.unpack_from("!i", payload, pos)
        pos += 4
        if size < 0:
            out.append(None)
        else:
            out.append(payload[pos:pos + size].decode())
            pos += size
    return out


STATE_SQL = ("SELECT current_setting('default_transaction_read_only'), current_setting('transaction_read_only'), "
             "current_setting('statement_timeout'), current_setting('lock_timeout'), "
             "current_setting('idle_in_transaction_session_timeout'), current_setting('search_path'), "
             "current_setting('application_name'), current_user, current_setting('session_replication_role'), "
             "current_setting('row_security'), current_setting('standard_conforming_strings'), "
             "current_setting('client_encoding')")


def _state(c: RawClient) -> list[str | None]:
    r = c.query(STATE_SQL)
    rows = _rows(r)
    assert rows, f"state query refused: {_errors(r)}"
    return _values(rows[0])


def _fatal(c: RawClient) -> str | None:
    """The SQLSTATE of a FATAL that ended the start-up, or None when the session is ready."""
    for kind, payload in c.startup:
        if kind == ord("E") and b"SFATAL" in bytes(payload):
            return next(f[1:] for f in bytes(payload).decode("utf-8", "replace").split("\0") if f.startswith("C"))
    assert c.startup and c.startup[-1][0] == ord("Z"), c.startup
    return None


class _RawStartup(RawClient):
    """A RawClient whose start-up packet is given as bytes (duplicated keys, non-UTF-8 bytes…)."""

    def __init__(self, port: int, packet: bytes, token: str) -> None:
        from pgwarden.wire_proxy import PasswordMessage

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.received = bytearray()
        self.frames = FrameReader(1 << 30)
        self.sock.sendall(packet)
        self.startup = self.read_until({ord("R")})
        if self.startup and self.startup[-1][0] == ord("R") and self.startup[-1][1][:4] == b"\0\0\0\x03":
            self.sock.sendall(encode(PasswordMessage(token.encode() + b"\0")))
            self.startup += self.read_until({ord("Z")})


def _packet(pairs: list[tuple[bytes, bytes]], minor: int = 0) -> bytes:
    body = struct.pack("!I", (3 << 16) | minor) + b"".join(k + b"\0" + v + b"\0" for k, v in pairs) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


@pytest.fixture(scope="module")
def baseline(rt, keys: Keys) -> list[str | None]:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        state = _state(c)
    finally:
        c.close()
    assert state[0] == "on" and state[2] == f"{TIMEOUT_MS}ms" and state[3] == "700ms", state
    assert state[5] == "public" and state[6] == "pgwarden:agent", state
    return state


@pytest.fixture(scope="module")
def writer_baseline(rt, keys: Keys) -> list[str | None]:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token("wendy", ("rt-writer",)), user="wendy")
    try:
        state = _state(c)
    finally:
        c.close()
    assert state[7] == ROLE and state[0] == "off", state
    return state


def _pinned_or_refused(c: RawClient, baseline: list[str | None]) -> None:
    try:
        code = _fatal(c)
        if code is not None:
            assert code.startswith(("42", "28", "08", "0A")), code
            return
        assert _state(c) == baseline
    finally:
        c.close()


# ---- start-up parameters ------------------------------------------------------------------------------------

_STARTUP_ATTACKS = {
    "options -c": {"options": "-c default_transaction_read_only=off"},
    "options -cname": {"options": "-cdefault_transaction_read_only=off"},
    "options --name": {"options": "--default-transaction-read-only=off"},
    "options escaped space": {"options": "-c\\ default_transaction_read_only=off"},
    "options escaped name": {"options": "-c default\\_transaction_read_only=off"},
    "options tab": {"options": "-c\tdefault_transaction_read_only=off"},
    "options statement_timeout": {"options": "-c statement_timeout=0"},
    "options lock_timeout": {"options": "-c lock_timeout=0"},
    "options role": {"options": "-c role=postgres"},
    "options session_authorization": {"options": "-c session_authorization=postgres"},
    "options search_path": {"options": "-c search_path=billing,public"},
    "options after allowed": {"options": "-c DateStyle=ISO -c default_transaction_read_only=off"},
    "options server switch -D": {"options": "-D /tmp"},
    "options server switch -e": {"options": "-e"},
    "options application_name": {"options": "-c application_name=pgwarden:dana"},
    "options upper case": {"options": "-c DEFAULT_TRANSACTION_READ_ONLY=off"},
    "options session_replication_role": {"options": "-c session_replication_role=replica"},
    "options row_security": {"options": "-c row_security=off"},
    "options standard_conforming_strings": {"options": "-c standard_conforming_strings=off"},
    "options client_encoding": {"options": "-c client_encoding=SJIS"},
    "param default_transaction_read_only": {"default_transaction_read_only": "off"},
    "param odd case": {"Default_Transaction_Read_Only": "off"},
    "param transaction_read_only": {"transaction_read_only": "off"},
    "param role": {"role": "postgres"},
    "param session_authorization": {"session_authorization": "postgres"},
    "param search_path": {"search_path": "billing"},
    "param statement_timeout": {"statement_timeout": "0"},
    "param default_transaction_isolation": {"default_transaction_isolation": "serializable"},
    "param replication database": {"replication": "database"},
    "param replication true": {"replication": "true"},
    "param REPLICATION": {"REPLICATION": "database"},
    "param application_name": {"application_name": "pgwarden:dana"},
    "param client_encoding SJIS": {"client_encoding": "SJIS"},
    "param standard_conforming_strings off": {"standard_conforming_strings": "off"},
    "param backslash_quote": {"backslash_quote": "on"},
    "param Options key": {"Options": "-c default_transaction_read_only=off"},
    "param _pq_ option": {"_pq_.default_transaction_read_only": "off"},
    "param _pq_ options": {"_pq_.options": "-c default_transaction_read_only=off"},
    "param session_preload_libraries": {"session_preload_libraries": "auto_explain"},
    "param DateStyle with injection": {"DateStyle": "ISO -c default_transaction_read_only=off"},
    "param TimeZone with options": {"TimeZone": "UTC' -c default_transaction_read_only=off"},
}


@pytest.mark.parametrize("how", list(_STARTUP_ATTACKS))
def test_startup_parameters_cannot_change_the_pinned_session(rt, keys: Keys, baseline, how: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token(), params=_STARTUP_ATTACKS[how])
    _pinned_or_refused(c, baseline)


@pytest.mark.parametrize("minor", [0, 2, 9999])
def test_protocol_minor_versions_keep_the_pins(rt, keys: Keys, baseline, minor: int) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token(), params={"_pq_.unknown": "1"}, minor=minor)
    _pinned_or_refused(c, baseline)


_RAW_PACKETS = {
    # PostgreSQL keeps the last of a duplicated key
    "duplicated options": [(b"user", b"agent"), (b"database", b"main"), (b"options", b"-c DateStyle=ISO"),
                           (b"options", b"-c default_transaction_read_only=off")],
    "duplicated options reversed": [(b"user", b"agent"), (b"database", b"main"),
                                    (b"options", b"-c default_transaction_read_only=off"),
                                    (b"options", b"-c DateStyle=ISO")],
    "duplicated user": [(b"user", b"agent"), (b"database", b"main"), (b"user", b"dana")],
    "duplicated database": [(b"user", b"agent"), (b"database", b"main"), (b"database", b"postgres")],
    "non-utf8 value": [(b"user", b"agent"), (b"database", b"main"), (b"application_name", b"\xff\xfe")],
    "non-utf8 options": [(b"user", b"agent"), (b"database", b"main"),
                         (b"options", b"-c default_transaction_read_only=\xff")],
    "non-utf8 key": [(b"user", b"agent"), (b"database", b"main"), (b"default_transaction_read_only\xff", b"off")],
    "empty key": [(b"user", b"agent"), (b"database", b"main"), (b"", b"off")],
}


@pytest.mark.parametrize("how", list(_RAW_PACKETS))
def test_raw_startup_packets_keep_the_pins(rt, keys: Keys, baseline, how: str) -> None:
    proxy, _ = rt
    c = _RawStartup(proxy.port, _packet(_RAW_PACKETS[how]), keys.token())
    _pinned_or_refused(c, baseline)


def test_pinned_values_upstream_are_the_policys(baseline) -> None:
    assert baseline[0] == baseline[1] == "on"
    assert baseline[8] == "origin" and baseline[9] == "on"
    assert baseline[10] == "on" and baseline[11] == "UTF8"


# ---- who the session is -------------------------------------------------------------------------------------


def test_user_name_must_be_the_tokens_subject(rt, keys: Keys) -> None:
    proxy, _ = rt
    for user in ("dana", "postgres", "Agent", "agent ", "svc-rt"):
        c = RawClient(proxy.port, keys.token(), user=user)
        try:
            assert _fatal(c) == "28000", user
        finally:
            c.close()


@pytest.mark.parametrize("user", ["jwt", "token"])
def test_generic_user_names_act_as_the_token(rt, keys: Keys, baseline, user: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token(), user=user)
    try:
        assert _fatal(c) is None
        assert _state(c) == baseline  # application_name names the token's subject
    finally:
        c.close()


def _forged(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "agent", "groups": ["ai-agents"], "iat": now, "exp": now + 600}
    pem = keys.public_file.read_bytes()
    other = ec.generate_private_key(ec.SECP256R1())

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    hs = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64(base)
    hs_sig = base64.urlsafe_b64encode(hmac.new(pem, hs.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    none = b64({"alg": "none", "typ": "JWT"}) + "." + b64(base) + "."
    valid = keys.token()
    head, body, sig = valid.split(".")
    dana = b64({**base, "sub": "dana", "groups": ["dba"]})
    return {
        "expired": keys.token(exp=now - 3600, iat=now - 7200),
        "not yet valid": keys.token(nbf=now + 3600),
        "issued in the future": keys.token(iat=now + 3600),
        "wrong audience": keys.token(aud="someone-else"),
        "wrong issuer": keys.token(iss="https://evil.example"),
        "no exp": jwt.encode({k: v for k, v in base.items() if k != "exp"}, keys.private, algorithm="ES256"),
        "alg none": none,
        "alg none signed": none + "x",
        "alg NoNe": b64({"alg": "NoNe"}) + "." + b64(base) + "." + sig,
        "HS256 with the public key": hs + "." + hs_sig,
        "kid path, foreign key": jwt.encode(base, other, algorithm="ES256",
                                            headers={"kid": str(keys.public_file)}),
        "kid of the public key file, foreign key": jwt.encode(base, other, algorithm="ES256",
                                                              headers={"kid": "public.pem"}),
        "kid object": b64({"alg": "ES256", "kid": {"x": 1}}) + "." + body + "." + sig,
        "jku header": b64({"alg": "ES256", "jku": "https://evil.example/jwks"}) + "." + b64(base) + "." + sig,
        "swapped payload": head + "." + dana + "." + sig,
        "foreign key": jwt.encode(base, other, algorithm="ES256"),
        "huge": keys.token(pad="x" * 70000),
        "empty": "",
        "bearer prefix": "Bearer " + valid,
        "trailing bytes": valid + "\0dana",
    }


def test_forged_and_invalid_tokens_are_fatal(rt, keys: Keys) -> None:
    proxy, _ = rt
    failures = []
    for how, token in _forged(keys).items():
        c = RawClient(proxy.port, token)
        try:
            code = _fatal(c)
        finally:
            c.close()
        if code not in ("28P01", "28000", "08P01"):
            failures.append((how, code))
    assert not failures, failures


# ---- SCRAM service users ------------------------------------------------------------------------------------


class _Sasl:
    def __init__(self, port: int, user: str = "rt-svc") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.frames = FrameReader(1 << 20)
        self.sock.sendall(encode(StartupMessage({"user": user, "database": "main"})))
        kind, payload = self.next()
        assert kind == ord("R") and payload[:4] == struct.pack("!I", 10), (kind, payload)
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


def test_scram_replayed_client_final_is_refused(rt) -> None:
    proxy, _ = rt
    c = _Sasl(proxy.port)
    try:
        client = ScramClient(["SCRAM-SHA-256"], "rt-svc", PASSWORD)
        first = client.get_client_first()
        c.sock.sendall(encode(SASLInitialResponse("SCRAM-SHA-256", first.encode())))
        client.set_server_first(c.next()[1][4:].decode())
        final = client.get_client_final()
        c.sock.sendall(encode(SASLResponse(final.encode())))
        assert c.next()[0] == ord("R")  # SASLFinal: a genuine exchange
    finally:
        c.close()
    # the same client-first (same client nonce) and the recorded client-final on a new connection
    c = _Sasl(proxy.port)
    try:
        c.sock.sendall(encode(SASLInitialResponse("SCRAM-SHA-256", first.encode())))
        assert c.next()[0] == ord("R")
        c.sock.sendall(encode(SASLResponse(final.encode())))
        kind, payload = c.next()
        assert kind == ord("E") and b"C28P01" in payload, (kind, payload)
    finally:
        c.close()


@pytest.mark.parametrize("first", [
    "p=tls-server-end-point,,n=,r=abcdefghijklmnopqrstuvwx",
    "n,a=dana,n=,r=abcdefghijklmnopqrstuvwx",
    "n,,n=,r=",
])
def test_scram_bad_client_first_gets_no_session(rt, first: str) -> None:
    proxy, _ = rt
    c = _Sasl(proxy.port)
    try:
        mech = "SCRAM-SHA-256-PLUS" if first.startswith("p=") else "SCRAM-SHA-256"
        c.sock.sendall(encode(SASLInitialResponse(mech, first.encode())))
        kind, payload = c.next()
        if kind == ord("R"):  # the exchange went on: finish it with a proof made without the password
            c.sock.sendall(encode(SASLResponse(b"c=biws,r=" + payload[4:].split(b",")[0][2:] + b",p=" +
                                               base64.b64encode(b"\0" * 32))))
            kind, payload = c.next()
        assert kind == ord("E") and b"SFATAL" in payload, (kind, payload)
    finally:
        c.close()


def test_scram_wrong_proof_and_service_user_pins(rt, baseline) -> None:
    proxy, _ = rt
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(proxy.dsn("wrong", user="rt-svc"))
    with psycopg.connect(proxy.dsn(PASSWORD, user="rt-svc"), autocommit=True) as conn:
        state = list(conn.execute(STATE_SQL).fetchone())
    assert state == [*baseline[:6], "pgwarden:svc-rt", *baseline[7:]]


def test_cleartext_token_off_loopback_without_tls(rt, keys: Keys, non_loopback) -> None:
    if non_loopback is None:
        pytest.skip("no address off loopback on this machine")
    proxy, _ = rt
    # the proxy listens on 127.0.0.1 only; a second server on the outside address
    from pgwarden.wire_proxy.server import ProxyServer

    server = ProxyServer(proxy.runtime, host=non_loopback, port=0)
    proxy.call(server.start())
    try:
        s = socket.create_connection((non_loopback, server.port), timeout=10)
        frames = FrameReader(1 << 20)
        s.sendall(encode(StartupMessage({"user": "agent", "database": "main"})))
        data = s.recv(65536)
        frames.feed(data)
        first = frames.next_frame()
        assert first is not None and first.type == ord("E") and b"C28000" in bytes(first.payload), data
        s.close()
    finally:
        proxy.call(server.close())


# ---- cancel keys and connection limits ---------------------------------------------------------------------


def _key(c: RawClient) -> tuple[int, bytes]:
    payload = next(bytes(p) for k, p in c.startup if k == ord("K"))
    return struct.unpack_from("!i", payload)[0], payload[4:]


def _cancel(port: int, pid: int, key: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack("!ii", 12 + len(key), 80877102) + struct.pack("!i", pid) + key)
        with contextlib.suppress(OSError):
            s.recv(1)


def _sleep_under(c: RawClient, port: int, cancels) -> list[str]:
    from pgwarden.wire_proxy import Query

    c.send(Query("SELECT pg_catalog.pg_sleep(1.0)"))
    time.sleep(0.3)
    for pid, key in cancels:
        _cancel(port, pid, key)
    return _codes(c.read_until({ord("Z")}))


def test_cancel_needs_the_sessions_own_key(rt, keys: Keys) -> None:
    proxy, _ = rt
    victim = RawClient(proxy.port, keys.token())
    attacker = RawClient(proxy.port, keys.token("eve", ("ai-agents",)), user="eve")
    try:
        pid, key = _key(victim)
        own_pid, own_key = _key(attacker)
        r = attacker.query("SELECT pg_catalog.pg_backend_pid()")
        upstream_pid = int(_values(_rows(r)[0])[0]) if _rows(r) else 1
        guesses = [(pid, bytes(len(key))), (pid, own_key), (pid, key[:-1] + bytes([key[-1] ^ 1])),
                   (pid, key + b"\0"), (own_pid, key), (upstream_pid, key), (upstream_pid, own_key),
                   *((pid, secrets.token_bytes(len(key))) for _ in range(30))]
        assert _sleep_under(victim, proxy.port, guesses) == []  # not cancelled
        # control: the right key does cancel
        assert _sleep_under(victim, proxy.port, [(pid, key)]) == ["57014"]
    finally:
        victim.close()
        attacker.close()


def test_connections_per_principal_whatever_the_user_name(rt, keys: Keys) -> None:
    proxy, _ = rt
    held = []
    try:
        for user in ("agent", "jwt", "token"):
            c = RawClient(proxy.port, keys.token(), user=user)
            held.append(c)
            assert _fatal(c) is None
        for user in ("agent", "jwt", "token"):
            c = RawClient(proxy.port, keys.token(), user=user)
            held.append(c)
            assert _fatal(c) == "53300", user
        other = RawClient(proxy.port, keys.token("eve", ("ai-agents",)), user="eve")
        held.append(other)
        assert _fatal(other) is None
    finally:
        for c in held:
            c.close()


def test_concurrent_startups_respect_the_cap(rt, keys: Keys) -> None:
    proxy, _ = rt
    token = keys.token("racer", ("ai-agents",))
    clients: list[RawClient] = []
    lock = threading.Lock()

    def go() -> None:
        c = RawClient(proxy.port, token, user="racer")
        with lock:
            clients.append(c)

    threads = [threading.Thread(target=go) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sum(1 for c in clients if _fatal(c) is None) <= 3
    finally:
        for c in clients:
            c.close()


# ---- after start-up: the read-only rule --------------------------------------------------------------------

_READER_ESCAPES = {
    "SET dtro": ["SET default_transaction_read_only = off"],
    "SET SESSION dtro": ["SET SESSION default_transaction_read_only TO false"],
    "SET dtro quoted upper": ['SET "DEFAULT_TRANSACTION_READ_ONLY" = off'],
    "SET dtro 0": ["SET default_transaction_read_only = 0"],
    "SET dtro of": ["SET default_transaction_read_only = 'of'"],
    "SET transaction_read_only": ["SET transaction_read_only = off"],
    "SET dtro TO DEFAULT": ["SET default_transaction_read_only TO DEFAULT"],
    "RESET dtro": ["RESET default_transaction_read_only"],
    "RESET ALL": ["RESET ALL"],
    "DISCARD ALL": ["DISCARD ALL"],
    "set_config dtro": ["SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)"],
    "set_config from": ["SELECT * FROM pg_catalog.set_config('default_transaction_read_only', 'off', false)"],
    "set_config computed name": ["SELECT pg_catalog.set_config(pg_catalog.lower('DEFAULT_transaction_read_only'), "
                                 "'off', false)"],
    "set_config unqualified upper": ["SELECT set_config('Default_Transaction_Read_Only', 'off', false)"],
    "UPDATE pg_settings": ["UPDATE pg_catalog.pg_settings SET setting = 'off' "
                           "WHERE name = 'default_transaction_read_only'"],
    "UPDATE pg_settings unqualified": ["UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'"],
    "SET SESSION CHARACTERISTICS": ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"],
    "SET statement_timeout 0": ["SET statement_timeout = 0"],
    "SET statement_timeout hex": ["SET statement_timeout = '0x7fffffff'"],
    "SET statement_timeout 1d": ["SET statement_timeout = '1d'"],
    "SET statement_timeout 24h": ["SET statement_timeout = '24h'"],
    "SET statement_timeout us": ["SET statement_timeout = '999999999us'"],
    "SET statement_timeout float": ["SET statement_timeout = '1e9'"],
    "SET statement_timeout DEFAULT": ["SET statement_timeout TO DEFAULT"],
    "RESET statement_timeout": ["RESET statement_timeout"],
    "set_config statement_timeout": ["SELECT pg_catalog.set_config('statement_timeout', '0', false)"],
    "SET lock_timeout 0": ["SET lock_timeout = 0"],
    "SET idle_in_transaction 0": ["SET idle_in_transaction_session_timeout = 0"],
    "SET search_path": ["SET search_path = billing, public"],
    "SET search_path pg_catalog": ["SET search_path = pg_catalog"],
    "SET search_path comma literal": ["SET search_path = 'public,billing'"],
    "set_config search_path": ["SELECT pg_catalog.set_config('search_path', 'billing', false)"],
    "SET ROLE": ["SET ROLE postgres"],
    "SET SESSION AUTHORIZATION": ["SET SESSION AUTHORIZATION postgres"],
    "SET application_name": ["SET application_name = 'pgwarden:dana'"],
    "set_config application_name": ["SELECT pg_catalog.set_config('application_name', 'pgwarden:dana', false)"],
    "session_replication_role": ["SET session_replication_role = replica"],
    "row_security": ["SET row_security = off"],
    "client_encoding": ["SET client_encoding = 'SJIS'"],
    "standard_conforming_strings": ["SET standard_conforming_strings = off"],
    "LOAD": ["LOAD 'auto_explain'"],
    "ALTER SYSTEM": ["ALTER SYSTEM SET default_transaction_read_only = off"],
    "ALTER ROLE SET": ["ALTER ROLE CURRENT_USER SET default_transaction_read_only = off"],
    "ALTER DATABASE SET": ["ALTER DATABASE main SET default_transaction_read_only = off"],
    "multi statement": ["SELECT 1; SET default_transaction_read_only = off"],
    "BEGIN READ WRITE": ["BEGIN READ WRITE", "ROLLBACK"],
    "START TRANSACTION READ WRITE": ["START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", "ROLLBACK"],
    "BEGIN READ ONLY, READ WRITE": ["BEGIN TRANSACTION READ ONLY, READ WRITE", "ROLLBACK"],
}


def _run_all(c: RawClient, texts: list[str]) -> list[str]:
    codes = []
    for text in texts:
        r = c.query(text)
        codes += _codes(r)
        if _ready(r) == [b"E"]:
            c.query("ROLLBACK")
    return codes


@pytest.mark.parametrize("how", list(_READER_ESCAPES))
def test_reader_cannot_lift_the_pins(rt, keys: Keys, baseline, how: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        _run_all(c, _READER_ESCAPES[how])
        if _ready(c.query("SELECT 1")) != [b"I"]:
            c.query("ROLLBACK")
        assert _state(c) == baseline
    finally:
        c.close()


# PostgreSQL quotes each string literal of a list setting as one identifier; _same_as_pinned strips the
# white space and double quotes off it (and drops empty items) and calls the result the pinned value.
_SEARCH_PATH_LOOKALIKES = {
    "trailing space": "SET search_path = 'public '",  # the server: "public " (a schema of its own)
    "quoted literal": "SET search_path = '\"public\"'",  # the server: \"\"\"public\"\"\" (a schema named "public")
    "empty item": "SET search_path = public, ''",  # the server: public, ""
}


@pytest.mark.parametrize("how", list(_SEARCH_PATH_LOOKALIKES))
def test_reader_search_path_lookalikes_do_not_change_the_pin(rt, keys: Keys, baseline, how: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        c.query(_SEARCH_PATH_LOOKALIKES[how])
        assert _state(c)[5] == baseline[5]
    finally:
        c.close()


_IN_TRANSACTION = {
    "SET TRANSACTION READ WRITE": "SET TRANSACTION READ WRITE",
    "SET LOCAL transaction_read_only": "SET LOCAL transaction_read_only = off",
    "SET LOCAL dtro": "SET LOCAL default_transaction_read_only = off",
    "set_config local": "SELECT pg_catalog.set_config('transaction_read_only', 'off', true)",
    "SET LOCAL statement_timeout": "SET LOCAL statement_timeout = 0",
    "SET LOCAL search_path": "SET LOCAL search_path = billing",
    "SET TRANSACTION SNAPSHOT": "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
}


@pytest.mark.parametrize("how", list(_IN_TRANSACTION))
def test_reader_cannot_lift_the_pins_inside_a_transaction(rt, keys: Keys, baseline, how: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        r = c.query("BEGIN")
        if _ready(r) != [b"T"]:
            pytest.skip(f"BEGIN refused under the read-only rule: {_codes(r)}")
        c.query(_IN_TRANSACTION[how])
        r = c.query(STATE_SQL)
        state = _values(_rows(r)[0]) if _rows(r) else None
        c.query("ROLLBACK")
        assert state is None or state == baseline
    finally:
        c.close()


def test_reader_set_in_extended_protocol(rt, keys: Keys, baseline) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        for sql in ("SET default_transaction_read_only = off", "SET statement_timeout = 0",
                    "SET search_path = billing", "SELECT pg_catalog.set_config('statement_timeout', '0', false)"):
            c.extended(sql)
        assert _state(c) == baseline
    finally:
        c.close()


def test_reader_statement_timeout_holds_after_a_refused_set(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        c.query("SET statement_timeout = 0")
        c.query("RESET ALL")
        t = time.monotonic()
        codes = _codes(c.query("SELECT pg_catalog.pg_sleep(5)"))
        assert codes == ["57014"] and time.monotonic() - t < 4
    finally:
        c.close()


# ---- the upstream text stays with the gateway ----------------------------------------------------------------


def _notices(frames) -> list[str]:
    return [bytes(p).decode("utf-8", "replace") for k, p in frames if k == ord("N")]


def _leaks(notices: list[str]) -> list[str]:
    return [n for n in notices if "sha256" in n or re.search(r"[0-9a-f]{64}", n) or "FROM (SELECT" in n]


def test_debug_notices_at_startup_do_not_show_the_upstream_text(rt, keys: Keys) -> None:
    proxy, dsn = rt
    c = RawClient(proxy.port, keys.token(), params={"client_min_messages": "debug2"})
    try:
        if _fatal(c) is not None:
            return
        r = c.extended("SELECT email FROM customers ORDER BY id LIMIT 1")
    finally:
        c.close()
    served = _values(_rows(r)[0])[0]
    with psycopg.connect(dsn) as admin:
        raw = admin.execute("SELECT email FROM public.customers ORDER BY id LIMIT 1").fetchone()[0]
    # the outer pad is the derived key XOR 0x5c: with it, any guess hashes offline to what the agent is served
    recovered = []
    for pad in re.findall(r"'([0-9a-f]{128})'", " ".join(_notices(r))):
        key = bytes(b ^ 0x5C for b in bytes.fromhex(pad))[:32]
        recovered.append("h:" + hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()[:16])
    assert served not in recovered, f"derived key recovered from a DEBUG notice: {served} reproduced offline"
    assert not _leaks(_notices(r)), _notices(r)[:1]


def test_debug_notices_after_set_do_not_show_the_upstream_text(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token())
    try:
        c.query("SET client_min_messages = debug2")
        r = c.extended("SELECT email FROM customers ORDER BY id LIMIT 1")
        assert not _leaks(_notices(r)), _notices(r)[:1]
    finally:
        c.close()


def test_simple_query_debug_notices_do_not_show_the_upstream_text(rt, keys: Keys) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token(), params={"client_min_messages": "debug5"})
    try:
        if _fatal(c) is not None:
            return
        r = c.query("SELECT email FROM customers ORDER BY id LIMIT 1")
        assert not _leaks(_notices(r))
    finally:
        c.close()


# ---- after start-up: the writer rule with an upstream_role ---------------------------------------------------

_WRITER_ESCAPES = {
    "SET ROLE postgres": ["SET ROLE postgres"],
    "SET ROLE NONE": ["SET ROLE NONE"],
    "RESET ROLE": ["RESET ROLE"],
    "SET role TO DEFAULT": ["SET role TO DEFAULT"],
    "SET SESSION AUTHORIZATION DEFAULT": ["SET SESSION AUTHORIZATION DEFAULT"],
    "RESET SESSION AUTHORIZATION": ["RESET SESSION AUTHORIZATION"],
    "SET SESSION AUTHORIZATION postgres": ["SET SESSION AUTHORIZATION postgres"],
    "DISCARD ALL": ["DISCARD ALL"],
    "RESET ALL": ["RESET ALL"],
    "set_config role": ["SELECT pg_catalog.set_config('role', 'postgres', false)"],
    "set_config role none": ["SELECT pg_catalog.set_config('role', 'none', false)"],
    "UPDATE pg_settings role": ["UPDATE pg_catalog.pg_settings SET setting = 'none' WHERE name = 'role'"],
    "UPDATE pg_settings timeout": ["UPDATE pg_catalog.pg_settings SET setting = '0' WHERE name = 'statement_timeout'"],
    "SET LOCAL ROLE in a transaction": ["BEGIN", "SET LOCAL ROLE postgres", "COMMIT"],
    "SET statement_timeout 0": ["SET statement_timeout = 0"],
    "ALTER ROLE SET": [f"ALTER ROLE {ROLE} SET statement_timeout = 0"],
    "session_replication_role": ["SET session_replication_role = replica"],
    "SET SESSION CHARACTERISTICS": ["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
}


@pytest.mark.parametrize("how", list(_WRITER_ESCAPES))
def test_writer_cannot_leave_its_role_or_pins(rt, keys: Keys, writer_baseline, how: str) -> None:
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token("wendy", ("rt-writer",)), user="wendy")
    try:
        _run_all(c, _WRITER_ESCAPES[how])
        if _ready(c.query("SELECT 1")) != [b"I"]:
            c.query("ROLLBACK")
        assert _state(c) == writer_baseline
    finally:
        c.close()


def test_writer_role_fence_holds_for_a_table_outside_its_grants(rt, keys: Keys) -> None:
    """After every refused escape, the writer's upstream role still cannot touch customers directly."""
    proxy, _ = rt
    c = RawClient(proxy.port, keys.token("wendy", ("rt-writer",)), user="wendy")
    try:
        c.query("RESET ROLE")
        c.query("DISCARD ALL")
        r = c.query("SELECT pg_catalog.current_setting('role'), current_user")
        assert _values(_rows(r)[0]) == [ROLE, ROLE]
    finally:
        c.close()
