"""The HTML console in a real browser (Playwright driving Debian's chromium): keyboard only.

The browser is installed when missing (``apt-get install -y chromium``, as ``make test`` does); the tests
skip, saying why, only where no browser can be had.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import AGENT, ServerThread, get_request, hold, store_for, write_config, write_journal

from pgwarden.engine.approvals import ApprovalBroker, ApprovalRequest
from pgwarden.engine.dev_issuer import DevIssuer

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(os.environ.get("PGWARDEN_SCREENSHOTS", "/tmp/pgwarden-console-shots"))


def _ensure_chromium() -> str | None:
    """Path of a chromium, installing Debian's when missing and apt is there; None with the reason logged."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, check=False,
                       capture_output=True, timeout=900)
        return shutil.which("chromium")
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    path = _ensure_chromium()
    if path is None:
        pytest.skip("no chromium: install Debian's (apt-get install -y chromium) to run the browser tests")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, args=ARGS)
        except Exception as exc:  # a broken or incompatible browser is also "no browser here"
            pytest.skip(f"chromium at {path} could not be started by Playwright: {exc}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return DevIssuer.init(tmp_path_factory.mktemp("dev-issuer"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, issuer: DevIssuer) -> Iterator[tuple[ServerThread, Path]]:
    config = write_config(tmp_path_factory.mktemp("gateway"), issuer)
    with ServerThread(config) as server:
        yield server, config


def _tab_to(page, predicate: str, limit: int = 60) -> None:
    """Press Tab until ``predicate`` (JS over ``el`` = document.activeElement) is true."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!({predicate}); }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def _sign_in(page, server: ServerThread, token: str) -> None:
    page.goto(f"{server.url}/console/approvals")
    assert "/console/signin" in page.url  # not signed in: sent to the sign-in page, keeping where to go
    _tab_to(page, "el.id === 'token'")
    page.keyboard.insert_text(token)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/approvals**")


def _wait_in_thread(config: Path, request_id: str) -> tuple[threading.Thread, list[ApprovalRequest]]:
    """A waiting client, as a gateway holding the statement would: broker.wait on another broker, same store."""
    seen: list[ApprovalRequest] = []

    async def wait() -> None:
        broker = ApprovalBroker(store_for(config))
        await broker.start(background=False)
        try:
            seen.append(await broker.wait(request_id, timeout=30))
        finally:
            await broker.close()

    thread = threading.Thread(target=lambda: asyncio.run(wait()), daemon=True)
    thread.start()
    return thread, seen


def test_sign_in_and_approve_with_the_keyboard(browser, site, issuer) -> None:
    server, config = site
    req = hold(config, "ALTER TABLE public.orders ADD COLUMN note text DEFAULT '<b>x</b>' -- nightly migration")
    token = issuer.mint("alice", ["dba"])
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, server, token)
        cookie = next(c for c in context.cookies() if c["name"] == "pgwarden_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        html = page.content()
        assert token not in html  # never rendered
        card = page.locator(f"#req-{req.id}")
        assert card.is_visible()
        # The SQL is there, highlighted on the server, with the markup in it escaped.
        assert card.locator(".sql-keyword", has_text="ALTER").count() == 1
        assert card.locator(".sql-string").first.inner_text() == "'<b>x</b>'"
        assert card.locator(".sql-comment").inner_text() == "-- nightly migration"
        assert "DDL waits for a DBA" in card.inner_text() and "drop-table" in card.inner_text()
        assert "agent-7" in card.inner_text()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "approvals-pending.png"), full_page=True)

        waiter, seen = _wait_in_thread(config, req.id)
        _tab_to(page, f"el.id === 'approve-{req.id}'")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"  # the focus is visible
        page.screenshot(path=str(SHOTS / "approve-focused.png"), full_page=False)
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/approvals?done=*")
        assert page.locator("[role=status]").inner_text().endswith("approved.")
        waiter.join(20)
        assert seen and seen[0].status.value == "approved" and seen[0].decided_by == "alice"
        assert get_request(config, req.id).window is None  # "once" was the default
        page.screenshot(path=str(SHOTS / "approvals-decided.png"), full_page=True)
        assert "alice" in page.locator("#decided ~ table").inner_text()
    finally:
        context.close()


def test_deny_with_reason_with_the_keyboard(browser, site, issuer) -> None:
    server, config = site
    req = hold(config, "DROP TABLE public.customers")
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, server, issuer.mint("bob", ["dba"]))
        _tab_to(page, f"el.id === 'reason-{req.id}'")
        page.keyboard.type("not before the backup <finishes>")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == f"deny-{req.id}"
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/approvals?done=*")
        decided = get_request(config, req.id)
        assert decided.status.value == "denied" and decided.comment == "not before the backup <finishes>"
        assert "not before the backup <finishes>" in page.locator("#decided ~ table").inner_text()
    finally:
        context.close()


def test_lacking_rights_page(browser, site, issuer) -> None:
    server, config = site
    req = hold(config, "DROP TABLE public.invoices")
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, server, issuer.mint("mallory", ["sales", "support"]))
        assert req.id not in page.content()  # not listed for someone who cannot decide it
        response = page.goto(f"{server.url}/console/approvals/{req.id}")
        assert response is not None and response.status == 403
        text = page.locator("main").inner_text()
        assert "You are signed in as mallory (groups: sales, support)" in text
        assert "this request can be approved by members of dba" in text
        page.screenshot(path=str(SHOTS / "lacking-rights.png"), full_page=True)
        # The requester may look but not decide their own request.
        other = browser.new_context()
        try:
            p2 = other.new_page()
            _sign_in(p2, server, issuer.mint(AGENT.subject, ["ai-agents"]))
            p2.goto(f"{server.url}/console/approvals/{req.id}")
            assert "you asked for it yourself" in p2.locator("main").inner_text()
            assert p2.locator(f"#approve-{req.id}").count() == 0
        finally:
            other.close()
        assert get_request(config, req.id).pending
    finally:
        context.close()


def test_audit_sessions_and_timeline(browser, site, issuer) -> None:
    server, config = site
    session_id = write_journal(config.parent / "journal")
    context = browser.new_context()
    page = context.new_page()
    try:
        _sign_in(page, server, issuer.mint("alice", ["dba"]))
        page.goto(f"{server.url}/console/audit")
        assert page.locator("table").inner_text().count("agent-7") >= 1
        _tab_to(page, f"el.getAttribute('href') === '/console/audit/{session_id}'")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/console/audit/{session_id}")
        text = page.locator("main").inner_text()
        assert "approved by alice" in text and "needs_approval" in text and "deny" in text
        assert "************1111" in text and "public.customers.card_number" in text
        assert page.locator(".sql-comment", has_text="<script>alert(1)</script>").count() == 1
        assert page.locator("td", has_text="<b>************4242</b>").count() == 1  # escaped, not markup
        page.screenshot(path=str(SHOTS / "audit-session.png"), full_page=True)
        # An agent cannot read the audit trail.
        page2 = browser.new_context().new_page()
        _sign_in(page2, server, issuer.mint("agent-9", ["ai-agents"]))
        reply = page2.goto(f"{server.url}/console/audit")
        assert reply is not None and reply.status == 403
        assert "can be read by members of dba" in page2.locator("main").inner_text()
        page2.context.close()
    finally:
        context.close()
