"""The JSON approvals API on a real uvicorn server: every error code, and nothing changes on an error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from console_support import AGENT, ServerThread, call, get_request, hold, write_config
from cryptography.hazmat.primitives.asymmetric import ed25519

from pgwarden.engine.dev_issuer import DevIssuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return DevIssuer.init(tmp_path_factory.mktemp("dev-issuer"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[tuple[ServerThread, Path]]:
    config = write_config(tmp_path_factory.mktemp("gateway"), issuer)
    with ServerThread(config) as server:
        yield server, config


def tok(issuer: DevIssuer, sub: str, *groups: str, **kw: object) -> str:
    return issuer.mint(sub, groups, **kw)  # type: ignore[arg-type]


def api(server: ServerThread, path: str = "") -> str:
    return f"{server.url}/api/approvals{path}"


def test_list_show_approve(site, issuer) -> None:
    server, config = site
    req = hold(config, "ALTER TABLE public.orders ADD COLUMN note text")
    alice = tok(issuer, "alice", "dba")
    listed = call(api(server, "?status=pending"), token=alice)
    assert listed.status == 200 and req.id in [r["id"] for r in listed.json()["approvals"]]
    shown = call(api(server, f"/{req.id}"), token=alice)
    assert shown.status == 200 and shown.json()["statement"].startswith("ALTER TABLE")
    done = call(api(server, f"/{req.id}/approve"), "POST", token=alice, body={"window": "30min", "comment": "ok"})
    assert done.status == 200, done.body
    data = done.json()
    assert data["status"] == "approved" and data["decided_by"] == "alice" and data["window"] is not None
    assert get_request(config, req.id).decided_by == "alice"
    # The requester sees their own request; someone outside the approver groups does not.
    agent = tok(issuer, AGENT.subject, "ai-agents")
    assert req.id in [r["id"] for r in call(api(server, "?status=approved"), token=agent).json()["approvals"]]
    outsider = tok(issuer, "mallory", "sales")
    assert req.id not in [r["id"] for r in call(api(server), token=outsider).json()["approvals"]]
    hidden = call(api(server, f"/{req.id}"), token=outsider)
    assert hidden.status == 403 and hidden.json()["error"]["code"] == "approver_not_allowed"


def test_deny_needs_reason_then_denies(site, issuer) -> None:
    server, config = site
    req = hold(config, "DROP TABLE public.customers")
    bob = tok(issuer, "bob", "dba", "oncall")
    missing = call(api(server, f"/{req.id}/deny"), "POST", token=bob, body={})
    assert missing.status == 422 and missing.json()["error"]["code"] == "reason_required"
    assert get_request(config, req.id).pending
    denied = call(api(server, f"/{req.id}/deny"), "POST", token=bob, body={"reason": "not during business hours"})
    assert denied.status == 200 and denied.json()["comment"] == "not during business hours"
    # Replayed by the same approver: 409 decision_replayed; another approver: 409 already decided.
    again = call(api(server, f"/{req.id}/deny"), "POST", token=bob, body={"reason": "again"})
    assert again.status == 409 and again.json()["error"]["code"] == "decision_replayed"
    other = call(api(server, f"/{req.id}/approve"), "POST", token=tok(issuer, "carol", "dba"), body={})
    assert other.status == 409 and other.json()["error"]["code"] == "approval_already_decided"
    assert get_request(config, req.id).comment == "not during business hours"


@pytest.mark.parametrize("make_token, code", [
    (lambda i: None, "token_missing"),
    (lambda i: "not-a-jwt", "malformed_token"),
    (lambda i: i.mint("alice", ["dba"], now=time.time() - 7200, ttl_s=60), "token_expired"),
    (lambda i: i.mint("alice", ["dba"], audience="someone-else"), "wrong_audience"),
    (lambda i: jwt.encode({"iss": "https://pgwarden-dev-issuer.invalid", "sub": "alice", "aud": "pgwarden", "groups": ["dba"],
                           "exp": int(time.time()) + 600}, ed25519.Ed25519PrivateKey.generate(),
                          algorithm="EdDSA", headers={"kid": i.kid}), "bad_signature"),
    (lambda i: jwt.encode({"iss": "https://pgwarden-dev-issuer.invalid", "sub": "alice", "aud": "pgwarden", "groups": ["dba"],
                           "exp": int(time.time()) + 600}, "s" * 32, algorithm="HS256"), "algorithm_not_allowed"),
])
def test_bad_tokens_are_401_and_change_nothing(site, issuer, make_token, code) -> None:
    server, config = site
    req = hold(config, f"DROP TABLE public.t_{code}")
    token = make_token(issuer)
    for url, method, body in [(api(server), "GET", None), (api(server, f"/{req.id}"), "GET", None),
                              (api(server, f"/{req.id}/approve"), "POST", {})]:
        reply = call(url, method, token=token, body=body)
        assert reply.status == 401, (url, reply.body)
        assert reply.json()["error"]["code"] == code
        assert reply.headers["WWW-Authenticate"].startswith('Bearer realm="pgwarden"')
        if token:
            assert token not in reply.body.decode()
    assert get_request(config, req.id).pending


def test_self_approval_and_outsider_are_403(site, issuer) -> None:
    server, config = site
    req = hold(config, "DROP TABLE public.self_made")
    # The requester, even holding the dba group, cannot approve their own request.
    own = call(api(server, f"/{req.id}/approve"), "POST", token=tok(issuer, AGENT.subject, "ai-agents", "dba"))
    assert own.status == 403 and own.json()["error"]["code"] == "self_approval_forbidden"
    outsider = call(api(server, f"/{req.id}/approve"), "POST", token=tok(issuer, "mallory", "sales"), body={})
    assert outsider.status == 403 and outsider.json()["error"]["code"] == "approver_not_allowed"
    assert "dba" in outsider.json()["error"]["message"]
    assert get_request(config, req.id).pending


def test_unknown_id_404_and_bad_window_422(site, issuer) -> None:
    server, config = site
    alice = tok(issuer, "alice", "dba")
    unknown = call(api(server, "/apr_doesnotexist"), token=alice)
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "approval_not_found"
    req = hold(config, "DROP TABLE public.windows")
    too_long = call(api(server, f"/{req.id}/approve"), "POST", token=alice, body={"window": "2h"})
    assert too_long.status == 422 and too_long.json()["error"]["code"] == "window_too_long"
    junk = call(api(server, f"/{req.id}/approve"), "POST", token=alice, body={"window": "forever"})
    assert junk.status == 422 and junk.json()["error"]["code"] == "window_invalid"
    bare = call(api(server, f"/{req.id}/approve"), "POST", token=alice, body={"window": 60})
    assert bare.status == 422 and bare.json()["error"]["code"] == "window_invalid"
    single = hold(config, "DROP TABLE public.single_use", max_window_ms=0)
    no_window = call(api(server, f"/{single.id}/approve"), "POST", token=alice, body={"window": "5min"})
    assert no_window.status == 422 and no_window.json()["error"]["code"] == "window_not_allowed"
    bad_json = call(api(server, f"/{req.id}/approve"), "POST", token=alice, raw=b"{nope")
    assert bad_json.status == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    bad_status = call(api(server, "?status=maybe"), token=alice)
    assert bad_status.status == 422 and bad_status.json()["error"]["code"] == "status_invalid"
    assert get_request(config, req.id).pending and get_request(config, single.id).pending


def test_store_down_is_503(tmp_path: Path, issuer) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    config = write_config(tmp_path, issuer, store=f"sqlite: {{path: {blocker}/approvals.db}}")
    with ServerThread(config) as server:
        alice = tok(issuer, "alice", "dba")
        for url, method in [(api(server), "GET"), (api(server, "/apr_x"), "GET"),
                            (api(server, "/apr_x/approve"), "POST")]:
            reply = call(url, method, token=alice, body={} if method == "POST" else None)
            assert reply.status == 503, reply.body
            assert reply.json()["error"]["code"] == "approval_store_unavailable"
        # Authentication still comes first: a bad token is 401 even when the store is down.
        assert call(api(server), token="x.y.z").status == 401


def test_console_post_without_csrf_changes_nothing(site, issuer) -> None:
    server, config = site
    req = hold(config, "DROP TABLE public.csrf_target")
    cookie = {"Cookie": f"pgwarden_console={tok(issuer, 'alice', 'dba')}",
              "Content-Type": "application/x-www-form-urlencoded"}
    for form in (b"window=", b"window=&csrf=forged"):
        reply = call(f"{server.url}/console/approvals/{req.id}/approve", "POST", raw=form, headers=cookie)
        assert reply.status == 403 and b"csrf_failed" in reply.body
    page = call(f"{server.url}/console/approvals", headers={"Cookie": cookie["Cookie"]})
    assert page.status == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert cookie["Cookie"].split("=", 1)[1] not in page.body.decode()
    assert get_request(config, req.id).pending
