"""The approval desk: who may decide, binding, single use, expiry, waiting and watching."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from taskpass.server.approvals.service import Approvals
from taskpass.server.clock import FixedClock
from taskpass.server.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from taskpass.server.identity.groups import Groups
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.records import ApprovalRecord, ApprovalState
from taskpass.server.store.sqlite import SqliteStore

from .conftest import (
    AGENT,
    ALICE,
    BOB,
    GROUPS,
    NOW,
    ONCALL,
    TTL,
    allowed,
    pending_decision,
    task,
    workload,
)


async def ask(
    approvals: Approvals, requester: str = AGENT, **task_changes: object
) -> ApprovalRecord:
    return await approvals.request(
        workload(requester), task(**task_changes), pending_decision(), "dec_1"
    )


async def kinds(store: SqliteStore) -> list[str]:
    return [r.kind for r in await store.audit.read(limit=100)]


async def test_a_request_records_what_the_approver_will_see(
    approvals: Approvals, store: SqliteStore
) -> None:
    approval = await ask(approvals)

    assert approval.approval_id.startswith("apr_")
    assert (approval.requester, approval.digest) == (AGENT, task().digest())
    assert (approval.audience, approval.action, approval.sensitivity) == (
        "payments-api",
        "write",
        "internal",
    )
    assert (approval.scopes, approval.ttl_seconds) == (("payments:write",), 300)
    assert approval.rules == ("approval.payments.write",)
    assert approval.approver_groups == ("security-approvers",)
    assert approval.expires_at == NOW + TTL
    [record] = await store.audit.read(limit=10)
    assert record.kind == "approval_requested"
    assert record.payload["approval_id"] == approval.approval_id
    assert record.payload["workload"]["cert_sha256"] == "thumb-billing-bot"
    assert record.payload["task"]["task_id"] == "t-1"


async def test_asking_again_for_the_same_task_reuses_the_request(approvals: Approvals) -> None:
    first = await ask(approvals)
    again = await ask(approvals)

    assert again.approval_id == first.approval_id


@pytest.mark.parametrize(
    ("requester", "changes"),
    [
        pytest.param("spiffe://example.org/agents/report-bot", {}, id="another-requester"),
        pytest.param(AGENT, {"task_id": "t-2"}, id="another-task"),
        pytest.param(AGENT, {"requested_ttl": dt.timedelta(minutes=6)}, id="another-ttl"),
    ],
)
async def test_another_requester_task_or_ttl_is_another_request(
    approvals: Approvals, requester: str, changes: dict[str, object]
) -> None:
    first = await ask(approvals)
    other = await ask(approvals, requester, **changes)

    assert other.approval_id != first.approval_id


async def test_an_approver_in_the_rule_group_approves_and_it_is_audited(
    approvals: Approvals, store: SqliteStore, clock: FixedClock
) -> None:
    approval = await ask(approvals)
    clock.advance(dt.timedelta(minutes=2))

    approved = await approvals.approve(workload(ALICE), approval.approval_id, comment="ok")

    assert approved.state is ApprovalState.APPROVED
    assert approved.decided_by == ALICE
    assert approved.expires_at == clock.now() + TTL
    record = (await store.audit.read(limit=10))[-1]
    assert (record.kind, record.actor) == ("approval_granted", ALICE)
    assert record.payload["approver"]["cert_sha256"] == "thumb-alice"
    assert record.payload["task_digest"] == task().digest()


async def test_a_denial_needs_a_reason_and_is_audited(
    approvals: Approvals, store: SqliteStore
) -> None:
    approval = await ask(approvals)
    with pytest.raises(InvalidRequest, match="reason"):
        await approvals.deny(workload(ALICE), approval.approval_id, reason=" ")

    denied = await approvals.deny(workload(ALICE), approval.approval_id, reason="not in freeze")

    assert (denied.state, denied.reason) == (ApprovalState.DENIED, "not in freeze")
    assert (await kinds(store))[-1] == "approval_denied"


@pytest.mark.parametrize(
    "decider",
    [
        pytest.param(ONCALL, id="platform-member-on-a-security-rule"),
        pytest.param("spiffe://example.org/agents/report-bot", id="another-agent"),
        pytest.param("spiffe://other.org/humans/approvers/alice", id="other-trust-domain"),
    ],
)
async def test_only_members_of_the_rule_groups_may_decide(
    approvals: Approvals, store: SqliteStore, decider: str
) -> None:
    approval = await ask(approvals)

    with pytest.raises(PermissionDenied, match="security-approvers"):
        await approvals.approve(workload(decider), approval.approval_id)
    assert (await store.approvals.get(approval.approval_id)).state is ApprovalState.PENDING  # type: ignore[union-attr]
    refused = (await store.audit.read(limit=10))[-1]
    assert (refused.kind, refused.actor) == ("approval_refused", decider)


async def test_the_requester_never_approves_its_own_request_even_in_the_group(
    approvals: Approvals, store: SqliteStore
) -> None:
    # alice is a security approver and asks for something that needs a security approver
    approval = await ask(approvals, ALICE)

    with pytest.raises(PermissionDenied, match="its own request"):
        await approvals.approve(workload(ALICE), approval.approval_id)
    assert (await kinds(store))[-1] == "approval_refused"
    approved = await approvals.approve(workload(BOB), approval.approval_id)
    assert approved.decided_by == BOB


async def test_delegated_approval_a_platform_member_decides_a_low_risk_rule(
    approvals: Approvals,
) -> None:
    low_risk = pending_decision(
        approval_rules=("approval.reports.write",),
        approver_groups=("platform-approvers", "security-approvers"),
    )
    approval = await approvals.request(workload(), task(audience="reports-api"), low_risk, "d")

    approved = await approvals.approve(workload(ONCALL), approval.approval_id)

    assert approved.decided_by == ONCALL


async def test_a_request_expires_unanswered(approvals: Approvals, clock: FixedClock) -> None:
    approval = await ask(approvals)
    clock.advance(TTL)

    with pytest.raises(Conflict, match="expired"):
        await approvals.approve(workload(ALICE), approval.approval_id)
    assert await approvals.list_pending(workload(ALICE)) == []
    # and the next exchange for the task asks anew
    assert (await ask(approvals)).approval_id != approval.approval_id


async def test_a_decision_is_final(approvals: Approvals) -> None:
    approval = await ask(approvals)
    await approvals.deny(workload(ALICE), approval.approval_id, reason="no")

    with pytest.raises(Conflict, match="denied"):
        await approvals.approve(workload(BOB), approval.approval_id)
    again = await ask(approvals)
    assert (again.approval_id, again.state) == (approval.approval_id, ApprovalState.DENIED)


async def test_an_approval_is_used_once_for_its_exact_request(
    approvals: Approvals, store: SqliteStore
) -> None:
    approval = await approvals.approve(workload(ALICE), (await ask(approvals)).approval_id)
    decision = allowed(pending_decision())

    used, granted = await approvals.consume(approval, workload(), task(), decision, "dec_2")

    assert used.state is ApprovalState.CONSUMED
    assert granted == decision
    assert (await kinds(store))[-1] == "approval_consumed"
    with pytest.raises(Conflict, match="single use"):
        await approvals.consume(approval, workload(), task(), decision, "dec_3")


@pytest.mark.parametrize(
    ("requester", "task_changes", "decision_changes", "phrase"),
    [
        pytest.param(
            "spiffe://example.org/agents/report-bot", {}, {}, "another requester", id="requester"
        ),
        pytest.param(AGENT, {"task_id": "t-2"}, {}, "another task", id="task"),
        pytest.param(
            AGENT, {"requested_ttl": dt.timedelta(minutes=6)}, {}, "another task", id="ttl"
        ),
        pytest.param(AGENT, {}, {"scopes": ("payments:admin",)}, "other scopes", id="scopes"),
    ],
)
async def test_an_approval_does_not_cover_anything_else(
    approvals: Approvals,
    store: SqliteStore,
    requester: str,
    task_changes: dict[str, object],
    decision_changes: dict[str, object],
    phrase: str,
) -> None:
    approval = await approvals.approve(workload(ALICE), (await ask(approvals)).approval_id)
    decision = dataclasses.replace(allowed(pending_decision()), **decision_changes)  # type: ignore[arg-type]

    with pytest.raises(PermissionDenied, match=phrase):
        await approvals.consume(approval, workload(requester), task(**task_changes), decision, "d")
    assert (await store.approvals.get(approval.approval_id)).state is ApprovalState.APPROVED  # type: ignore[union-attr]


async def test_a_longer_lifetime_than_approved_is_cut_to_the_approved_one(
    approvals: Approvals,
) -> None:
    approval = await approvals.approve(workload(ALICE), (await ask(approvals)).approval_id)
    longer = dataclasses.replace(allowed(pending_decision()), ttl=dt.timedelta(hours=1))

    _, granted = await approvals.consume(approval, workload(), task(), longer, "d")

    assert granted.ttl == dt.timedelta(minutes=5)


async def test_an_unused_approval_expires(approvals: Approvals, clock: FixedClock) -> None:
    approval = await approvals.approve(workload(ALICE), (await ask(approvals)).approval_id)
    clock.advance(TTL)

    with pytest.raises(Conflict, match="expired"):
        await approvals.consume(approval, workload(), task(), allowed(pending_decision()), "d")


# -- a delegated exchange's approval is bound to its parent credential --------------------------

PARENT_X = "jti-parent-x"
PARENT_Y = "jti-parent-y"


async def ask_under(approvals: Approvals, parent_jti: str | None) -> ApprovalRecord:
    return await approvals.request(
        workload(), task(), pending_decision(), "dec_1", parent_jti=parent_jti
    )


async def test_a_delegated_request_names_its_parent_in_every_audit_record(
    approvals: Approvals, store: SqliteStore
) -> None:
    approval = await ask_under(approvals, PARENT_X)
    approved = await approvals.approve(workload(ALICE), approval.approval_id)
    with pytest.raises(PermissionDenied):
        await approvals.deny(workload(ONCALL), approval.approval_id, reason="not mine")
    await approvals.consume(
        approved, workload(), task(), allowed(pending_decision()), "dec_2", parent_jti=PARENT_X
    )

    assert approval.parent_jti == PARENT_X
    records = await store.audit.read(limit=10)
    assert [(r.kind, r.payload["parent_jti"]) for r in records] == [
        ("approval_requested", PARENT_X),
        ("approval_granted", PARENT_X),
        ("approval_refused", PARENT_X),
        ("approval_consumed", PARENT_X),
    ]


async def test_the_same_task_under_another_parent_is_another_request(
    approvals: Approvals,
) -> None:
    under_x = await ask_under(approvals, PARENT_X)

    assert (await ask_under(approvals, PARENT_X)).approval_id == under_x.approval_id
    under_y = await ask_under(approvals, PARENT_Y)
    without = await ask_under(approvals, None)
    assert len({under_x.approval_id, under_y.approval_id, without.approval_id}) == 3
    assert (under_y.parent_jti, without.parent_jti) == (PARENT_Y, None)


@pytest.mark.parametrize(
    ("granted", "presented", "why"),
    [
        pytest.param(
            PARENT_X, PARENT_Y, "it was granted under another parent credential", id="x-under-y"
        ),
        pytest.param(
            PARENT_X,
            None,
            "it was granted for a delegation under a parent credential, not without one",
            id="x-without-parent",
        ),
        pytest.param(
            None,
            PARENT_X,
            "it was granted for an exchange without a parent credential, not a delegation",
            id="no-parent-under-x",
        ),
    ],
)
async def test_a_grant_serves_only_the_parent_it_was_asked_under(
    approvals: Approvals,
    store: SqliteStore,
    granted: str | None,
    presented: str | None,
    why: str,
) -> None:
    approval = await approvals.approve(
        workload(ALICE), (await ask_under(approvals, granted)).approval_id
    )
    decision = allowed(pending_decision())

    with pytest.raises(PermissionDenied) as refused:
        await approvals.consume(approval, workload(), task(), decision, "d", parent_jti=presented)

    assert refused.value.message == (
        f"approval {approval.approval_id} does not cover this request: {why}; "
        "ask for a new approval"
    )
    assert (await store.approvals.get(approval.approval_id)).state is ApprovalState.APPROVED  # type: ignore[union-attr]
    used, _ = await approvals.consume(
        approval, workload(), task(), decision, "d", parent_jti=granted
    )
    assert used.state is ApprovalState.CONSUMED


async def test_pending_lists_only_what_the_viewer_may_decide(approvals: Approvals) -> None:
    mine = await ask(approvals, ALICE)
    agents = await ask(approvals)

    assert [a.approval_id for a in await approvals.list_pending(workload(ALICE))] == [
        agents.approval_id
    ]
    # (asked at the same instant of the fixed clock: in the order of their ids)
    assert [a.approval_id for a in await approvals.list_pending(workload(BOB))] == sorted(
        [mine.approval_id, agents.approval_id]
    )
    assert await approvals.list_pending(workload(ONCALL)) == []


async def test_a_flood_of_requests_others_decide_never_hides_the_viewers_own(
    store: SqliteStore, clock: FixedClock
) -> None:
    approvals = Approvals(
        store=store, groups=Groups(GROUPS), clock=clock, ttl=TTL, max_pending=MAX_PAGE + 1
    )
    for n in range(MAX_PAGE):  # a page of requests only security approvers decide
        await ask(approvals, task_id=f"t-flood-{n}")
    clock.advance(dt.timedelta(seconds=1))  # newer than the whole first page
    platform = await approvals.request(
        workload(),
        task(task_id="t-platform"),
        pending_decision(approver_groups=("platform-approvers",)),
        "dec_2",
    )

    visible = await approvals.list_pending(workload(ONCALL))

    assert [a.approval_id for a in visible] == [platform.approval_id]


async def test_get_shows_an_approval_to_its_requester_and_deciders_only(
    approvals: Approvals,
) -> None:
    approval = await ask(approvals)

    assert (await approvals.get(workload(), approval.approval_id)) == approval
    assert (await approvals.get(workload(ALICE), approval.approval_id)) == approval
    with pytest.raises(NotFound):
        await approvals.get(workload(ONCALL), approval.approval_id)


async def test_a_waiting_requester_wakes_as_soon_as_an_approver_decides(
    approvals: Approvals,
) -> None:
    approval = await ask(approvals)
    waiting = asyncio.create_task(approvals.wait(approval.approval_id, dt.timedelta(minutes=5)))
    while approvals.signals.waiting == 0:
        await asyncio.sleep(0)

    await approvals.approve(workload(ALICE), approval.approval_id)

    woken = await asyncio.wait_for(waiting, 2)
    assert woken.state is ApprovalState.APPROVED


async def test_waiting_gives_up_after_its_time_and_returns_the_pending_request(
    approvals: Approvals,
) -> None:
    approval = await ask(approvals)

    still = await approvals.wait(approval.approval_id, dt.timedelta(milliseconds=10))

    assert still.state is ApprovalState.PENDING
    assert approvals.signals.waiting == 0


async def test_waiting_on_an_expired_request_returns_at_once(
    approvals: Approvals, clock: FixedClock
) -> None:
    approval = await ask(approvals)
    clock.advance(TTL)

    expired = await approvals.wait(approval.approval_id, dt.timedelta(hours=1))

    assert expired.effective_state(clock.now()) is ApprovalState.EXPIRED


async def test_a_watcher_gets_the_backlog_then_new_requests_and_decisions(
    approvals: Approvals,
) -> None:
    first = await ask(approvals)
    stream = approvals.watch(workload(ALICE))

    backlog = await anext(stream)
    second = await ask(approvals, task_id="t-2")
    arrived = await anext(stream)
    await approvals.deny(workload(BOB), second.approval_id, reason="no")
    decided = await anext(stream)
    await stream.aclose()

    assert (backlog.approval.approval_id, backlog.state) == (first.approval_id, "pending")
    assert (arrived.approval.approval_id, arrived.state) == (second.approval_id, "pending")
    assert (decided.approval.approval_id, decided.state) == (second.approval_id, "denied")


async def test_a_watcher_does_not_see_requests_it_may_not_decide(approvals: Approvals) -> None:
    stream = approvals.watch(workload(ALICE))
    next_item = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)

    await ask(approvals, ALICE)  # her own: not for her to decide
    visible = await ask(approvals, task_id="t-9")

    item = await asyncio.wait_for(next_item, 2)
    await stream.aclose()
    assert item.approval.approval_id == visible.approval_id


async def test_a_waiter_sees_a_decision_whose_signal_it_never_got(
    store: SqliteStore, clock: FixedClock
) -> None:
    # two desks on one store, each with its own signals: like two replicas without NOTIFY
    here = Approvals(
        store=store,
        groups=Groups(GROUPS),
        clock=clock,
        ttl=TTL,
        recheck=dt.timedelta(milliseconds=20),
    )
    elsewhere = Approvals(store=store, groups=Groups(GROUPS), clock=clock, ttl=TTL)
    approval = await ask(here)
    waiting = asyncio.create_task(here.wait(approval.approval_id, dt.timedelta(minutes=5)))
    while here.signals.waiting == 0:
        await asyncio.sleep(0)

    await elsewhere.approve(workload(ALICE), approval.approval_id)

    woken = await asyncio.wait_for(waiting, 2)
    assert woken.state is ApprovalState.APPROVED


async def test_a_replica_notification_wakes_the_waiter_at_once(
    store: SqliteStore, clock: FixedClock
) -> None:
    here = Approvals(store=store, groups=Groups(GROUPS), clock=clock, ttl=TTL)
    elsewhere = Approvals(store=store, groups=Groups(GROUPS), clock=clock, ttl=TTL)
    approval = await ask(here)
    waiting = asyncio.create_task(here.wait(approval.approval_id, dt.timedelta(minutes=5)))
    while here.signals.waiting == 0:
        await asyncio.sleep(0)

    await elsewhere.approve(workload(ALICE), approval.approval_id)
    here.signals.notify(approval.approval_id)  # what a LISTEN callback would do

    woken = await asyncio.wait_for(waiting, 1)  # the default recheck is 5 s
    assert woken.state is ApprovalState.APPROVED
