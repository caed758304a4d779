"""The store contract, and what both stores share: row codecs and the in-process waiter registry.

A store keeps requests, grants (windows) and the webhook outbox durably, and offers
exactly the atomic steps the broker needs, so that the rules live in the broker and
the race-freedom lives in the store:

- :meth:`Store.transition` is a *conditional* update (``WHERE id = … AND status = …``)
  that also inserts the decision's grant and outbox messages in the same
  transaction; of two gateways deciding at once exactly one gets ``True``.
- :meth:`Store.consume` marks an approved request used only if it is still approved,
  has the expected binding and is still valid, so a second consume gets ``False``.
- :meth:`Store.watch` hands out a waiter that wakes when the request may have changed
  (in this process at once; in another process through LISTEN/NOTIFY or polling).

Every method raises :class:`~.errors.ApprovalStoreUnavailable` when the store cannot
be reached; none returns a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .models import (
    ApprovalReason,
    ApprovalRequest,
    ApprovalStatus,
    Channel,
    Grant,
    Window,
    from_ms,
    normalise_scope,
    to_ms,
)

__all__ = ["OutboxMessage", "OutboxStatus", "Store", "Watch"]


class OutboxStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One webhook delivery: ``id`` is the Standard Webhooks ``webhook-id`` (stable across retries)."""

    id: str
    endpoint: str  # the webhook URL; its secret is looked up in the configuration at delivery time
    event: str
    request_id: str
    body: str
    created_ms: int
    attempts: int = 0
    next_attempt_ms: int = 0
    status: str = OutboxStatus.PENDING
    last_error: str | None = None
    delivered_ms: int | None = None


class Watch(Protocol):
    async def wait(self, timeout: float) -> bool:
        """Until the request may have changed (True) or ``timeout`` seconds passed (False)."""
        ...


@runtime_checkable
class Store(Protocol):
    """Durable state of the broker. All methods are coroutines except :meth:`watch`."""

    poll_interval: float  # seconds between re-reads while waiting (the safety net under wake-ups)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def insert(self, request: ApprovalRequest, outbox: Sequence[OutboxMessage] = ()) -> None: ...
    async def get(self, request_id: str) -> ApprovalRequest | None: ...
    async def list(self, status: ApprovalStatus | None = None) -> list[ApprovalRequest]: ...
    async def by_binding(self, binding: str) -> list[ApprovalRequest]: ...
    async def transition(self, new: ApprovalRequest, expected: ApprovalStatus,
                         outbox: Sequence[OutboxMessage] = (), grant: Grant | None = None) -> bool: ...
    async def consume(self, request_id: str, binding: str, now_ms: int) -> bool: ...
    async def due(self, now_ms: int) -> list[ApprovalRequest]: ...
    async def grants(self, principal: str, target: str, role: str | None, now_ms: int) -> list[Grant]: ...
    async def claim_outbox(self, now_ms: int, lease_ms: int, limit: int) -> list[OutboxMessage]: ...
    async def outbox_delivered(self, message_id: str, attempts: int, now_ms: int) -> None: ...
    async def outbox_retry(self, message_id: str, attempts: int, next_attempt_ms: int, error: str,
                           *, failed: bool = False) -> None: ...
    async def outbox(self, status: str | None = None) -> list[OutboxMessage]: ...
    def watch(self, request_id: str) -> _WatchHandle: ...


# --- rows -------------------------------------------------------------------------------------------------

REQUEST_COLUMNS = (
    "id", "requester", "requester_groups", "target", "role", "statement", "parameters", "policy_version",
    "reasons", "lint_findings", "channel", "approvers", "timeout_ms", "max_window_ms", "triggers", "scope",
    "created_ms", "expires_ms", "binding", "status", "decided_by", "decided_groups", "decided_at_ms",
    "comment", "window_until_ms", "window_scope", "valid_until_ms", "used_at_ms", "via_grant",
)
# What a transition may change; the rest is fixed when the request is made.
MUTABLE_COLUMNS = REQUEST_COLUMNS[REQUEST_COLUMNS.index("status"):]
GRANT_COLUMNS = ("request_id", "principal", "target", "role", "scope", "until_ms", "approved_by",
                 "approver_groups", "created_ms")
OUTBOX_COLUMNS = ("id", "endpoint", "event", "request_id", "body", "created_ms", "attempts",
                  "next_attempt_ms", "status", "last_error", "delivered_ms")


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def request_row(r: ApprovalRequest) -> tuple[Any, ...]:
    return (
        r.id, r.requester, _j(sorted(r.requester_groups)), r.target, r.role, r.statement, _j(list(r.parameters)),
        r.policy_version, _j([x.as_dict() for x in r.reasons]), _j([dict(f) for f in r.lint_findings]),
        r.channel.value, _j(list(r.approvers)), r.timeout_ms, r.max_window_ms, _j(list(r.triggers)),
        _j([list(p) for p in r.scope]), to_ms(r.created), to_ms(r.expires), r.binding,
        *mutable_values(r),
    )


def mutable_values(r: ApprovalRequest) -> tuple[Any, ...]:
    return (
        r.status.value, r.decided_by, _j(sorted(r.decided_groups)),
        None if r.decided_at is None else to_ms(r.decided_at), r.comment,
        None if r.window is None else to_ms(r.window.until),
        None if r.window is None else _j([list(p) for p in r.window.scope]),
        None if r.valid_until is None else to_ms(r.valid_until),
        None if r.used_at is None else to_ms(r.used_at), r.via_grant,
    )


def request_from_row(row: Sequence[Any]) -> ApprovalRequest:
    v = dict(zip(REQUEST_COLUMNS, row, strict=True))
    window = None
    if v["window_until_ms"] is not None:
        window = Window(until=from_ms(v["window_until_ms"]), scope=normalise_scope(json.loads(v["window_scope"])))
    return ApprovalRequest(
        id=v["id"], requester=v["requester"], requester_groups=frozenset(json.loads(v["requester_groups"])),
        target=v["target"], role=v["role"], statement=v["statement"],
        parameters=tuple(json.loads(v["parameters"])), policy_version=v["policy_version"],
        reasons=tuple(ApprovalReason(**x) for x in json.loads(v["reasons"])),
        lint_findings=tuple(json.loads(v["lint_findings"])), channel=Channel(v["channel"]),
        approvers=tuple(json.loads(v["approvers"])), timeout_ms=int(v["timeout_ms"]),
        max_window_ms=int(v["max_window_ms"]), triggers=tuple(json.loads(v["triggers"])),
        scope=normalise_scope(json.loads(v["scope"])), created=from_ms(v["created_ms"]),
        expires=from_ms(v["expires_ms"]), binding=v["binding"], status=ApprovalStatus(v["status"]),
        decided_by=v["decided_by"], decided_groups=frozenset(json.loads(v["decided_groups"] or "[]")),
        decided_at=from_ms(v["decided_at_ms"]), comment=v["comment"], window=window,
        valid_until=from_ms(v["valid_until_ms"]), used_at=from_ms(v["used_at_ms"]), via_grant=v["via_grant"],
    )


def grant_row(g: Grant) -> tuple[Any, ...]:
    return (g.request_id, g.principal, g.target, g.role, _j([list(p) for p in g.scope]), to_ms(g.until),
            g.approved_by, _j(sorted(g.approver_groups)), to_ms(g.created))


def grant_from_row(row: Sequence[Any]) -> Grant:
    v = dict(zip(GRANT_COLUMNS, row, strict=True))
    return Grant(request_id=v["request_id"], principal=v["principal"], target=v["target"], role=v["role"],
                 scope=normalise_scope(json.loads(v["scope"])), until=from_ms(v["until_ms"]),
                 approved_by=v["approved_by"], approver_groups=frozenset(json.loads(v["approver_groups"])),
                 created=from_ms(v["created_ms"]))


def outbox_row(m: OutboxMessage) -> tuple[Any, ...]:
    return (m.id, m.endpoint, m.event, m.request_id, m.body, m.created_ms, m.attempts, m.next_attempt_ms,
            m.status, m.last_error, m.delivered_ms)


def outbox_from_row(row: Sequence[Any]) -> OutboxMessage:
    return OutboxMessage(**dict(zip(OUTBOX_COLUMNS, row, strict=True)))


# --- waking waiters in this process --------------------------------------------------------------------------

class _WatchHandle:
    """A registered interest in one request; a context manager so it is always unregistered."""

    def __init__(self, registry: Waiters, request_id: str) -> None:
        self._registry = registry
        self._request_id = request_id
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def __enter__(self) -> _WatchHandle:
        self._registry._add(self._request_id, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._registry._remove(self._request_id, self)

    def _set(self) -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        self._event.clear()
        return True


class Waiters:
    """Who waits on which request in this process; safe to wake from any thread or event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, set[_WatchHandle]] = {}

    def watch(self, request_id: str) -> _WatchHandle:
        return _WatchHandle(self, request_id)

    def _add(self, request_id: str, handle: _WatchHandle) -> None:
        with self._lock:
            self._by_id.setdefault(request_id, set()).add(handle)

    def _remove(self, request_id: str, handle: _WatchHandle) -> None:
        with self._lock:
            handles = self._by_id.get(request_id)
            if handles is not None:
                handles.discard(handle)
                if not handles:
                    del self._by_id[request_id]

    def wake(self, request_id: str) -> None:
        with self._lock:
            handles = list(self._by_id.get(request_id, ()))
        for handle in handles:
            handle._set()

    def wake_all(self) -> None:
        with self._lock:
            handles = [h for hs in self._by_id.values() for h in hs]
        for handle in handles:
            handle._set()
