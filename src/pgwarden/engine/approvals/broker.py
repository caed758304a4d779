"""The approval broker: holds statements for a human, records decisions, releases each approval once.

How the engine uses it (both doors)::

    broker = build_broker(config.approvals, base_dir)   # or ApprovalBroker(SqliteStore(path))
    async with broker:                                   # opens the store, starts webhooks and expiry
        req = await broker.request(requester=principal, target="prod", role="app_rw",
                                   statement=sql_text, parameters=params,
                                   policy_version=verdict.policy_version, reasons=verdict.reasons,
                                   channel=Channel.WIRE, requirement=verdict.approval,
                                   scope=[("public.orders", "delete")])
        if req.status is ApprovalStatus.PENDING:
            req = await broker.wait(req.id, timeout=10)  # wire: loop, sending a NOTICE each round;
                                                         # MCP: return req.id, offer a wait tool
        if req.status is ApprovalStatus.APPROVED:
            ...re-decide the statement against the current policy...
            if await broker.consume(req.id, req.binding):  # False: used already, or no longer valid
                ...run it...

``request()`` returns an existing request instead of making a new one when the same
binding (exact text, parameters, target, role, requester, policy version) is already
pending or approved-and-unused, so an agent that sends the statement again while
its approval is valid runs it without a new request. When an active window
(:class:`Grant`) covers the statement's scope, ``request()`` returns a *new* request
that is already approved through that window (``via_grant``), so every statement run
under a window still has its own record, binding and single ``consume``.

Deciding: ``approve`` / ``deny`` by a person from an allowed group (console, CLI, HTTP
API); ``approve_as_self`` / ``deny_as_self`` for the MCP elicitation path, only when
the policy's approvers include ``"self"``. The rules, each a typed error with a
stable code (:mod:`.errors`), checked before anything changes: the requester never
decides their own request (``self_approval_forbidden``), the approver must belong to
one of the request's groups (``approver_not_allowed``), a window is never longer than
the policy's ``max_window_ms`` (``window_too_long``; ``window_not_allowed`` when that is
0), a decided id stays decided (``approval_already_decided``; ``decision_replayed``
when the same approver sends the same decision again; ``approval_expired``). Store
failures raise ``approval_store_unavailable``: the caller refuses the statement.

A single-use approval stays consumable until the request's ``expires`` but at least
:data:`USE_GRACE_MS` after the decision, so one given in the last second can still be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pgwarden.engine.principal import Principal
from pgwarden.policy.verdict import ApprovalRequirement

from .binding import binding_hash
from .errors import (
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalRefused,
    ApproverNotAllowed,
    DecisionReplayed,
    SelfApprovalForbidden,
    WindowNotAllowed,
    WindowTooLong,
)
from .models import (
    SELF,
    ApprovalEvent,
    ApprovalReason,
    ApprovalRequest,
    ApprovalStatus,
    Channel,
    Grant,
    Window,
    new_request_id,
    normalise_scope,
    to_ms,
)
from .store import OutboxMessage, Store

__all__ = ["USE_GRACE_MS", "ApprovalBroker", "Notifier"]

log = logging.getLogger("pgwarden.approvals")

USE_GRACE_MS = 60_000
_EXPIRY_INTERVAL = 1.0  # seconds between expiry sweeps of the background task


class Notifier(Protocol):
    """Turns broker events into outbox messages (written in the same transaction as the change)
    and, optionally, delivers them (``run``, started by :meth:`ApprovalBroker.start`)."""

    def messages(self, event: ApprovalEvent, request: ApprovalRequest, now_ms: int) -> list[OutboxMessage]: ...

    async def run(self, store: Store) -> None: ...


def _reason(value: Any) -> ApprovalReason:
    if isinstance(value, ApprovalReason):
        return value
    if isinstance(value, Mapping):
        return ApprovalReason(str(value["code"]), str(value["message"]))
    if isinstance(value, tuple) and len(value) == 2:
        return ApprovalReason(str(value[0]), str(value[1]))
    return ApprovalReason(str(value.code), str(value.message))  # policy.verdict.Reason and kin


class ApprovalBroker:
    """See the module docstring. ``clock`` returns seconds since the epoch (``time.time``)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.notifier = notifier
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Open the store; with ``background``, start webhook delivery and the expiry sweep."""
        await self.store.open()
        if background and not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._expire_forever(), name="pgwarden-approvals-expiry"))
            if self.notifier is not None:
                self._tasks.append(loop.create_task(self.notifier.run(self.store), name="pgwarden-webhooks"))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()

    async def __aenter__(self) -> ApprovalBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.expire_due()
            except Exception as exc:  # the store may be down for a while; waiters expire on their own
                log.warning("approvals: expiry sweep failed: %s", exc)
            await asyncio.sleep(_EXPIRY_INTERVAL)

    def now(self) -> datetime:
        # Whole milliseconds, as the stores keep them, so a value read back equals the one written.
        return datetime.fromtimestamp(int(self._clock() * 1000) / 1000, UTC)

    def _messages(self, event: ApprovalEvent, request: ApprovalRequest, now: datetime) -> list[OutboxMessage]:
        return [] if self.notifier is None else self.notifier.messages(event, request, to_ms(now))

    # --- asking -----------------------------------------------------------------------------------------

    async def request(self, *, requester: Principal, target: str, role: str | None, statement: str,
                      parameters: Sequence[str | None] = (), policy_version: str,
                      reasons: Iterable[Any] = (), lint_findings: Iterable[Mapping[str, Any]] = (),
                      channel: Channel | str, requirement: ApprovalRequirement,
                      scope: Iterable[Sequence[str]] = ()) -> ApprovalRequest:
        """Hold ``statement`` for approval, or return the request that already covers it (module docstring)."""
        now = self.now()
        params = tuple(None if p is None else str(p) for p in parameters)
        binding = binding_hash(statement, params, target, role, requester.subject, policy_version)
        scope_pairs = normalise_scope(scope)

        for existing in await self.store.by_binding(binding):
            if existing.usable(now) or (existing.pending and now < existing.expires):
                return existing

        base = ApprovalRequest(
            id=new_request_id(), requester=requester.subject, requester_groups=frozenset(requester.groups),
            target=target, role=role, statement=statement, parameters=params, policy_version=policy_version,
            reasons=tuple(_reason(r) for r in reasons), lint_findings=tuple(dict(f) for f in lint_findings),
            channel=Channel(channel), approvers=tuple(requirement.approvers), timeout_ms=requirement.timeout_ms,
            max_window_ms=requirement.max_window_ms, triggers=tuple(requirement.triggers), scope=scope_pairs,
            created=now, expires=now + timedelta(milliseconds=requirement.timeout_ms), binding=binding,
        )

        grant = await self._covering_grant(base, now)
        if grant is not None:
            approved = replace(base, status=ApprovalStatus.APPROVED, decided_by=grant.approved_by,
                               decided_groups=grant.approver_groups, decided_at=now,
                               comment=f"approved by the window granted on {grant.request_id}",
                               window=Window(grant.until, grant.scope), valid_until=grant.until,
                               via_grant=grant.request_id)
            await self.store.insert(approved)  # no webhook: the window's own approval was announced
            return approved

        await self.store.insert(base, self._messages(ApprovalEvent.REQUESTED, base, now))
        return base

    async def _covering_grant(self, request: ApprovalRequest, now: datetime) -> Grant | None:
        if not request.scope or request.max_window_ms <= 0:
            return None  # a policy that makes approvals single-use is not overridden by an older window
        allowed = set(request.approvers)
        for grant in await self.store.grants(request.requester, request.target, request.role, to_ms(now)):
            if (grant.covers(request.requester, request.target, request.role, request.scope, now)
                    and grant.approver_groups & allowed):
                return grant
        return None

    async def find_grant(self, requester: str, target: str, role: str | None,
                         scope: Iterable[Sequence[str]]) -> Grant | None:
        """The active window covering ``scope`` for ``requester`` on ``target`` as ``role``, if any."""
        now = self.now()
        pairs = normalise_scope(scope)
        for grant in await self.store.grants(requester, target, role, to_ms(now)):
            if grant.covers(requester, target, role, pairs, now):
                return grant
        return None

    async def get(self, request_id: str) -> ApprovalRequest:
        request = await self.store.get(request_id)
        if request is None:
            raise ApprovalNotFound(request_id)
        return request

    async def list(self, status: ApprovalStatus | str | None = None) -> list[ApprovalRequest]:
        return await self.store.list(None if status is None else ApprovalStatus(status))

    async def wait(self, request_id: str, timeout: float) -> ApprovalRequest:
        """Until ``request_id`` is decided or ``timeout`` seconds pass; returns its state then.

        Wakes at once on a decision made through this process's store, within milliseconds on one made
        by another gateway (PostgreSQL LISTEN/NOTIFY), within ``store.poll_interval`` otherwise. A
        request whose deadline passed while waiting is marked expired and returned so.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self.store.watch(request_id) as watch:
            while True:
                request = await self.get(request_id)
                if not request.pending:
                    return request
                now = self.now()
                if now >= request.expires:
                    return await self._expire(request, now) or await self.get(request_id)
                left = deadline - time.monotonic()
                if left <= 0:
                    return request
                until_expiry = (request.expires - now).total_seconds()
                await watch.wait(min(left, until_expiry, self.store.poll_interval))

    # --- deciding ---------------------------------------------------------------------------------------

    async def _decidable(self, request_id: str, by: str | None, decision: ApprovalStatus) -> ApprovalRequest:
        request = await self.get(request_id)
        now = self.now()
        if not request.pending:
            self._refuse_decided(request, by, decision)
        if now >= request.expires:
            await self._expire(request, now)
            raise ApprovalExpired(request.id)
        return request

    @staticmethod
    def _refuse_decided(request: ApprovalRequest, by: str | None, decision: ApprovalStatus) -> None:
        same = (request.status is decision or (decision is ApprovalStatus.APPROVED
                                               and request.status is ApprovalStatus.USED))
        if by is not None and same and request.decided_by == by:
            raise DecisionReplayed(request.id, request.status.value)
        if request.status is ApprovalStatus.EXPIRED:
            raise ApprovalExpired(request.id)
        raise ApprovalAlreadyDecided(request.id, request.status.value)

    @staticmethod
    def _check_approver(request: ApprovalRequest, subject: str, groups: Iterable[str]) -> frozenset[str]:
        if subject == request.requester:
            raise SelfApprovalForbidden(request.id)
        allowed = tuple(g for g in request.approvers if g != SELF)
        member_of = frozenset(groups) & frozenset(allowed)
        if not member_of:
            raise ApproverNotAllowed(request.id, allowed)
        return member_of

    @staticmethod
    def _window(request: ApprovalRequest, window_ms: int | None, now: datetime) -> Window | None:
        if window_ms is None or window_ms == 0:
            return None
        if window_ms < 0:
            raise ApprovalRefused("window_invalid", f"a window must be a positive duration, not {window_ms} ms")
        if request.max_window_ms <= 0:
            raise WindowNotAllowed(request.id)
        if window_ms > request.max_window_ms:
            raise WindowTooLong(request.id, window_ms, request.max_window_ms)
        if not request.scope:
            raise WindowNotAllowed(request.id, f"request {request.id} touches no relation a window could be "
                                               "scoped to; approve it once")
        return Window(until=now + timedelta(milliseconds=window_ms), scope=request.scope)

    async def _commit(self, request: ApprovalRequest, new: ApprovalRequest, event: ApprovalEvent,
                      now: datetime, grant: Grant | None = None) -> ApprovalRequest:
        won = await self.store.transition(new, ApprovalStatus.PENDING, self._messages(event, new, now), grant)
        if won:
            return new
        # Someone decided between our read and our write (another gateway, the CLI): say what happened.
        fresh = await self.get(request.id)
        self._refuse_decided(fresh, new.decided_by, new.status)
        raise ApprovalAlreadyDecided(request.id, fresh.status.value)  # unreachable unless still pending

    async def _approve(self, request: ApprovalRequest, by: str, groups: frozenset[str], window_ms: int | None,
                       comment: str | None) -> ApprovalRequest:
        now = self.now()
        window = self._window(request, window_ms, now)
        if window is not None:
            valid_until = window.until
        else:
            valid_until = max(request.expires, now + timedelta(milliseconds=USE_GRACE_MS))
        new = replace(request, status=ApprovalStatus.APPROVED, decided_by=by, decided_groups=groups,
                      decided_at=now, comment=comment, window=window, valid_until=valid_until)
        grant = None
        if window is not None:
            grant = Grant(request_id=request.id, principal=request.requester, target=request.target,
                          role=request.role, scope=window.scope, until=window.until, approved_by=by,
                          approver_groups=groups, created=now)
        return await self._commit(request, new, ApprovalEvent.APPROVED, now, grant)

    async def approve(self, request_id: str, approver_subject: str, approver_groups: Iterable[str],
                      window_ms: int | None = None, comment: str | None = None) -> ApprovalRequest:
        """Approve once, or with a window of ``window_ms`` (≤ the request's ``max_window_ms``)."""
        request = await self._decidable(request_id, approver_subject, ApprovalStatus.APPROVED)
        member_of = self._check_approver(request, approver_subject, approver_groups)
        return await self._approve(request, approver_subject, member_of, window_ms, comment)

    async def deny(self, request_id: str, approver_subject: str, approver_groups: Iterable[str],
                   reason: str) -> ApprovalRequest:
        """Deny; the same people may deny who may approve (the requester withdraws instead)."""
        request = await self._decidable(request_id, approver_subject, ApprovalStatus.DENIED)
        member_of = self._check_approver(request, approver_subject, approver_groups)
        now = self.now()
        new = replace(request, status=ApprovalStatus.DENIED, decided_by=approver_subject, decided_groups=member_of,
                      decided_at=now, comment=reason)
        return await self._commit(request, new, ApprovalEvent.DENIED, now)

    def _self_subject(self, request: ApprovalRequest, subject: str | None) -> str:
        if SELF not in request.approvers:
            raise ApproverNotAllowed(request.id, tuple(g for g in request.approvers if g != SELF))
        if subject is not None and subject != request.requester:
            raise ApprovalRefused("approver_not_allowed", f"only the session that asked for {request.id} can "
                                                          "answer it as 'self'")
        return f"{SELF}:{request.requester}"

    async def approve_as_self(self, request_id: str, *, subject: str | None = None, window_ms: int | None = None,
                              comment: str | None = None) -> ApprovalRequest:
        """The human at the agent's own client approved (MCP elicitation); only if approvers include 'self'.

        ``subject``, when given, must be the requester: the door passes the session's principal so a
        request cannot be answered from another agent's session. ``decided_by`` becomes ``self:<subject>``.
        """
        request = await self.get(request_id)
        by = self._self_subject(request, subject)
        request = await self._decidable(request_id, by, ApprovalStatus.APPROVED)
        return await self._approve(request, by, frozenset({SELF}), window_ms, comment)

    async def deny_as_self(self, request_id: str, *, subject: str | None = None,
                           reason: str = "declined at the client") -> ApprovalRequest:
        """The human at the agent's own client declined (MCP elicitation)."""
        request = await self.get(request_id)
        by = self._self_subject(request, subject)
        request = await self._decidable(request_id, by, ApprovalStatus.DENIED)
        now = self.now()
        new = replace(request, status=ApprovalStatus.DENIED, decided_by=by, decided_groups=frozenset({SELF}),
                      decided_at=now, comment=reason)
        return await self._commit(request, new, ApprovalEvent.DENIED, now)

    async def withdraw(self, request_id: str, reason: str) -> ApprovalRequest:
        """The statement is no longer waiting (client gone, cancelled): a pending request is withdrawn."""
        request = await self._decidable(request_id, None, ApprovalStatus.WITHDRAWN)
        now = self.now()
        new = replace(request, status=ApprovalStatus.WITHDRAWN, decided_at=now, comment=reason)
        return await self._commit(request, new, ApprovalEvent.WITHDRAWN, now)

    async def _expire(self, request: ApprovalRequest, now: datetime) -> ApprovalRequest | None:
        new = replace(request, status=ApprovalStatus.EXPIRED, decided_at=now)
        won = await self.store.transition(new, ApprovalStatus.PENDING,
                                          self._messages(ApprovalEvent.EXPIRED, new, now))
        return new if won else None

    async def expire_due(self) -> list[ApprovalRequest]:
        """Mark every pending request past its deadline expired; returns those this call expired."""
        now = self.now()
        expired = []
        for request in await self.store.due(to_ms(now)):
            done = await self._expire(request, now)
            if done is not None:
                expired.append(done)
        return expired

    async def consume(self, request_id: str, binding: str) -> bool:
        """Atomically mark an approved, still valid request with this ``binding`` used. A second call,
        another binding, or an expired approval gives False. Call it right before running the statement."""
        return await self.store.consume(request_id, binding, to_ms(self.now()))
