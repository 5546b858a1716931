"""Approvals end to end over real mTLS: bound, single use, expiring, decided only by the rule's
approver groups and never by the requester, and waiting exchanges complete at once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import jwt as pyjwt
import pytest

from taskpass.client import (
    ApprovalPending,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Task,
)
from taskpass.client.approvals import Approval
from taskpass.server.clock import FixedClock
from tests.integration.governance import (
    ALICE,
    BOB,
    ONCALL,
    approvals_of,
    audit_log,
    soon,
    start_governance,
)
from tests.integration.harness import BILLING_BOT, REPORT_BOT, Harness
from tests.support.pki import TestPki

WRITE = Task(
    task_id="t-pay-1",
    audience="payments-api",
    action="write",
    sensitivity="internal",
    ttl=dt.timedelta(minutes=5),
    reason="refund order 42",
)


@pytest.fixture
async def gov(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    harness = await start_governance(tmp_path, pki)
    try:
        yield harness
    finally:
        await harness.server.stop(grace=0.5)


async def ask(harness: Harness, task: Task = WRITE, requester: str = BILLING_BOT) -> str:
    async with harness.agent(requester) as agent:
        with pytest.raises(ApprovalPending) as info:
            await agent.exchange(task)
    return info.value.approval_id


def claims(token: str) -> dict[str, object]:
    value: dict[str, object] = pyjwt.decode(token, options={"verify_signature": False})
    return value


async def test_pending_request_shows_the_approver_who_asks_for_what_under_which_rule(
    gov: Harness,
) -> None:
    approval_id = await ask(gov)

    async with gov.agent(ALICE) as alice:
        [pending] = await approvals_of(alice).list_pending()

    assert pending.approval_id == approval_id
    assert pending.state == "pending"
    assert (pending.requester, pending.attestation_method) == (BILLING_BOT, "x509-svid")
    assert pending.cert_sha256
    assert (pending.task.audience, pending.task.action, pending.task.sensitivity) == (
        "payments-api",
        "write",
        "internal",
    )
    assert (pending.task.task_id, pending.task.reason) == ("t-pay-1", "refund order 42")
    assert (pending.ttl_seconds, pending.scopes) == (300, ("payments:write",))
    assert pending.rules == ("approval.payments.write",)
    assert pending.approver_groups == ("security-approvers",)
    assert pending.policy_version.startswith("sha256:")


async def test_approved_exchange_carries_approval_and_policy_version_in_token_and_audit(
    gov: Harness,
) -> None:
    approval_id = await ask(gov)
    async with gov.agent(ALICE) as alice:
        approved = await approvals_of(alice).approve(approval_id, comment="refund checked")
    assert (approved.state, approved.decided_by) == ("approved", ALICE)

    async with gov.agent() as agent:
        credential = await agent.exchange(WRITE)

    task_claim = claims(credential.token)["task"]
    assert isinstance(task_claim, dict)
    assert task_claim["approval_id"] == approval_id
    assert task_claim["policy_version"] == credential.policy_version
    stored = await gov.server.store.credentials.get_credential(credential.jti)
    assert stored is not None and stored.approval_id == approval_id
    issuance = [r for r in await audit_log(gov) if r.kind == "issuance"][-1]
    assert issuance.payload["approval_id"] == approval_id
    assert issuance.payload["approved_by"] == ALICE
    assert issuance.payload["policy_version"] == credential.policy_version
    assert issuance.payload["jti"] == credential.jti
    assert credential.token not in str(issuance.payload)


async def test_an_approval_is_single_use(gov: Harness) -> None:
    approval_id = await ask(gov)
    async with gov.agent(ALICE) as alice:
        await approvals_of(alice).approve(approval_id)
    async with gov.agent() as agent:
        await agent.exchange(WRITE)

    again = await ask(gov)

    assert again != approval_id
    async with gov.agent(ALICE) as alice:
        used = await approvals_of(alice).get(approval_id)
    assert used.state == "consumed"


@pytest.mark.parametrize(
    ("task", "requester"),
    [
        pytest.param(dataclasses.replace(WRITE, task_id="t-pay-2"), BILLING_BOT, id="other-task"),
        pytest.param(
            dataclasses.replace(WRITE, ttl=dt.timedelta(minutes=6)), BILLING_BOT, id="ttl"
        ),
        pytest.param(WRITE, REPORT_BOT, id="other-requester"),
    ],
)
async def test_an_approval_serves_only_its_requester_task_and_ttl(
    gov: Harness, task: Task, requester: str
) -> None:
    approval_id = await ask(gov)
    async with gov.agent(ALICE) as alice:
        await approvals_of(alice).approve(approval_id)

    other = await ask(gov, task, requester)

    assert other != approval_id
    async with gov.agent(ALICE) as alice:
        assert (await approvals_of(alice).get(approval_id)).state == "approved"


@pytest.mark.parametrize(
    "decider",
    [
        pytest.param(BILLING_BOT, id="the-requester-agent"),
        pytest.param(REPORT_BOT, id="another-agent"),
        pytest.param(ONCALL, id="platform-member-on-a-security-rule"),
    ],
)
async def test_only_the_rules_approver_groups_may_decide_and_refusals_are_audited(
    gov: Harness, decider: str
) -> None:
    approval_id = await ask(gov)

    async with gov.agent(decider) as client:
        with pytest.raises(PermissionDenied):
            await approvals_of(client).approve(approval_id)
        with pytest.raises(PermissionDenied):
            await approvals_of(client).deny(approval_id, reason="no")

    refused = [r for r in await audit_log(gov) if r.kind == "approval_refused"]
    assert [r.actor for r in refused] == [decider, decider]
    assert refused[0].payload["approval_id"] == approval_id


async def test_the_requester_never_approves_its_own_request_even_in_the_group(
    gov: Harness,
) -> None:
    ledger = Task(task_id="t-ledger", audience="ledger-api", action="write")
    approval_id = await ask(gov, ledger, ALICE)  # alice is a security approver herself

    async with gov.agent(ALICE) as alice:
        with pytest.raises(PermissionDenied, match="its own request"):
            await approvals_of(alice).approve(approval_id)
        assert [a.approval_id for a in await approvals_of(alice).list_pending()] == []
    async with gov.agent(BOB) as bob:
        approved = await approvals_of(bob).approve(approval_id)
    async with gov.agent(ALICE) as alice:
        credential = await alice.exchange(ledger)

    assert approved.decided_by == BOB
    assert credential.scopes == ("ledger:write",)


async def test_each_rule_is_approved_only_by_its_own_groups(gov: Harness) -> None:
    # Two rules ask: approval.payments.write (security) and approval.payments.prod (platform or
    # security). The platform on-call may decide only the second, so it may not approve at all.
    prod = dataclasses.replace(WRITE, task_id="t-pay-prod", environment="prod")
    approval_id = await ask(gov, prod)

    async with gov.agent(ONCALL) as oncall:
        with pytest.raises(PermissionDenied) as refused:
            await approvals_of(oncall).approve(approval_id)
    assert refused.value.message == (
        f"{ONCALL} may not approve approval {approval_id}: approval.payments.write needs a "
        "member of security-approvers. One approver must be able to approve every rule the "
        "request needs"
    )
    async with gov.agent(ALICE) as alice:
        await approvals_of(alice).approve(approval_id)
    async with gov.agent(BILLING_BOT) as agent:
        credential = await agent.exchange(prod)
    assert credential.approval_id == approval_id


async def test_delegated_approval_platform_decides_low_risk_not_high_risk(gov: Harness) -> None:
    reports = Task(task_id="t-rep", audience="reports-api", action="write", sensitivity="internal")
    low = await ask(gov, reports)
    high = await ask(gov)

    async with gov.agent(ONCALL) as oncall:
        visible = [a.approval_id for a in await approvals_of(oncall).list_pending()]
        approved = await approvals_of(oncall).approve(low)
        with pytest.raises(PermissionDenied, match="security-approvers"):
            await approvals_of(oncall).approve(high)
    async with gov.agent() as agent:
        credential = await agent.exchange(reports)

    assert visible == [low]
    assert approved.approver_groups == ("platform-approvers", "security-approvers")
    assert credential.scopes == ("reports:write",)


async def test_a_waiting_exchange_completes_as_soon_as_the_approver_approves(
    gov: Harness,
) -> None:
    async with gov.agent() as agent, gov.agent(ALICE) as alice:
        loop = asyncio.get_running_loop()
        started = loop.time()
        exchange = asyncio.create_task(
            agent.exchange(WRITE, wait_for_approval=dt.timedelta(seconds=60))
        )
        seen: Approval | None = None
        async for approval in approvals_of(alice).watch():
            if approval.state == "pending" and approval.task.task_id == WRITE.task_id:
                seen = approval
                break
        assert seen is not None
        await approvals_of(alice).approve(seen.approval_id)
        credential = await soon(exchange)

    assert loop.time() - started < 10  # far from the 60 s it was ready to wait
    task_claim = claims(credential.token)["task"]
    assert isinstance(task_claim, dict)
    assert task_claim["approval_id"] == seen.approval_id


async def test_a_waiting_exchange_ends_with_the_denial_and_its_reason(gov: Harness) -> None:
    async with gov.agent() as agent, gov.agent(ALICE) as alice:
        exchange = asyncio.create_task(
            agent.exchange(WRITE, wait_for_approval=dt.timedelta(seconds=60))
        )
        async for approval in approvals_of(alice).watch():
            if approval.state == "pending":
                await approvals_of(alice).deny(approval.approval_id, reason="no refunds today")
                break
        with pytest.raises(PermissionDenied, match="no refunds today") as info:
            await soon(exchange)

    assert info.value.details["approval_id"] == approval.approval_id
    # a denial is final for that task
    async with gov.agent() as agent:
        with pytest.raises(PermissionDenied, match="denied"):
            await agent.exchange(WRITE)


async def test_a_watcher_sees_new_requests_and_their_decisions_live(gov: Harness) -> None:
    async with gov.agent(BOB) as bob:
        stream = approvals_of(bob).watch().__aiter__()
        first_item = asyncio.ensure_future(anext(stream))
        approval_id = await ask(gov)
        arrived = await soon(first_item)
        async with gov.agent(ALICE) as alice:
            await approvals_of(alice).approve(approval_id)
        decided = await soon(anext(stream))

    assert (arrived.approval_id, arrived.state) == (approval_id, "pending")
    assert (decided.approval_id, decided.state, decided.decided_by) == (
        approval_id,
        "approved",
        ALICE,
    )


async def test_get_is_for_the_requester_and_deciders_only(gov: Harness) -> None:
    approval_id = await ask(gov)

    async with gov.agent() as agent:
        mine = await approvals_of(agent).get(approval_id)
    async with gov.agent(REPORT_BOT) as other:
        with pytest.raises(NotFound):
            await approvals_of(other).get(approval_id)
    assert mine.state == "pending"


async def test_requests_and_approvals_expire(tmp_path: Path, pki: TestPki) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    harness = await start_governance(tmp_path, pki, approval_ttl_seconds=60, clock=clock)
    try:
        unanswered = await ask(harness)
        clock.advance(dt.timedelta(seconds=61))
        async with harness.agent(ALICE) as alice:
            with pytest.raises(FailedPrecondition, match="expired"):
                await approvals_of(alice).approve(unanswered)
            assert await approvals_of(alice).list_pending() == ()

        unused = await ask(harness)
        assert unused != unanswered
        async with harness.agent(ALICE) as alice:
            await approvals_of(alice).approve(unused)
        clock.advance(dt.timedelta(seconds=61))
        async with harness.agent(ALICE) as alice:
            assert (await approvals_of(alice).get(unused)).state == "expired"
        assert await ask(harness) not in (unanswered, unused)
    finally:
        await harness.server.stop(grace=0.5)


async def test_every_step_of_the_flow_is_in_the_audit_log(gov: Harness) -> None:
    approval_id = await ask(gov)
    async with gov.agent(ALICE) as alice:
        await approvals_of(alice).approve(approval_id)
    async with gov.agent() as agent:
        credential = await agent.exchange(WRITE)
        await agent.complete_task(WRITE.task_id)
    denied_id = await ask(gov, dataclasses.replace(WRITE, task_id="t-pay-9"))
    async with gov.agent(BOB) as bob:
        await approvals_of(bob).deny(denied_id, reason="duplicate")

    kinds = [r.kind for r in await audit_log(gov)]

    assert kinds == [
        "policy_loaded",
        "key_shared",  # the server's signing key, in the JWKS shared by replicas
        "approval_requested",
        "decision",
        "approval_granted",
        "decision",  # pending again, naming the approval it then uses
        "approval_consumed",
        "issuance",
        "task_completed",
        "approval_requested",
        "decision",
        "approval_denied",
    ]
    records = await audit_log(gov)
    assert records[5].payload["approval_id"] == approval_id
    assert records[7].payload["jti"] == credential.jti
    assert records[0].payload["policy_version"] == credential.policy_version
