"""Red-team of the HTTP door: ``pgwarden serve`` (MCP at /mcp), the approvals API and the console.

One real ``pgwarden serve`` subprocess on a real PostgreSQL; real clients (httpx2 for raw HTTP, the ``mcp``
SDK's streamable-HTTP client for tools). Principals: ``agent`` (ai-agents: read-only, DDL held for a dba),
``dev`` (developers: DDL/destructive approvable by ``self`` or a dba), ``dana`` (dba), ``cora``
(compliance: sees ``orders.note`` raw through ``unless_groups``), ``fiona`` (ai-agents + finance-approvers:
an approver of the finance rule who herself sees ``orders.note`` masked).

Claims attacked: bearer verification on /mcp and /api (alg=none, HS256 keyed with the published public
key, tokens in the query string), MCP session binding (B's token with A's ``Mcp-Session-Id``), another
principal's approval ids through ``approval_status`` / ``wait_for_approval``, DNS rebinding (Host/Origin) on
/mcp, CORS on the API, self-approval through the API when ``self`` is an approver, the console's CSRF,
``next=`` redirects, cookie flags, framing headers, XSS through a held statement and its literals, request
size limits (MCP body, API body, the unauthenticated sign-in form), malformed / batch JSON-RPC and error
leakage, and what the console's audit pages show to an approver who is masked herself.

BREACHES (each test asserts the secure behaviour; both fixed since — the audit pages withhold rows,
bound values and error text of a session whose principal saw raw what the viewer's groups would see masked
(``unmasked_beyond``), and the approvals API refuses a body over 64 KiB before reading it):

1. Raw masked values in the console's audit timeline. ``may_audit`` (console/_core.py) opens every
   session of the journal to a member of *any* approver group, and ``_Pages.step_html`` (console/web.py)
   prints each step's result sample as recorded -- "as the client saw them", i.e. raw for a principal in the
   mask's ``unless_groups``. Reproduction: masking ``public.orders.note`` redact, ``unless_groups:
   [compliance]``; cora (compliance) runs ``SELECT id, note FROM orders`` over MCP; fiona (ai-agents,
   finance-approvers -- an approver only of the finance rule, who gets ``[masked]`` for ``note`` over MCP)
   signs in to /console and opens /console/audit/<cora's session>: the raw note is on the page. Fix: show
   the audit trail only to approvers of the rule the session ran under (or an explicit audit group), and/or
   re-mask samples for the viewer (the viewer's MaskSet) before rendering them.

2. The approvals API buffers a body of any size before checking it. ``api._body`` (console/api.py) does
   ``raw = await request.body()`` and only then compares ``len(raw)`` with ``MAX_BODY`` (64 KiB), so any
   principal with a valid token (no approver group needed: the token is verified, the body read, then the
   broker refuses) makes the gateway hold as many bytes as it sends. Reproduction: ``POST
   /api/approvals/apr_x/approve`` with ``Authorization: Bearer <agent token>``, ``Content-Length:
   1000000000`` and 1 KB of body: no answer (the server keeps reading), where /mcp answers 413 at once.
   Fix: refuse a ``Content-Length`` above MAX_BODY before reading, and read ``request.stream()`` with a
   running count that stops at MAX_BODY + 1 (chunked bodies too).

What held: alg=none, HS256-with-the-public-key, expired and wrong-audience tokens get 401 on /mcp and /api;
``?access_token=`` is ignored; a session id used with another principal's token is 404 and shows nothing;
another principal's approval id is "not found" over MCP and its statement never runs for them; a Host or
Origin of another site is refused on /mcp; the API sends no CORS grant; the requester cannot approve their
own request through the API even when ``self`` is an approver; console POSTs without (or with another
token's) CSRF are 403 and change nothing; ``next=`` cannot leave /console; the cookie is HttpOnly and
SameSite=Strict; CSP frame-ancestors 'none' and X-Frame-Options DENY; ``<script>`` / ``onerror`` in a held
statement are escaped; a 5 MB MCP body is 413; malformed and batch JSON-RPC get JSON-RPC errors without a
traceback or a DSN; a huge SQL text is answered, not crashed on; the sign-in form's body is cut by
Starlette's 1 MB field cap (400).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import httpx2
import jwt
import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mcp_server.mcp_helpers import ISSUER, MASK_KEY, PYTHON, Env, http_client, payload, write_config
from support.cases import load_public_cases

NOTE_SENTINEL = "NOTE-SENTINEL-7731"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "rt", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Site:
    env: Env
    base: str
    pem: bytes

    @property
    def mcp(self) -> str:
        return f"{self.base}/mcp"

    def tok(self, sub: str, *groups: str, **kw: object) -> str:
        return self.env.token(sub, list(groups), **kw)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(make_db_module, tmp_path_factory) -> Iterator[Site]:
    dsn = make_db_module(load_public_cases().fixture_sql + "\nANALYZE;")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO orders VALUES (3, 1, 1, %s)", (NOTE_SENTINEL,))
    directory = tmp_path_factory.mktemp("redteam-http")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    config = write_config(directory, dsn, pem)
    data = yaml.safe_load(config.read_text())
    data["masking"]["columns"].append({"column": "public.orders.note", "strategy": "redact",
                                       "unless_groups": ["compliance"]})
    data["rules"] += [
        {"name": "compliance", "match": {"groups": ["compliance"]}, "target": "main",
         "statements": {"allow": ["read"]}, "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.orders"]}},
        {"name": "finance", "match": {"groups": ["finance"]}, "target": "main", "statements": {"allow": ["read"]},
         "approval": {"required_for": ["write"], "approvers": ["finance-approvers"]},
         "schemas": {"allow": ["public"]}, "tables": {"allow": ["public.orders"]}},
    ]
    config.write_text(yaml.safe_dump(data))
    env = Env(directory, config, dsn, key)
    port = _free_port()
    proc = subprocess.Popen([PYTHON, "-m", "pgwarden.cli", "serve", "--config", str(config), "--listen",
                             f"127.0.0.1:{port}"], env=env.server_env(), stderr=subprocess.PIPE, cwd=directory)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("pgwarden serve exited: " + proc.stderr.read().decode()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("pgwarden serve did not listen")
    try:
        yield Site(env, f"http://127.0.0.1:{port}", pem)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(autouse=True)
def _mask_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGWARDEN_MASK_KEY", MASK_KEY)


# -- helpers -----------------------------------------------------------------------------------------------

def mcp_post(site: Site, body: object, token: str | None, *, headers: dict[str, str] | None = None,
             url: str | None = None, content: bytes | None = None) -> httpx2.Response:
    h = dict(MCP_HEADERS)
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    if content is None:
        content = json.dumps(body).encode()
    return httpx2.post(url or site.mcp, content=content, headers=h, timeout=30)


def open_session(site: Site, token: str) -> str:
    r = mcp_post(site, INIT, token)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    n = mcp_post(site, {"jsonrpc": "2.0", "method": "notifications/initialized"}, token,
                 headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    assert n.status_code in (200, 202), n.text
    return sid


def call_tool(url: str, token: str, name: str, args: dict) -> dict:
    async def go() -> dict:
        async with http_client(url, token) as c:
            return payload(await c.call_tool(name, args))
    return anyio.run(go)


@contextmanager
def console(site: Site, token: str) -> Iterator[httpx2.Client]:
    """An httpx2 client signed in to the console through the real sign-in form."""
    with httpx2.Client(base_url=site.base, timeout=30, follow_redirects=False) as client:
        page = client.get("/console/signin")
        nonce = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        done = client.post("/console/signin", data={"csrf": nonce, "next": "/console/approvals", "token": token})
        assert done.status_code == 303, done.text
        yield client


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def api(site: Site, path: str = "") -> str:
    return f"{site.base}/api/approvals{path}"


def held_by_agent(site: Site, sql: str) -> str:
    out = call_tool(site.mcp, site.tok("agent", "ai-agents"), "execute", {"sql": sql})
    assert out.get("status") == "pending_approval", out
    return out["approval"]["id"]


def request_status(site: Site, rid: str) -> str:
    r = httpx2.get(api(site, f"/{rid}"), headers={"Authorization": f"Bearer {site.tok('dana', 'dba')}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["status"]


# -- bearer tokens -----------------------------------------------------------------------------------------

def _forged(site: Site, kind: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "pgwarden", "sub": "dana", "groups": ["dba"], "iat": now, "exp": now + 600}
    if kind == "none":
        return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    # HS256 keyed with the published public key (the classic algorithm-confusion forgery); PyJWT refuses to
    # use a PEM as an HMAC key, so sign by hand.
    import base64
    import hashlib
    import hmac as _hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = _hmac.new(site.pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@pytest.mark.parametrize("kind", ["none", "hs256-public-key"])
def test_forged_tokens_refused_on_mcp_and_api(site: Site, kind: str) -> None:
    token = _forged(site, kind)
    r = mcp_post(site, INIT, token)
    assert r.status_code == 401 and "mcp-session-id" not in r.headers
    a = httpx2.get(api(site), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert a.status_code == 401, a.text
    assert a.json()["error"]["code"] in ("algorithm_not_allowed", "malformed_token", "bad_signature")


def test_token_in_query_string_is_not_a_credential(site: Site) -> None:
    token = site.tok("dana", "dba")
    r = mcp_post(site, INIT, None, url=f"{site.mcp}?access_token={token}")
    assert r.status_code == 401
    a = httpx2.get(api(site, f"?access_token={token}"), timeout=10)
    assert a.status_code == 401 and a.json()["error"]["code"] == "token_missing"
    # nor is the console's cookie a credential for the API (no CSRF through the API)
    with console(site, token) as c:
        assert c.get("/api/approvals").status_code == 401


def test_expired_and_wrong_audience_on_an_open_session(site: Site) -> None:
    sid = open_session(site, site.tok("agent", "ai-agents"))
    for bad in (site.tok("agent", "ai-agents", exp_in=-60), site.tok("agent", "ai-agents", aud="other")):
        r = mcp_post(site, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, bad,
                     headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
        assert r.status_code == 401


# -- MCP sessions and other principals' approvals ------------------------------------------------------------

def test_session_id_of_a_is_useless_with_bs_token(site: Site) -> None:
    sid = open_session(site, site.tok("agent", "ai-agents"))
    hdr = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    other = site.tok("mallory", "ai-agents")
    r = mcp_post(site, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": {"name": "my_permissions", "arguments": {}}}, other, headers=hdr)
    assert r.status_code == 404, r.text
    # nor can B open A's server-to-client stream (where A's requests to the client would arrive)
    g = httpx2.get(site.mcp, headers={**hdr, "Accept": "text/event-stream", "Authorization": f"Bearer {other}"},
                   timeout=10)
    assert g.status_code == 404
    d = httpx2.request("DELETE", site.mcp, headers={**hdr, "Authorization": f"Bearer {other}"}, timeout=10)
    assert d.status_code == 404
    # A's session still works for A
    ok = mcp_post(site, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, site.tok("agent", "ai-agents"),
                  headers=hdr)
    assert ok.status_code == 200


def test_another_principals_approval_id_is_not_found_and_never_runs(site: Site) -> None:
    rid = held_by_agent(site, "CREATE INDEX ON customers (full_name)")
    other = site.tok("mallory", "ai-agents")
    seen = call_tool(site.mcp, other, "approval_status", {"id": rid})
    assert seen.get("error") in ("approval_not_found",) or "not_found" in json.dumps(seen), seen
    # approved by a dba: mallory still cannot collect agent's result
    r = httpx2.post(api(site, f"/{rid}/approve"), json={}, timeout=10,
                    headers={"Authorization": f"Bearer {site.tok('dana', 'dba')}"})
    assert r.status_code == 200, r.text
    waited = call_tool(site.mcp, other, "wait_for_approval", {"id": rid, "seconds": 1})
    assert "not_found" in json.dumps(waited), waited
    with psycopg.connect(site.env.dsn) as conn:
        n = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'customers' "
                         "AND indexdef LIKE '%full_name%'").fetchone()[0]
    assert n == 0


# -- DNS rebinding, CORS ----------------------------------------------------------------------------------

def test_dns_rebinding_host_and_origin_refused_on_mcp(site: Site) -> None:
    token = site.tok("agent", "ai-agents")
    port = site.base.rsplit(":", 1)[1]
    r = mcp_post(site, INIT, token, headers={"Host": f"evil.example:{port}"})
    assert r.status_code in (400, 403, 421) and "mcp-session-id" not in r.headers
    o = mcp_post(site, INIT, token, headers={"Origin": "http://evil.example"})
    assert o.status_code in (400, 403) and "mcp-session-id" not in o.headers


def test_no_cors_grant_on_the_api_or_mcp(site: Site) -> None:
    pre = httpx2.options(api(site), timeout=10, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert "access-control-allow-origin" not in pre.headers
    got = httpx2.get(api(site), timeout=10, headers={"Origin": "http://evil.example",
                                                     "Authorization": f"Bearer {site.tok('dana', 'dba')}"})
    assert "access-control-allow-origin" not in got.headers
    m = httpx2.options(site.mcp, timeout=10, headers={"Origin": "http://evil.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert m.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")


# -- approvals API ----------------------------------------------------------------------------------------

def test_requester_cannot_approve_own_request_through_the_api_even_when_self_may(site: Site) -> None:
    dev = site.tok("dev", "developers")
    out = call_tool(site.mcp, dev, "execute", {"sql": "DELETE FROM orders WHERE id = 2"})
    assert out.get("status") == "pending_approval", out
    rid = out["approval"]["id"]
    r = httpx2.post(api(site, f"/{rid}/approve"), json={}, headers={"Authorization": f"Bearer {dev}"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "self_approval_forbidden"
    # the same subject with a dba group claim is still the requester
    r2 = httpx2.post(api(site, f"/{rid}/approve"), json={}, timeout=10,
                     headers={"Authorization": f"Bearer {site.tok('dev', 'developers', 'dba')}"})
    assert r2.status_code == 403
    assert request_status(site, rid) == "pending"


def test_api_body_limits_and_types(site: Site) -> None:
    rid = held_by_agent(site, "CREATE INDEX ON orders (note)")
    hdr = {"Authorization": f"Bearer {site.tok('dana', 'dba')}", "Content-Type": "application/json"}
    big = httpx2.post(api(site, f"/{rid}/approve"), content=b'{"comment": "' + b"x" * 200_000 + b'"}',
                      headers=hdr, timeout=30)
    assert big.status_code == 413
    for raw in (b"[1,2]", b"{", b'{"window": 3600}', b'{"comment": {"$gt": ""}}', b'{"window": "-1h"}'):
        r = httpx2.post(api(site, f"/{rid}/approve"), content=raw, headers=hdr, timeout=10)
        assert r.status_code in (400, 422), (raw, r.text)
        assert "Traceback" not in r.text
    assert request_status(site, rid) == "pending"


# -- console ----------------------------------------------------------------------------------------------

def test_console_cookie_flags_and_framing(site: Site) -> None:
    c = httpx2.Client(base_url=site.base, timeout=30)
    page = c.get("/console/signin")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    nonce = csrf_of(page.text)
    done = c.post("/console/signin", data={"csrf": nonce, "next": "/console/approvals",
                                           "token": site.tok("dana", "dba")})
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    c.close()


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/console/\\evil.example",
                                    "/\\evil.example", "/console//evil.example", "/console/..//evil.example",
                                    "javascript:alert(1)", "/console/%0d%0aSet-Cookie:x=1"])
def test_signin_next_cannot_leave_the_console(site: Site, target: str) -> None:
    c = httpx2.Client(base_url=site.base, timeout=30)
    page = c.get("/console/signin", params={"next": target})
    nonce = csrf_of(page.text)
    shown_next = re.search(r'name="next" value="([^"]*)"', page.text).group(1)
    done = c.post("/console/signin", data={"csrf": nonce, "next": target, "token": site.tok("dana", "dba")})
    loc = done.headers["location"]
    for where in (loc, shown_next):
        assert where.startswith("/console/") and not where.startswith("//"), where
        assert "\r" not in where and "\n" not in where
        resolved = httpx2.URL(site.base).join(where)
        assert resolved.host == "127.0.0.1", resolved
    assert "set-cookie: x=1" not in str(done.headers).lower()
    c.close()


def test_console_decisions_need_the_csrf_of_the_signed_in_token(site: Site) -> None:
    rid = held_by_agent(site, "CREATE INDEX ON orders (amount)")
    with console(site, site.tok("dana", "dba")) as dana, console(site, site.tok("bob", "dba")) as bob:
        bob_csrf = csrf_of(bob.get(f"/console/approvals/{rid}").text)
        for form in ({}, {"csrf": ""}, {"csrf": bob_csrf}, {"csrf": "0" * 64}):
            r = dana.post(f"/console/approvals/{rid}/approve", data=form)
            assert r.status_code == 403, r.text
        # a cross-site form post carries no cookie (SameSite=Strict): it is a sign-in problem, not a decision
        anon = httpx2.post(f"{site.base}/console/approvals/{rid}/approve", data={"csrf": bob_csrf}, timeout=10)
        assert anon.status_code == 401
        # GET never decides
        assert dana.get(f"/console/approvals/{rid}/approve").status_code in (404, 405)
    assert request_status(site, rid) == "pending"


def test_held_statement_script_is_escaped_in_the_console(site: Site) -> None:
    sql = ("CREATE INDEX \"x<script>alert(1)</script>\" ON orders (customer_id) "
           "WHERE note <> '<img src=x onerror=alert(2)>' -- </code></pre><script>alert(3)</script>")
    rid = held_by_agent(site, sql)
    with console(site, site.tok("dana", "dba")) as c:
        for path in ("/console/approvals", f"/console/approvals/{rid}"):
            body = c.get(path).text
            assert rid in body
            assert "<script>" not in body and "<img" not in body
        flash = c.get("/console/approvals", params={"done": "<script>alert(4)</script>", "status": "approved"}).text
        assert "<script>alert(4)" not in flash


def test_unknown_request_and_bad_ids_leak_nothing(site: Site) -> None:
    hdr = {"Authorization": f"Bearer {site.tok('dana', 'dba')}"}
    for rid in ("apr_doesnotexist", "' OR 1=1 --", "..%2f..%2fetc%2fpasswd", "x" * 5000):
        r = httpx2.get(api(site, f"/{rid}"), headers=hdr, timeout=10)
        assert r.status_code in (404, 414, 400), (rid, r.status_code)
        assert "Traceback" not in r.text and "postgresql://" not in r.text
    with console(site, site.tok("dana", "dba")) as c:
        for sid in ("nope", "%2e%2e%2f%2e%2e%2fpgwarden.yaml"):
            r = c.get(f"/console/audit/{sid}")
            assert r.status_code in (404, 400), (sid, r.status_code)
            assert "Traceback" not in r.text and "targets:" not in r.text


# -- request size and JSON-RPC shape ---------------------------------------------------------------------------

def test_mcp_oversized_malformed_and_batch_requests(site: Site) -> None:
    token = site.tok("agent", "ai-agents")
    big = mcp_post(site, None, token, content=b'{"jsonrpc":"2.0","id":1,"method":"ping","x":"' + b"a" * 5_000_000 + b'"}')
    assert big.status_code == 413
    sid = open_session(site, token)
    hdr = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    for raw in (b"{", b"[]", b'{"jsonrpc": "1.0"}', b"\xff\xfe", b'{"jsonrpc":"2.0","id":{},"method":"tools/call"}',
                json.dumps([{"jsonrpc": "2.0", "id": i, "method": "tools/call",
                             "params": {"name": "my_permissions", "arguments": {}}} for i in range(50)]).encode(),
                b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"query","arguments":{"sql":1}}}'):
        r = mcp_post(site, None, token, headers=hdr, content=raw)
        assert r.status_code < 500, (raw[:40], r.status_code, r.text[:300])
        assert "Traceback" not in r.text and "postgresql://" not in r.text and MASK_KEY not in r.text
    # the server still serves the session afterwards
    ok = mcp_post(site, {"jsonrpc": "2.0", "id": 10, "method": "tools/list"}, token, headers=hdr)
    assert ok.status_code == 200


def test_huge_sql_is_answered(site: Site) -> None:
    sql = "SELECT " + " + ".join(["1"] * 150_000)
    out = call_tool(site.mcp, site.tok("agent", "ai-agents"), "query", {"sql": sql})
    assert out.get("status") == "ok" or "error" in out
    assert "Traceback" not in json.dumps(out)


def test_signin_form_body_is_bounded(site: Site) -> None:
    body = b"csrf=x&next=%2Fconsole%2Fapprovals&token=" + b"A" * 8_000_000
    r = httpx2.post(f"{site.base}/console/signin", content=body, timeout=60,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 413)  # Starlette's 1 MB per-field cap, max_fields=10


def _answer_to_a_huge_declared_body(site: Site, path: str, token: str, wait_s: float = 3.0) -> bytes:
    """Declare a 1 GB JSON body, send 1 KB of it, and return what the server answers within ``wait_s``."""
    port = int(site.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                   "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                   "Content-Length: 1000000000\r\n\r\n").encode() + b'{"comment": "' + b"x" * 1000)
        try:
            return s.recv(4096)
        except TimeoutError:
            return b""


def test_mcp_refuses_a_huge_declared_body_at_once(site: Site) -> None:
    answer = _answer_to_a_huge_declared_body(site, "/mcp", site.tok("agent", "ai-agents"))
    assert answer.startswith(b"HTTP/1.1 413")


def test_api_refuses_a_huge_declared_body_at_once(site: Site) -> None:
    answer = _answer_to_a_huge_declared_body(site, "/api/approvals/apr_x/approve", site.tok("agent", "ai-agents"))
    assert answer.startswith(b"HTTP/1.1 413")


# -- masked values in the console -------------------------------------------------------------------------------

def test_audit_timeline_does_not_show_raw_masked_values_to_a_masked_approver(site: Site) -> None:
    fiona = site.tok("fiona", "ai-agents", "finance-approvers")
    own = call_tool(site.mcp, fiona, "query", {"sql": "SELECT id, note FROM orders ORDER BY id"})
    assert NOTE_SENTINEL not in json.dumps(own)  # fiona herself gets the note masked
    cora = call_tool(site.mcp, site.tok("cora", "compliance"), "query",
                     {"sql": "SELECT id, note FROM orders ORDER BY id"})
    assert NOTE_SENTINEL in json.dumps(cora)  # compliance sees it raw, as configured
    time.sleep(0.3)  # the journal's batch fsync
    with console(site, fiona) as c:
        listing = c.get("/console/audit", params={"subject": "cora"})
        assert listing.status_code in (200, 403)
        pages = [listing.text]
        for sid in set(re.findall(r'href="/console/audit/([^"]+)"', listing.text)):
            pages.append(c.get(f"/console/audit/{sid}").text)
    assert not any(NOTE_SENTINEL in p for p in pages)
