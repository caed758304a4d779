"""Outgoing webhooks: request created and decided, signed per Standard Webhooks, from a durable outbox.

:class:`WebhookNotifier` is the broker's notifier. For each event it writes one
outbox message per subscribed endpoint *in the same store transaction* as the change
it reports (so a restart never loses one, and a refused decision sends nothing), and
its :meth:`~WebhookNotifier.run` task (started by :meth:`ApprovalBroker.start`)
delivers them with httpx: ``POST`` the body with ``webhook-id`` (the message id,
stable across retries so receivers can de-duplicate), ``webhook-timestamp`` and
``webhook-signature`` (``standardwebhooks.Webhook(secret).sign``, computed afresh at
each attempt since receivers refuse old timestamps). Anything but a 2xx answer is
retried with exponential backoff (``base_delay · 2^(n-1)``, capped at ``max_delay``)
up to ``max_attempts`` attempts, then marked failed. Several gateways sharing a
PostgreSQL store lease messages (``SKIP LOCKED``), so each is sent by one of them.

Bodies. ``standard``: ``{"type": "approval.requested", "timestamp": …, "data": {…}}``
where data is the request (:meth:`ApprovalRequest.as_dict`) without its parameter
values (they may be personal data; ``parameter_count`` says how many) plus
``console_url``, the page to decide it on. ``slack``: a Slack incoming-webhook body
(Block Kit) naming the requester, target, the statement in a code block and the
reasons, with a button that *links* to ``{console_url}/approvals/{id}``. There is
never an approve action in chat: a decision belongs to an authenticated pgwarden
session, not to a chat identity.

Secrets are Standard Webhooks secrets (``whsec_`` and base64, as the receiving
library expects); they are resolved from the configuration and never stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from standardwebhooks import Webhook

from .models import ApprovalEvent, ApprovalRequest
from .store import OutboxMessage, Store

try:  # httpx's maintained continuation is published as httpx2; accept either
    import httpx
except ImportError:  # pragma: no cover - depends on the environment
    import httpx2 as httpx  # type: ignore[no-redef]

__all__ = ["DEFAULT_EVENTS", "WebhookEndpoint", "WebhookNotifier", "console_link", "slack_body", "standard_body"]

log = logging.getLogger("pgwarden.approvals.webhooks")

DEFAULT_EVENTS: frozenset[ApprovalEvent] = frozenset(
    {ApprovalEvent.REQUESTED, ApprovalEvent.APPROVED, ApprovalEvent.DENIED})

_SLACK_TEXT_LIMIT = 2800  # a section's text may be 3000 characters; keep room for the fences


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    url: str
    secret: str = field(repr=False)
    format: Literal["standard", "slack"] = "standard"
    events: frozenset[ApprovalEvent] = DEFAULT_EVENTS


def console_link(console_url: str | None, request_id: str) -> str | None:
    return None if not console_url else f"{console_url.rstrip('/')}/approvals/{request_id}"


def standard_body(event: ApprovalEvent, request: ApprovalRequest, now_ms: int, console_url: str | None) -> str:
    data = request.as_dict()
    data["parameter_count"] = len(data.pop("parameters"))
    data["console_url"] = console_link(console_url, request.id)
    moment = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()
    return json.dumps({"type": event.value, "timestamp": moment, "data": data}, separators=(",", ":"),
                      ensure_ascii=False)


def _mrkdwn(text: str) -> str:
    # Slack's mrkdwn needs only these three escaped; it is not HTML.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(event: ApprovalEvent, request: ApprovalRequest, now_ms: int, console_url: str | None) -> str:
    statement = request.statement
    if len(statement) > _SLACK_TEXT_LIMIT:
        statement = statement[:_SLACK_TEXT_LIMIT] + "\n… (truncated; see the console)"
    statement = _mrkdwn(statement).replace("```", "`\u200b``")  # a fence in the SQL must not close ours
    headline = {
        ApprovalEvent.REQUESTED: "Approval requested",
        ApprovalEvent.APPROVED: f"Approved by {request.decided_by}",
        ApprovalEvent.DENIED: f"Denied by {request.decided_by}",
        ApprovalEvent.EXPIRED: "Approval request expired",
        ApprovalEvent.WITHDRAWN: "Approval request withdrawn",
    }[event]
    fields = [
        {"type": "mrkdwn", "text": f"*Requester*\n{_mrkdwn(request.requester)}"},
        {"type": "mrkdwn", "text": f"*Target*\n{_mrkdwn(request.target)}"
                                   + (f" as {_mrkdwn(request.role)}" if request.role else "")},
        {"type": "mrkdwn", "text": f"*Approvers*\n{_mrkdwn(', '.join(request.approvers))}"},
        {"type": "mrkdwn", "text": f"*Expires*\n{request.expires.isoformat(timespec='seconds')}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"pgwarden: {headline}"[:150]}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{statement}```"}},
    ]
    if request.reasons:
        lines = "\n".join(f"• `{_mrkdwn(r.code)}` {_mrkdwn(r.message)}" for r in request.reasons)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": lines[:_SLACK_TEXT_LIMIT]}})
    if request.comment:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(request.comment)}]})
    link = console_link(console_url, request.id)
    if link:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "action_id": "open_pgwarden_console", "url": link,
            "text": {"type": "plain_text", "text": "Review in pgwarden"}}]})
    else:
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn", "text": f"Request `{request.id}`: decide it in the pgwarden console or CLI"}]})
    text = f"pgwarden: {headline}: {request.requester} on {request.target} ({request.id})"
    return json.dumps({"text": text, "blocks": blocks}, separators=(",", ":"), ensure_ascii=False)


class WebhookNotifier:
    """Outbox messages for subscribed endpoints, and their delivery (see the module docstring)."""

    def __init__(self, endpoints: Iterable[WebhookEndpoint], *, console_url: str | None = None,
                 clock: Callable[[], float] = time.time, client: httpx.AsyncClient | None = None,
                 max_attempts: int = 8, base_delay: float = 2.0, max_delay: float = 600.0,
                 request_timeout: float = 10.0, interval: float = 1.0, lease: float = 60.0) -> None:
        self.endpoints = tuple(endpoints)
        self._by_url = {e.url: e for e in self.endpoints}
        self.console_url = console_url
        self._clock = clock
        self._client = client
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._request_timeout = request_timeout
        self.interval = interval
        self._lease_ms = int(lease * 1000)

    def messages(self, event: ApprovalEvent, request: ApprovalRequest, now_ms: int) -> list[OutboxMessage]:
        out = []
        for endpoint in self.endpoints:
            if event not in endpoint.events:
                continue
            render = slack_body if endpoint.format == "slack" else standard_body
            out.append(OutboxMessage(id="msg_" + secrets.token_urlsafe(16), endpoint=endpoint.url,
                                     event=event.value, request_id=request.id,
                                     body=render(event, request, now_ms, self.console_url), created_ms=now_ms,
                                     next_attempt_ms=now_ms))
        return out

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def backoff_ms(self, attempts: int) -> int:
        """Delay after the ``attempts``-th failed attempt."""
        return int(min(self.max_delay, self.base_delay * 2 ** max(attempts - 1, 0)) * 1000)

    async def deliver_due(self, store: Store, *, limit: int = 50) -> int:
        """One pass: send every message due now; returns how many were delivered."""
        batch = await store.claim_outbox(self._now_ms(), self._lease_ms, limit)
        if not batch:
            return 0
        client = self._client or httpx.AsyncClient(timeout=self._request_timeout)
        delivered = 0
        try:
            for message in batch:
                delivered += await self._deliver(store, client, message)
        finally:
            if self._client is None:
                await client.aclose()
        return delivered

    async def _deliver(self, store: Store, client: httpx.AsyncClient, message: OutboxMessage) -> int:
        attempts = message.attempts + 1
        endpoint = self._by_url.get(message.endpoint)
        if endpoint is None:
            await store.outbox_retry(message.id, message.attempts, self._now_ms(),
                                     "endpoint no longer configured", failed=True)
            return 0
        signed_at = datetime.now(UTC)  # real time: the receiver checks it against its own clock
        headers = {
            "content-type": "application/json",
            "user-agent": "pgwarden-webhooks",
            "webhook-id": message.id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": Webhook(endpoint.secret).sign(message.id, signed_at, message.body),
        }
        error: str | None
        try:
            response = await client.post(endpoint.url, content=message.body.encode(), headers=headers,
                                         timeout=self._request_timeout)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await store.outbox_delivered(message.id, attempts, self._now_ms())
            return 1
        failed = attempts >= self.max_attempts
        log.warning("approvals: webhook %s to %s failed (attempt %d): %s", message.id, endpoint.url,
                    attempts, error)
        await store.outbox_retry(message.id, attempts, self._now_ms() + self.backoff_ms(attempts), error,
                                 failed=failed)
        return 0

    async def run(self, store: Store) -> None:
        """Deliver forever (cancel to stop); store outages are logged and retried."""
        while True:
            try:
                await self.deliver_due(store)
            except Exception as exc:
                log.warning("approvals: webhook delivery pass failed: %s", exc)
            await asyncio.sleep(self.interval)


