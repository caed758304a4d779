"""The HTML console under ``/console``: server-rendered, no JavaScript, usable with the keyboard alone.

Pages: ``/console/signin`` (paste a token; it is kept in an HttpOnly, SameSite=Strict cookie and never
rendered), ``/console/approvals`` (pending requests with their SQL, reasons, lint findings, requester and
age, and approve / grant window / deny forms; decided requests with who, when and why),
``/console/approvals/{id}``, ``/console/audit`` (sessions from the journal) and ``/console/audit/{session}``
(the timeline). Every POST form carries a CSRF token bound to the signed-in token. Every value is
escaped; SQL is highlighted on the server (:mod:`.highlight`).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pgwarden.audit import review
from pgwarden.engine.approvals import ApprovalRequest, ApprovalStatus
from pgwarden.engine.principal import Principal

from ._core import (
    ConsoleError,
    approver_groups,
    audit_groups,
    authenticate,
    broker_of,
    can_decide,
    can_view,
    error_from,
    format_ms,
    groups_text,
    may_audit,
    not_visible,
    parse_window,
    unmasked_beyond,
)
from .highlight import highlight_sql
from .static import CSS

if TYPE_CHECKING:
    from pgwarden.engine.runtime import Runtime

__all__ = ["web_routes"]

log = logging.getLogger("pgwarden.console")

COOKIE = "pgwarden_console"
SIGNIN_COOKIE = "pgwarden_signin"
PREFIX = "/console"
WINDOW_CHOICES_MS = (5 * 60_000, 15 * 60_000, 30 * 60_000, 3_600_000, 2 * 3_600_000, 4 * 3_600_000,
                     8 * 3_600_000, 24 * 3_600_000)
MAX_FORM_TEXT = 4000
DECIDED_SHOWN = 50

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def e(value: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _ms_label(ms: int) -> str:
    return format_ms(ms)


def _window_value(ms: int) -> str:
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}min"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return e(moment)
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{e(moment.isoformat())}">{e(text)}</time>'


def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/approvals"


class _Pages:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._secret = secrets.token_bytes(32)

    # -- session, CSRF ------------------------------------------------------------------------------

    def csrf_for(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).digest()
        return hmac.new(self._secret, b"csrf:" + digest, hashlib.sha256).hexdigest()

    async def who(self, request: Request) -> tuple[Principal, str]:
        token = request.cookies.get(COOKIE)
        return await authenticate(self.runtime, token), token or ""

    async def check_csrf(self, request: Request, token: str, form: Mapping[str, Any]) -> None:
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, self.csrf_for(token)):
            raise ConsoleError(403, "csrf_failed", "this form is out of date or did not come from this console; "
                                                   "reload the page and try again")

    # -- layout -------------------------------------------------------------------------------------

    def page(self, title: str, body: str, *, who: Principal | None = None, token: str = "", status: int = 200,
             current: str = "", headers: Mapping[str, str] | None = None) -> HTMLResponse:
        nav = ""
        if who is not None:
            links = [("approvals", "Approvals"), ("audit", "Audit")]
            items = "".join(
                f'<a href="{PREFIX}/{k}"' + (' aria-current="page"' if k == current else "") + f">{label}</a>"
                for k, label in links)
            nav = (f'<nav aria-label="Main">{items}</nav><div class="who">Signed in as <strong>{e(who.subject)}'
                   f"</strong> ({e(groups_text(who.groups))})"
                   f'<form method="post" action="{PREFIX}/signout">{self.csrf_field(token)}'
                   '<button type="submit">Sign out</button></form></div>')
        doc = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)} — pgwarden</title>"
            f'<link rel="stylesheet" href="{PREFIX}/static/console.css"></head><body>'
            '<a class="skip" href="#main">Skip to content</a>'
            f'<header><span class="brand">pgwarden console</span>{nav}</header>'
            f'<main id="main" tabindex="-1"><h1>{e(title)}</h1>{body}</main></body></html>'
        )
        return HTMLResponse(doc, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})

    def csrf_field(self, token: str) -> str:
        return f'<input type="hidden" name="csrf" value="{e(self.csrf_for(token))}">' if token else ""

    def problem(self, err: ConsoleError, who: Principal | None = None, token: str = "",
                request_obj: ApprovalRequest | None = None, back: str | None = None) -> HTMLResponse:
        """An error page a person understands (what happened, who they are, who could do it)."""
        title = {401: "Please sign in again", 403: "You cannot do this", 404: "Not found",
                 409: "Already decided", 422: "Please check what you entered", 503: "Approvals are unavailable"
                 }.get(err.status, "Something went wrong")
        parts = [f'<div class="problem" role="alert"><p>{e(err.message)}</p>'
                 f'<p class="hint">Error code: <code>{e(err.code)}</code></p></div>']
        if who is not None and err.status == 403:
            if err.code == "self_approval_forbidden":
                allowed = approver_groups(request_obj) if request_obj else err.allowed
                parts.append(f"<p>You are signed in as <strong>{e(who.subject)}</strong>, who asked for this "
                             f"request. Someone else from {e(', '.join(allowed) or 'the approver groups')} must "
                             "decide it.</p>")
            elif err.allowed or request_obj is not None:
                allowed = err.allowed or (approver_groups(request_obj) if request_obj else ())
                parts.append(f"<p>You are signed in as <strong>{e(who.subject)}</strong> (groups: "
                             f"{e(groups_text(who.groups))}); this request can be approved by members of "
                             f"<strong>{e(', '.join(allowed) or '(no group)')}</strong>.</p>"
                             "<p>Ask one of them, or sign in with a token that carries one of those groups.</p>")
        if err.status == 503:
            parts.append("<p>Nothing was changed. Try again in a moment; if it persists, the operator should "
                         "check the <code>approvals.store</code> setting.</p>")
        parts.append(f'<p><a href="{e(back or PREFIX + "/approvals")}">Back to the approvals</a></p>')
        return self.page(title, "".join(parts), who=who, token=token, status=err.status, headers=err.headers
                         if err.status != 401 else None)

    # -- sign in ------------------------------------------------------------------------------------

    def signin_form(self, nonce: str, next_url: str, message: str | None = None, status: int = 200) -> HTMLResponse:
        note = f'<div class="problem" role="alert"><p>{e(message)}</p></div>' if message else ""
        body = (
            f"{note}<p>Paste the access token your identity provider issued you. It is kept in a cookie this "
            "page's scripts cannot read, sent only to this console, and never shown again.</p>"
            f'<form method="post" action="{PREFIX}/signin" class="card">'
            f'<input type="hidden" name="csrf" value="{e(nonce)}">'
            f'<input type="hidden" name="next" value="{e(next_url)}">'
            '<label for="token">Access token (JWT)</label>'
            '<input type="password" id="token" name="token" autocomplete="off" spellcheck="false" required '
            'aria-describedby="token-hint">'
            '<p class="hint" id="token-hint">For the demo: <code>pgwarden token mint --sub you --groups dba</code>'
            "</p><button type=\"submit\">Sign in</button></form>"
        )
        response = self.page("Sign in", body, status=status)
        response.set_cookie(SIGNIN_COOKIE, nonce, max_age=600, path=PREFIX, httponly=True, samesite="strict")
        return response

    async def signin_get(self, request: Request) -> Response:
        return self.signin_form(secrets.token_urlsafe(24), _safe_next(request.query_params.get("next")))

    async def signin_post(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        nonce = request.cookies.get(SIGNIN_COOKIE) or ""
        sent = form.get("csrf")
        next_url = _safe_next(str(form.get("next") or ""))
        fresh = secrets.token_urlsafe(24)
        if not nonce or not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
            return self.signin_form(fresh, next_url, "The sign-in form had expired; please paste your token again.",
                                    status=403)
        token = str(form.get("token") or "").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            principal = await authenticate(self.runtime, token)
        except ConsoleError as err:
            return self.signin_form(fresh, next_url, f"That token was not accepted: {err.message}", status=err.status)
        exp = principal.claims.get("exp")
        max_age = max(int(exp - time.time()), 1) if isinstance(exp, (int, float)) else 3600
        response = RedirectResponse(next_url, status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, token, max_age=max_age, path=PREFIX, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
        log.info("console: %s signed in", principal.subject)
        return response

    async def signout(self, request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        token = request.cookies.get(COOKIE) or ""
        if token:
            await self.check_csrf(request, token, form)
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    def signed(self, fn: Callable[[Request, Principal, str], Awaitable[Response]]
               ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page: sign-in first, then errors as pages a person understands."""
        async def endpoint(request: Request) -> Response:
            try:
                who, token = await self.who(request)
            except ConsoleError as err:
                if request.method == "GET" and err.status == 401:
                    if err.code == "token_missing":
                        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                        return RedirectResponse(f"{PREFIX}/signin?{urlencode({'next': target})}", status_code=303)
                    return self.signin_form(secrets.token_urlsafe(24), _safe_next(request.url.path),
                                            f"Please sign in again: {err.message}", status=401)
                return self.problem(err)
            try:
                return await fn(request, who, token)
            except Exception as exc:
                err = error_from(exc)
                if err.code == "internal_error":
                    log.exception("console page failed")
                return self.problem(err, who, token)

        return endpoint

    # -- approvals ----------------------------------------------------------------------------------

    def _window_select(self, req: ApprovalRequest) -> str:
        rid = e(req.id)
        if req.max_window_ms <= 0 or not req.scope:
            why = ("the policy makes this approval single-use" if req.max_window_ms <= 0
                   else "the statement touches no table a window could be limited to")
            return (f'<input type="hidden" name="window" value=""><p class="hint" id="window-hint-{rid}">'
                    f"Approves this exact statement once ({e(why)}).</p>")
        choices = [ms for ms in WINDOW_CHOICES_MS if ms < req.max_window_ms] + [req.max_window_ms]
        options = ['<option value="" selected>Once: this exact statement only</option>']
        options += [f'<option value="{e(_window_value(ms))}">Window of {e(_ms_label(ms))}</option>' for ms in choices]
        tables = ", ".join(f"{a} on {r}" for r, a in req.scope if not r.startswith("pgwarden:"))
        tags = ", ".join(a for r, a in req.scope if r == "pgwarden:statement")
        scope = f"{tables} ({tags} statements only)" if tags else tables
        return (f'<label for="window-{rid}">Approve for</label><select id="window-{rid}" name="window" '
                f'aria-describedby="window-hint-{rid}">{"".join(options)}</select>'
                f'<p class="hint" id="window-hint-{rid}">A window lets {e(req.requester)} run statements doing '
                f"{e(scope)} on {e(req.target)} until it ends (at most {e(_ms_label(req.max_window_ms))}).</p>")

    def decide_forms(self, req: ApprovalRequest, who: Principal, token: str) -> str:
        rid = e(req.id)
        if not can_decide(who, req):
            if who.subject == req.requester:
                why = "you asked for it yourself; another approver must decide it"
            else:
                why = (f"you are signed in as {who.subject} ({groups_text(who.groups)}); it can be approved by "
                       f"members of {', '.join(approver_groups(req)) or '(no group)'}")
            return f'<p class="hint">You cannot decide this request: {e(why)}.</p>'
        action = f"{PREFIX}/approvals/{quote(req.id)}"
        return (
            '<div class="forms">'
            f'<form method="post" action="{action}/approve" aria-label="Approve {rid}">{self.csrf_field(token)}'
            f"{self._window_select(req)}"
            f'<label for="comment-{rid}">Comment (optional)</label>'
            f'<input type="text" id="comment-{rid}" name="comment" maxlength="{MAX_FORM_TEXT}">'
            f'<button type="submit" class="approve" id="approve-{rid}">Approve</button></form>'
            f'<form method="post" action="{action}/deny" aria-label="Deny {rid}">{self.csrf_field(token)}'
            f'<label for="reason-{rid}">Reason for denying (required; the requester is told)</label>'
            f'<textarea id="reason-{rid}" name="reason" required maxlength="{MAX_FORM_TEXT}"></textarea>'
            f'<button type="submit" class="deny" id="deny-{rid}">Deny</button></form>'
            "</div>"
        )

    def request_card(self, req: ApprovalRequest, who: Principal, token: str, now: datetime, *,
                     heading: str = "h3", detail: bool = False) -> str:
        rid = e(req.id)
        age = format_ms((now - req.created).total_seconds() * 1000)
        left = (req.expires - now).total_seconds() * 1000
        facts = [
            ("Requester", f"{e(req.requester)} ({e(groups_text(req.requester_groups))})"),
            ("Target / role", f"{e(req.target)} as {e(req.role or 'its rule login')}"),
            ("Asked", f"{e(age)} ago, {_when(req.created)} via {e(req.channel.value)}"),
        ]
        if req.pending:
            facts.append(("Times out", f"in {e(format_ms(left))}" if left > 0 else "now"))
        facts.append(("Approvers", e(", ".join(approver_groups(req)) or "(none)")))
        if req.triggers:
            facts.append(("Held because of", e(", ".join(req.triggers))))
        if detail:
            facts += [("Request id", f"<code>{rid}</code>"), ("Policy version", f"<code>{e(req.policy_version[:16])}</code>"),
                      ("Binding", f"<code>{e(req.binding[:16])}…</code>")]
        if not req.pending:
            facts += [("Status", f'<span class="badge {e(req.status.value)}">{e(req.status.value)}</span>'),
                      ("Decided by", e(req.decided_by or "—")), ("Decided at", _when(req.decided_at))]
            if req.comment:
                facts.append(("Why", e(req.comment)))
            if req.window is not None:
                facts.append(("Window until", _when(req.window.until)))
        dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        params = ""
        if req.parameters:
            items = "".join(f"<li><code>${i}</code> = " + ("<em>NULL</em>" if p is None else f"<code>{e(p)}</code>")
                            + "</li>" for i, p in enumerate(req.parameters, start=1))
            params = f"<h4>Parameters</h4><ul>{items}</ul>"
        reasons = "".join(f"<li><code>{e(r.code)}</code> {e(r.message)}</li>" for r in req.reasons)
        reasons_html = f"<h4>Why it is held</h4><ul>{reasons}</ul>" if reasons else ""
        lint = ""
        if req.lint_findings:
            items = "".join("<li>" + "; ".join(f"{e(k)}: <code>{e(v)}</code>" for k, v in f.items()) + "</li>"
                            for f in req.lint_findings)
            lint = f"<h4>Lint findings</h4><ul>{items}</ul>"
        link = "" if detail else f' <a href="{PREFIX}/approvals/{quote(req.id)}">details<span class="skip"> of {rid}</span></a>'
        title = f"{e(req.requester)} wants to run this on {e(req.target)}"
        forms = self.decide_forms(req, who, token) if req.pending else ""
        return (f'<article class="card" aria-labelledby="h-{rid}" id="req-{rid}">'
                f'<{heading} id="h-{rid}">{title}{link}</{heading}>'
                f'<pre class="sql"><code>{highlight_sql(req.statement)}</code></pre>'
                f'<dl class="facts">{dl}</dl>{params}{reasons_html}{lint}{forms}</article>')

    def decided_table(self, rows: Iterable[ApprovalRequest]) -> str:
        body = []
        for r in rows:
            statement = r.statement if len(r.statement) <= 120 else r.statement[:119] + "…"
            why = r.comment or ("window until " + r.window.until.isoformat() if r.window else "")
            body.append(
                f'<tr><td><a href="{PREFIX}/approvals/{quote(r.id)}"><code>{e(r.id[:12])}</code></a></td>'
                f'<td><code>{e(statement)}</code></td><td>{e(r.requester)}</td>'
                f'<td><span class="badge {e(r.status.value)}">{e(r.status.value)}</span></td>'
                f"<td>{e(r.decided_by or '—')}</td><td>{_when(r.decided_at)}</td><td>{e(why)}</td></tr>")
        if not body:
            return "<p>No decided requests yet.</p>"
        return ("<table><caption class=\"hint\">Most recent first</caption><thead><tr><th scope=col>Request</th>"
                "<th scope=col>Statement</th><th scope=col>Requester</th><th scope=col>Status</th>"
                "<th scope=col>Decided by</th><th scope=col>When</th><th scope=col>Why</th></tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    async def approvals(self, request: Request, who: Principal, token: str) -> Response:
        broker = broker_of(self.runtime)
        everything = [r for r in await broker.list() if can_view(who, r)]
        now = broker.now()
        pending = sorted((r for r in everything if r.pending and r.expires > now), key=lambda r: r.created)
        decided = sorted((r for r in everything if not r.pending), key=lambda r: r.decided_at or r.created,
                         reverse=True)[:DECIDED_SHOWN]
        flash = ""
        done, status = request.query_params.get("done"), request.query_params.get("status")
        if done and status in {s.value for s in ApprovalStatus}:
            flash = f'<p class="flash" role="status">Request <code>{e(done)}</code> {e(status)}.</p>'
        cards = "".join(self.request_card(r, who, token, now) for r in pending) or \
            "<p>Nothing is waiting for a decision you can see.</p>"
        body = (f"{flash}<h2 id=\"pending\">Pending ({len(pending)})</h2>{cards}"
                f"<h2 id=\"decided\">Decided</h2>{self.decided_table(decided)}")
        return self.page("Approvals", body, who=who, token=token, current="approvals")

    async def approval(self, request: Request, who: Principal, token: str) -> Response:
        broker = broker_of(self.runtime)
        req = await broker.get(request.path_params["id"])
        if not can_view(who, req):
            return self.problem(not_visible(who, req), who, token, req)
        body = self.request_card(req, who, token, broker.now(), heading="h2", detail=True)
        return self.page(f"Request {req.id}", body, who=who, token=token, current="approvals")

    async def _decide(self, request: Request, who: Principal, token: str, approve: bool) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        await self.check_csrf(request, token, form)
        rid = request.path_params["id"]
        broker = broker_of(self.runtime)
        back = f"{PREFIX}/approvals/{quote(rid)}"
        try:
            if approve:
                window = parse_window(str(form.get("window") or ""))
                comment = str(form.get("comment") or "").strip()[:MAX_FORM_TEXT] or None
                done = await broker.approve(rid, who.subject, who.groups, window_ms=window, comment=comment)
            else:
                reason = str(form.get("reason") or "").strip()[:MAX_FORM_TEXT]
                if not reason:
                    raise ConsoleError(422, "reason_required", "give a reason for denying: the requester is told it")
                done = await broker.deny(rid, who.subject, who.groups, reason)
        except Exception as exc:
            err = error_from(exc)
            req = None
            if err.status == 403:
                try:
                    req = await broker.get(rid)
                except Exception:
                    req = None
            return self.problem(err, who, token, req, back=back)
        log.info("approval %s %s by %s in the console", done.id, done.status.value, who.subject)
        query = urlencode({"done": done.id, "status": done.status.value})
        return RedirectResponse(f"{PREFIX}/approvals?{query}", status_code=303, headers=SECURITY_HEADERS)

    async def approve(self, request: Request, who: Principal, token: str) -> Response:
        return await self._decide(request, who, token, True)

    async def deny(self, request: Request, who: Principal, token: str) -> Response:
        return await self._decide(request, who, token, False)

    # -- audit --------------------------------------------------------------------------------------

    def journal_dir(self) -> Path:
        directory = self.runtime.config.audit.journal_dir
        if not directory.is_absolute():
            directory = (self.runtime.config.base_dir or Path.cwd()) / directory
        return directory

    def audit_refused(self, who: Principal, token: str) -> HTMLResponse:
        groups = ", ".join(audit_groups(self.runtime)) or "(no approver group is configured)"
        err = ConsoleError(403, "audit_not_allowed", "the audit trail is open to the people who approve")
        body = (f'<div class="problem" role="alert"><p>{e(err.message)}.</p></div>'
                f"<p>You are signed in as <strong>{e(who.subject)}</strong> (groups: {e(groups_text(who.groups))}); "
                f"the audit trail can be read by members of <strong>{e(groups)}</strong>.</p>")
        return self.page("You cannot read the audit trail", body, who=who, token=token, status=403, current="audit")

    async def audit(self, request: Request, who: Principal, token: str) -> Response:
        if not may_audit(self.runtime, who):
            return self.audit_refused(who, token)
        q = request.query_params
        subject = (q.get("subject") or "").strip() or None
        decision = q.get("decision") if q.get("decision") in ("allow", "deny", "needs_approval") else None
        since = (q.get("since") or "").strip() or None
        directory = self.journal_dir()
        problem = ""
        found: list[review.SessionSummary] = []
        if not directory.is_dir():
            problem = f"<p>No journal yet at <code>{e(directory)}</code>: no statement has been recorded.</p>"
        else:
            try:
                found = await anyio.to_thread.run_sync(
                    lambda: review.sessions(directory, since=since, subject=subject, decision=decision))
            except review.JournalDamaged as exc:
                problem = (f'<div class="problem" role="alert"><p>The journal is damaged: {e(exc)}. Nothing is '
                           "shown from a journal that does not verify.</p></div>")
            except ValueError:
                problem = ('<div class="problem" role="alert"><p>“Since” must be a date or time such as '
                           "2025-06-01 or 2025-06-01T14:00.</p></div>")
        options = "".join(f'<option value="{v}"' + (" selected" if v == decision else "") + f">{label}</option>"
                          for v, label in (("", "any"), ("allow", "allowed"), ("deny", "denied"),
                                           ("needs_approval", "held for approval")))
        filters = (
            f'<form method="get" action="{PREFIX}/audit" class="card filters" aria-label="Filter sessions">'
            f'<div><label for="f-subject">Subject</label><input type="text" id="f-subject" name="subject" '
            f'value="{e(subject)}"></div>'
            f'<div><label for="f-decision">With a decision</label><select id="f-decision" name="decision">'
            f"{options}</select></div>"
            f'<div><label for="f-since">Since (UTC)</label><input type="text" id="f-since" name="since" '
            f'value="{e(since)}" placeholder="2025-06-01T14:00"></div>'
            '<div><button type="submit">Filter</button></div></form>')
        rows = "".join(
            f'<tr><td><a href="{PREFIX}/audit/{quote(s.id)}"><code>{e(s.id[:12])}</code></a></td>'
            f"<td>{e(s.subject)}</td><td>{e(s.channel)}</td><td>{e(s.target)}</td><td>{_when(s.start)}</td>"
            f"<td>{'open' if s.open else _when(s.end)}</td><td>{s.statements}</td>"
            f"<td>{e(', '.join(f'{k} {v}' for k, v in sorted(s.decisions.items())))}</td></tr>"
            for s in reversed(found))
        table = ("<table><thead><tr><th scope=col>Session</th><th scope=col>Subject</th><th scope=col>Channel</th>"
                 "<th scope=col>Target</th><th scope=col>Started</th><th scope=col>Ended</th>"
                 f"<th scope=col>Statements</th><th scope=col>Decisions</th></tr></thead><tbody>{rows}</tbody></table>"
                 if found else "" if problem else "<p>No sessions match.</p>")
        return self.page("Audit sessions", filters + problem + table, who=who, token=token, current="audit")

    async def audit_session(self, request: Request, who: Principal, token: str) -> Response:
        if not may_audit(self.runtime, who):
            return self.audit_refused(who, token)
        directory = self.journal_dir()
        sid = request.path_params["session"]
        try:
            line = await anyio.to_thread.run_sync(review.timeline, directory, sid)
        except review.JournalDamaged as exc:
            raise ConsoleError(409, "journal_damaged", f"the journal is damaged: {exc}") from None
        except (LookupError, FileNotFoundError) as exc:
            raise ConsoleError(404, "session_not_found", str(exc.args[0] if exc.args else exc)) from None
        s = line.session
        facts = [("Subject", f"{e(s.subject)} ({e(', '.join(s.groups) or 'no groups')})"),
                 ("Channel / target", f"{e(s.channel)} → {e(s.target)}"),
                 ("Client", f"{e(s.client_address or '?')} ({e(s.auth_method or '?')})"),
                 ("Started", _when(s.start)), ("Ended", "still open" if s.open else _when(s.end)),
                 ("Statements", str(s.statements))]
        head = ('<div class="card"><dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
                + "</dl></div>")
        # an open session's groups are not in the journal yet (its record is written at its end)
        hidden = unmasked_beyond(self.runtime, who, None if s.open else s.groups)
        steps = "".join(self.step_html(step, hidden) for step in line.steps) or "<li>No statements recorded.</li>"
        body = (f"{head}<h2>Timeline</h2><ol class=\"timeline\">{steps}</ol>"
                f'<p><a href="{PREFIX}/audit">Back to the sessions</a></p>')
        return self.page(f"Session {s.id[:12]}", body, who=who, token=token, current="audit")

    def step_html(self, step: review.StatementStep, hidden: Sequence[str] = ()) -> str:
        """One statement of a timeline. ``hidden``: masks the session's principal was exempt from and the
        viewer is not (``unmasked_beyond``) — its rows, bound values and error text are then withheld."""
        decision = step.decision or "undecided"
        head = (f'<h3>#{step.index} <span class="badge {e(decision)}">{e(decision)}</span> '
                f"{_when(step.start)} · {step.duration_ms:.1f} ms"
                + (f" · rule {e(step.rule)}" if step.rule else "")
                + (f" · {e(step.status)}" + (f" {e(step.sqlstate)}" if step.sqlstate else "")) + "</h3>")
        parts = [head, f'<pre class="sql"><code>{highlight_sql(step.text)}</code></pre>']
        if step.upstream_text and step.upstream_text != step.text:
            parts.append(f'<details><summary>As it ran upstream</summary><pre class="sql"><code>'
                         f"{highlight_sql(step.upstream_text)}</code></pre></details>")
        if step.reasons:
            parts.append("<h4>Reasons</h4><ul>" + "".join(f"<li>{e(r)}</li>" for r in step.reasons) + "</ul>")
        if step.masked_columns:
            parts.append(f"<p>Masked: {e(', '.join(step.masked_columns))}</p>")
        for a in step.approvals:
            waited = f" after waiting {format_ms(a.wait_ms)}" if a.wait_ms is not None else ""
            parts.append(f"<p>Approval <code>{e(a.id)}</code> requested {_when(a.requested_at)} of "
                         f"{e(', '.join(a.approvers) or '?')}: <strong>{e(a.decision or 'pending')}</strong> by "
                         f"{e(a.approver or '?')} at {_when(a.decided_at)}{e(waited)}</p>")
        withheld = (f'<p class="hint">Withheld from you: this session\'s principal sees '
                    f"{e(', '.join(hidden))} unmasked, which your groups would see masked.</p>") if hidden else ""
        if step.parameters is not None:
            parts.append(withheld if hidden else "<p>Bound values: " + e(", ".join(
                f"${i}=" + ("NULL" if v is None else repr(v)) for i, v in enumerate(step.parameters, 1))) + "</p>")
        if step.error:
            parts.append(withheld if hidden else f'<p class="problem">{e(step.error)}</p>')
        if step.row_count is not None:
            parts.append(f"<p>{step.row_count} row(s); sha256 <code>{e((step.digest or '-')[:16])}…</code></p>")
        if step.columns is not None and step.sample and hidden:
            parts.append(withheld)
        elif step.columns is not None and step.sample:
            header = "".join(f"<th scope=col>{e(c)}</th>" for c in step.columns)
            rows = "".join("<tr>" + "".join("<td><em>NULL</em></td>" if v is None else f"<td>{e(v)}</td>" for v in row)
                           + "</tr>" for row in step.sample)
            more = (f'<p class="hint">… {step.row_count - len(step.sample)} more row(s) not sampled</p>'
                    if step.sample_truncated and step.row_count is not None else "")
            parts.append(f"<table><caption class=\"hint\">Rows as the client saw them (masked)</caption>"
                         f"<thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>{more}")
        if step.journal_failure:
            parts.append(f'<p class="problem">Journal unavailable, continued: {e(step.journal_failure)}</p>')
        return f'<li class="card">{"".join(parts)}</li>'


def web_routes(runtime: Runtime) -> list[Route]:
    pages = _Pages(runtime)

    async def css(_request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=300",
                                                             "X-Content-Type-Options": "nosniff"})

    async def home(_request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/approvals", status_code=303)

    return [
        Route(f"{PREFIX}/static/console.css", css, methods=["GET"]),
        Route(PREFIX, home, methods=["GET"]),
        Route(f"{PREFIX}/", home, methods=["GET"]),
        Route(f"{PREFIX}/signin", pages.signin_get, methods=["GET"]),
        Route(f"{PREFIX}/signin", pages.signin_post, methods=["POST"]),
        Route(f"{PREFIX}/signout", pages.signout, methods=["POST"]),
        Route(f"{PREFIX}/approvals", pages.signed(pages.approvals), methods=["GET"]),
        Route(f"{PREFIX}/approvals/{{id}}", pages.signed(pages.approval), methods=["GET"]),
        Route(f"{PREFIX}/approvals/{{id}}/approve", pages.signed(pages.approve), methods=["POST"]),
        Route(f"{PREFIX}/approvals/{{id}}/deny", pages.signed(pages.deny), methods=["POST"]),
        Route(f"{PREFIX}/audit", pages.signed(pages.audit), methods=["GET"]),
        Route(f"{PREFIX}/audit/{{session}}", pages.signed(pages.audit_session), methods=["GET"]),
    ]
