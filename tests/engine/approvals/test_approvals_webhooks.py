"""Webhooks delivered to a real HTTP receiver on 127.0.0.1 that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from approvals_support import ALICE, MALLORY, FakeClock, ask
from standardwebhooks import Webhook

from pgwarden.engine.approvals import ApprovalBroker, SqliteStore, WebhookEndpoint, WebhookNotifier
from pgwarden.engine.approvals.models import ApprovalEvent

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """Answers with the next status of ``statuses`` (then 200), after verifying the signature."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[dict] = []  # verified deliveries: headers, parsed body
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(SECRET).verify(body, headers)
                except Exception:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.received.append({"headers": headers, "body": payload})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _notifier(receiver: Receiver, clock: FakeClock, **kwargs: object) -> WebhookNotifier:
    fmt = kwargs.pop("format", "standard")
    events = kwargs.pop("events", frozenset(ApprovalEvent))
    return WebhookNotifier([WebhookEndpoint(receiver.url, SECRET, fmt, events)],  # type: ignore[arg-type]
                           console_url="https://pgw.example/", clock=clock, base_delay=2.0, **kwargs)  # type: ignore[arg-type]


async def test_signed_delivery_retried_after_500(receiver: Receiver, clock: FakeClock,
                                                 new_broker: Callable[..., ApprovalBroker]) -> None:
    notifier = _notifier(receiver, clock)
    broker = new_broker(notifier=notifier)
    await broker.start(background=False)
    receiver.statuses = [500]
    req = await broker.request(**ask())
    assert [m.event for m in await broker.store.outbox("pending")] == ["approval.requested"]

    assert await notifier.deliver_due(broker.store) == 0  # the receiver answered 500
    [pending] = await broker.store.outbox("pending")
    assert pending.attempts == 1 and pending.last_error == "HTTP 500"
    assert await notifier.deliver_due(broker.store) == 0 and len(receiver.received) == 1  # backoff: not yet due
    clock.advance(2)
    assert await notifier.deliver_due(broker.store) == 1
    assert receiver.bad_signatures == 0 and len(receiver.received) == 2
    first, second = receiver.received
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == pending.id
    body = second["body"]
    assert body["type"] == "approval.requested" and body["data"]["id"] == req.id
    assert body["data"]["console_url"] == f"https://pgw.example/approvals/{req.id}"
    assert "parameters" not in body["data"] and body["data"]["parameter_count"] == 1
    [done] = await broker.store.outbox("delivered")
    assert done.attempts == 2 and done.delivered_ms is not None


async def test_outbox_survives_restart(receiver: Receiver, clock: FakeClock,
                                       new_broker: Callable[..., ApprovalBroker]) -> None:
    first = new_broker(notifier=_notifier(receiver, clock))
    await first.start(background=False)
    req = await first.request(**ask())
    with pytest.raises(Exception):  # noqa: B017 - a refused decision must write no message
        await first.approve(req.id, *MALLORY)
    await first.approve(req.id, *ALICE)
    await first.close()  # nothing delivered yet

    notifier = _notifier(receiver, clock)
    second = new_broker(notifier=notifier)
    await second.start(background=False)
    assert await notifier.deliver_due(second.store) == 2
    assert [d["body"]["type"] for d in receiver.received] == ["approval.requested", "approval.approved"]
    assert receiver.received[1]["body"]["data"]["decided_by"] == "alice"
    assert await second.store.outbox("pending") == []


async def test_gives_up_after_max_attempts(receiver: Receiver, clock: FakeClock,
                                           new_broker: Callable[..., ApprovalBroker]) -> None:
    notifier = _notifier(receiver, clock, max_attempts=3)
    broker = new_broker(notifier=notifier)
    await broker.start(background=False)
    receiver.statuses = [500, 503, 500, 200]
    await broker.request(**ask())
    for delay in (0, 2, 4):
        clock.advance(delay)
        assert await notifier.deliver_due(broker.store) == 0
    [failed] = await broker.store.outbox("failed")
    assert failed.attempts == 3 and failed.last_error == "HTTP 500"
    clock.advance(3600)
    assert await notifier.deliver_due(broker.store) == 0 and len(receiver.received) == 3


async def test_slack_body_links_to_console_never_approves(receiver: Receiver, clock: FakeClock, tmp_path) -> None:
    notifier = _notifier(receiver, clock, format="slack")
    async with ApprovalBroker(SqliteStore(tmp_path / "a.db"), clock=clock, notifier=notifier) as broker:
        statement = "DELETE FROM orders WHERE note = '```<@here>'"
        req = await broker.request(**ask(statement=statement, parameters=[]))
        assert await notifier.deliver_due(broker.store) == 1
    body = receiver.received[0]["body"]
    assert "approval" in body["text"].lower() and req.id in body["text"]
    blocks = body["blocks"]
    code = [b for b in blocks if b["type"] == "section" and b.get("text", {}).get("text", "").startswith("```")]
    assert len(code) == 1
    text = code[0]["text"]["text"]
    assert text.endswith("```") and text.count("```") == 2 and "&lt;@here&gt;" in text  # no fence break, no ping
    assert any("agent-7" in f["text"] for b in blocks for f in b.get("fields", []))
    assert any("DELETE needs a DBA" in b.get("text", {}).get("text", "") for b in blocks)
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [{"type": "button", "action_id": "open_pgwarden_console",
                        "url": f"https://pgw.example/approvals/{req.id}",
                        "text": {"type": "plain_text", "text": "Review in pgwarden"}}]
    assert "approve" not in json.dumps(buttons).lower().replace("approvals/", "")


async def test_background_deliverer_sends_without_being_asked(receiver: Receiver, tmp_path) -> None:
    notifier = WebhookNotifier([WebhookEndpoint(receiver.url, SECRET)], interval=0.05)
    async with ApprovalBroker(SqliteStore(tmp_path / "a.db"), notifier=notifier) as broker:
        req = await broker.request(**ask())
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.05)
    assert receiver.received and receiver.received[0]["body"]["data"]["id"] == req.id
