"""The broker's rules against both real stores (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from approvals_support import AGENT, ALICE, BOB, MALLORY, FakeClock, ask, requirement

from pgwarden.engine.approvals import (
    ApprovalBroker,
    ApprovalNotFound,
    ApprovalStatus,
    binding_hash,
)
from pgwarden.engine.principal import Principal

pytestmark = pytest.mark.anyio


def _code(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    return exc_info.value.code  # type: ignore[attr-defined]


async def test_full_lifecycle(broker: ApprovalBroker, clock: FakeClock) -> None:
    req = await broker.request(**ask())
    assert req.id.startswith("apr_") and len(req.id) > 20
    assert req.status is ApprovalStatus.PENDING
    assert req.binding == binding_hash("DELETE FROM orders WHERE id = $1", ["42"], "prod", "app_rw", "agent-7", "v1")
    assert (req.expires - req.created).total_seconds() == 60
    assert [r.code for r in req.reasons] == ["approval_required"]
    assert req.approvers == ("dba",) and req.requester_groups == frozenset({"agents"})
    assert await broker.get(req.id) == req
    assert [r.id for r in await broker.list(ApprovalStatus.PENDING)] == [req.id]

    waiter = asyncio.create_task(broker.wait(req.id, timeout=10))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    clock.advance(5)
    approved = await broker.approve(req.id, *ALICE, comment="ok, ticket 12")
    woken = await asyncio.wait_for(waiter, 2)
    assert woken.status is ApprovalStatus.APPROVED and woken.decided_by == "alice"
    assert woken.decided_groups == frozenset({"dba"}) and woken.comment == "ok, ticket 12"
    assert woken == approved and woken.window is None

    assert await broker.consume(req.id, req.binding) is True
    used = await broker.get(req.id)
    assert used.status is ApprovalStatus.USED and used.used_at is not None
    assert await broker.consume(req.id, req.binding) is False  # single use
    assert await broker.list(ApprovalStatus.PENDING) == []


async def test_same_statement_again_returns_the_same_request(broker: ApprovalBroker) -> None:
    first = await broker.request(**ask())
    assert (await broker.request(**ask())).id == first.id  # still pending: no duplicate
    await broker.approve(first.id, *ALICE)
    again = await broker.request(**ask())
    assert again.id == first.id and again.status is ApprovalStatus.APPROVED  # approved, unused: runs
    assert await broker.consume(again.id, again.binding)
    fresh = await broker.request(**ask())
    assert fresh.id != first.id and fresh.pending  # used: a new request


async def test_requester_never_approves_own_request(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask(requirement=requirement(approvers=("dba", "agents"))))
    with pytest.raises(Exception) as exc_info:
        await broker.approve(req.id, "agent-7", {"dba", "agents"})
    assert _code(exc_info) == "self_approval_forbidden"
    with pytest.raises(Exception) as exc_info:
        await broker.deny(req.id, "agent-7", {"dba"}, "no")
    assert _code(exc_info) == "self_approval_forbidden"
    assert (await broker.get(req.id)).pending


async def test_approver_outside_groups_refused(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask())
    for groups in (MALLORY[1], set(), {"self"}):
        with pytest.raises(Exception) as exc_info:
            await broker.approve(req.id, "mallory", groups)
        assert _code(exc_info) == "approver_not_allowed"
    assert (await broker.get(req.id)) == req  # nothing changed


async def test_window_rules(broker: ApprovalBroker) -> None:
    single = await broker.request(**ask())
    with pytest.raises(Exception) as exc_info:
        await broker.approve(single.id, *ALICE, window_ms=1000)
    assert _code(exc_info) == "window_not_allowed"
    windowed = await broker.request(**ask(statement="DELETE FROM orders WHERE id = 7", parameters=[],
                                          requirement=requirement(max_window_ms=600_000)))
    with pytest.raises(Exception) as exc_info:
        await broker.approve(windowed.id, *ALICE, window_ms=600_001)
    assert _code(exc_info) == "window_too_long"
    assert (await broker.get(single.id)).pending and (await broker.get(windowed.id)).pending


async def test_window_approves_matching_statements_until_it_ends(broker: ApprovalBroker, clock: FakeClock) -> None:
    req_w = requirement(max_window_ms=600_000)
    first = await broker.request(**ask(requirement=req_w))
    approved = await broker.approve(first.id, *BOB, window_ms=300_000)
    assert approved.window is not None and approved.window.scope == (("public.orders", "delete"),)
    grant = await broker.find_grant("agent-7", "prod", "app_rw", [("public.orders", "delete")])
    assert grant is not None and grant.request_id == first.id and grant.approved_by == "bob"
    assert await broker.consume(first.id, first.binding)

    clock.advance(120)
    other = await broker.request(**ask(statement="DELETE FROM orders WHERE id = $1 AND total = 0",
                                       parameters=["9"], requirement=req_w))
    assert other.id != first.id and other.status is ApprovalStatus.APPROVED and other.via_grant == first.id
    assert other.decided_by == "bob"
    assert await broker.consume(other.id, other.binding)
    assert not await broker.consume(other.id, other.binding)

    # Outside the scope, another principal, target or role: not covered.
    for override in ({"scope": [("public.orders", "delete"), ("public.users", "delete")]},
                     {"scope": [("public.orders", "truncate")]}, {"scope": []},
                     {"requester": Principal.local("agent-8", {"agents"})}, {"target": "staging"},
                     {"role": "app_admin"}, {"requirement": requirement(max_window_ms=0)},
                     {"requirement": requirement(approvers=("security",), max_window_ms=600_000)}):
        held = await broker.request(**ask(statement=f"DELETE FROM orders WHERE {id(override)} > 0",
                                          **{"requirement": req_w, **override}))
        assert held.pending, override

    clock.advance(181)  # past the window's end
    later = await broker.request(**ask(statement="DELETE FROM orders WHERE id = 3", parameters=[],
                                       requirement=req_w))
    assert later.pending
    assert await broker.find_grant("agent-7", "prod", "app_rw", [("public.orders", "delete")]) is None
    # An approval made through the window is not usable after it ends either.
    clock.advance(-200)
    inside = await broker.request(**ask(statement="DELETE FROM orders WHERE id = 4", parameters=[],
                                        requirement=req_w))
    assert inside.status is ApprovalStatus.APPROVED
    clock.advance(200)
    assert not await broker.consume(inside.id, inside.binding)


@pytest.mark.parametrize("override", [
    {"statement": "DELETE FROM orders WHERE id = $1 "}, {"statement": "delete from orders where id = $1"},
    {"parameters": ["43"]}, {"parameters": [None]}, {"requester": Principal.local("agent-8", {"agents"})},
    {"target": "staging"}, {"role": "app_admin"}, {"policy_version": "v2"},
])
async def test_approval_not_reusable_for_another_binding(broker: ApprovalBroker, override: dict) -> None:
    req = await broker.request(**ask())
    await broker.approve(req.id, *ALICE)
    other = await broker.request(**ask(**override))
    assert other.id != req.id and other.pending and other.binding != req.binding
    assert not await broker.consume(req.id, other.binding)  # the approval is not for that statement
    assert (await broker.get(req.id)).status is ApprovalStatus.APPROVED
    assert await broker.consume(req.id, req.binding)


async def test_decisions_on_decided_ids_refused(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask())
    await broker.approve(req.id, *ALICE)
    with pytest.raises(Exception) as exc_info:
        await broker.approve(req.id, *ALICE)
    assert _code(exc_info) == "decision_replayed"
    with pytest.raises(Exception) as exc_info:
        await broker.approve(req.id, *BOB)
    assert _code(exc_info) == "approval_already_decided"
    with pytest.raises(Exception) as exc_info:
        await broker.deny(req.id, *BOB, "too late")
    assert _code(exc_info) == "approval_already_decided"
    after = await broker.get(req.id)
    assert after.status is ApprovalStatus.APPROVED and after.decided_by == "alice"

    denied = await broker.request(**ask(parameters=["1"]))
    await broker.deny(denied.id, *BOB, "not during the sale")
    with pytest.raises(Exception) as exc_info:
        await broker.deny(denied.id, *BOB, "not during the sale")
    assert _code(exc_info) == "decision_replayed"
    with pytest.raises(Exception) as exc_info:
        await broker.approve(denied.id, *ALICE)
    assert _code(exc_info) == "approval_already_decided"
    assert not await broker.consume(denied.id, denied.binding)
    with pytest.raises(ApprovalNotFound) as exc_info:
        await broker.approve("apr_nope", *ALICE)
    assert _code(exc_info) == "approval_not_found"


async def test_two_brokers_deciding_at_once_one_wins(new_broker: Callable[..., ApprovalBroker]) -> None:
    a, b = new_broker(), new_broker()
    await a.start(background=False)
    await b.start(background=False)
    for _ in range(5):
        req = await a.request(**ask(parameters=[str(time.monotonic_ns())]))
        results = await asyncio.gather(a.approve(req.id, *ALICE), b.deny(req.id, *BOB, "no"),
                                       return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1 and len(losers) == 1
        assert losers[0].code == "approval_already_decided"  # type: ignore[attr-defined]
        assert (await b.get(req.id)).status is winners[0].status


async def test_expiry(broker: ApprovalBroker, clock: FakeClock) -> None:
    req = await broker.request(**ask())
    clock.advance(59)
    assert await broker.expire_due() == []
    clock.advance(1)
    expired = await broker.expire_due()
    assert [r.id for r in expired] == [req.id] and expired[0].status is ApprovalStatus.EXPIRED
    with pytest.raises(Exception) as exc_info:
        await broker.approve(req.id, *ALICE)
    assert _code(exc_info) == "approval_expired"
    # A deadline passed but not yet swept: deciding refuses and expires it; waiting returns it expired.
    late = await broker.request(**ask(parameters=["2"]))
    clock.advance(61)
    with pytest.raises(Exception) as exc_info:
        await broker.approve(late.id, *ALICE)
    assert _code(exc_info) == "approval_expired"
    assert (await broker.get(late.id)).status is ApprovalStatus.EXPIRED
    waited = await broker.request(**ask(parameters=["3"]))
    clock.advance(61)
    assert (await broker.wait(waited.id, timeout=1)).status is ApprovalStatus.EXPIRED


async def test_wait_times_out_pending(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask())
    started = time.monotonic()
    result = await broker.wait(req.id, timeout=0.2)
    assert result.pending and 0.15 <= time.monotonic() - started < 1.5


async def test_withdraw(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask())
    waiter = asyncio.create_task(broker.wait(req.id, timeout=10))
    await asyncio.sleep(0.02)
    withdrawn = await broker.withdraw(req.id, "client disconnected")
    assert withdrawn.status is ApprovalStatus.WITHDRAWN and withdrawn.comment == "client disconnected"
    assert (await asyncio.wait_for(waiter, 2)).status is ApprovalStatus.WITHDRAWN
    with pytest.raises(Exception) as exc_info:
        await broker.approve(req.id, *ALICE)
    assert _code(exc_info) == "approval_already_decided"
    with pytest.raises(Exception) as exc_info:
        await broker.withdraw(req.id, "again")
    assert _code(exc_info) == "approval_already_decided"


async def test_approve_as_self_only_when_policy_says_self(broker: ApprovalBroker) -> None:
    plain = await broker.request(**ask())
    with pytest.raises(Exception) as exc_info:
        await broker.approve_as_self(plain.id, subject="agent-7")
    assert _code(exc_info) == "approver_not_allowed"
    selfish = await broker.request(**ask(parameters=["5"], requirement=requirement(approvers=("self",))))
    with pytest.raises(Exception) as exc_info:
        await broker.approve_as_self(selfish.id, subject="agent-8")  # another session's request
    assert _code(exc_info) == "approver_not_allowed"
    with pytest.raises(Exception) as exc_info:
        await broker.approve(selfish.id, *ALICE)  # 'self' is not a group anyone else belongs to
    assert _code(exc_info) == "approver_not_allowed"
    done = await broker.approve_as_self(selfish.id, subject="agent-7")
    assert done.status is ApprovalStatus.APPROVED and done.decided_by == "self:agent-7"
    assert await broker.consume(done.id, done.binding)
    declined = await broker.request(**ask(parameters=["6"], requirement=requirement(approvers=("self", "dba"))))
    assert (await broker.deny_as_self(declined.id)).status is ApprovalStatus.DENIED


async def test_restart_survival(new_broker: Callable[..., ApprovalBroker], clock: FakeClock) -> None:
    first = new_broker()
    await first.start(background=False)
    pending = await first.request(**ask())
    decided = await first.request(**ask(parameters=["77"], requirement=requirement(max_window_ms=60_000)))
    await first.approve(decided.id, *BOB, window_ms=30_000, comment="window for the fix")
    await first.close()

    second = new_broker()
    await second.start(background=False)
    assert await second.get(pending.id) == pending
    again = await second.get(decided.id)
    assert again.status is ApprovalStatus.APPROVED and again.comment == "window for the fix"
    assert again.window is not None and again.window.until == clock_dt(clock, 30)
    assert await second.find_grant("agent-7", "prod", "app_rw", [("public.orders", "delete")]) is not None
    await second.approve(pending.id, *ALICE)
    assert await second.consume(pending.id, pending.binding)
    assert await second.consume(decided.id, decided.binding)


def clock_dt(clock: FakeClock, plus: float):
    from datetime import UTC, datetime
    return datetime.fromtimestamp(int((clock() + plus) * 1000) / 1000, UTC)


async def test_requester_is_principal_and_json_shape(broker: ApprovalBroker) -> None:
    req = await broker.request(**ask(requester=AGENT))
    data = req.as_dict()
    assert data["status"] == "pending" and data["channel"] == "wire" and data["parameters"] == ["42"]
    assert data["scope"] == [["public.orders", "delete"]] and data["lint_findings"] == [{"rule": "no-where",
                                                                                           "level": "info"}]
