"""A ban takes every power from an identity, not only its exchanges: a banned approver decides
nothing, an approval it gave before is not used, and a banned admin cannot lift its own ban."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.client import ApprovalPending, InvalidRequest, PermissionDenied, Task
from taskpass.client.revocations import RevocationAdmin
from tests.integration.governance import ALICE, BOB, POLICY, approvals_of, audit_log
from tests.integration.harness import ADMIN, BILLING_BOT, Harness, start_harness
from tests.support.pki import EXAMPLE, TestPki

DEPUTY = f"spiffe://{EXAMPLE}/security/deputy-admin"
WRITE = Task(task_id="t-pay-1", audience="payments-api", action="write")


@pytest.fixture
async def gov(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    """The governance policy, with a second admin."""
    running = await start_harness(tmp_path, pki, policy=POLICY, groups={"admins": (ADMIN, DEPUTY)})
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)


async def ask(gov: Harness) -> str:
    async with gov.agent(BILLING_BOT) as agent:
        with pytest.raises(ApprovalPending) as info:
            await agent.exchange(WRITE)
    return info.value.approval_id


async def ban(gov: Harness, identity: str, by: str = ADMIN) -> None:
    async with gov.agent(by) as admin:
        await RevocationAdmin(admin).ban(identity, reason="key stolen")


async def test_a_banned_approver_decides_nothing_and_the_refusal_is_audited(gov: Harness) -> None:
    approval_id = await ask(gov)
    await ban(gov, ALICE)

    async with gov.agent(ALICE) as alice:
        for _ in range(5):  # refused each time, audited once a minute (audit/denials.py)
            with pytest.raises(PermissionDenied, match="banned by security"):
                await approvals_of(alice).approve(approval_id)
    async with gov.agent(BOB) as bob:
        await approvals_of(bob).approve(approval_id)  # another approver still may

    denied = [r for r in await audit_log(gov) if r.kind == "access_denied"]
    assert [(r.actor, r.payload["reason"]) for r in denied] == [
        (ALICE, f"banned by the ban on {ALICE}")
    ]


async def test_an_approval_given_before_its_approver_was_banned_is_not_used(
    gov: Harness,
) -> None:
    approval_id = await ask(gov)
    async with gov.agent(ALICE) as alice:
        await approvals_of(alice).approve(approval_id)
    await ban(gov, ALICE)

    async with gov.agent(BILLING_BOT) as agent:
        with pytest.raises(PermissionDenied) as refused:
            await agent.exchange(WRITE)
    assert refused.value.message == (
        f"approval {approval_id} was given by {ALICE}, who has been banned since; a new "
        "approval needs a new task_id"
    )


@pytest.mark.parametrize("pattern", [ADMIN, f"spiffe://{EXAMPLE}/security/*"])
async def test_an_admin_cannot_ban_itself(gov: Harness, pattern: str) -> None:
    async with gov.agent(ADMIN) as admin:
        with pytest.raises(InvalidRequest) as refused:
            await RevocationAdmin(admin).ban(pattern, reason="oops")
    assert refused.value.message == (
        f"identity: {pattern} covers your own identity ({ADMIN}); a ban on it must come from "
        "another admin"
    )


async def test_a_banned_admin_cannot_lift_its_own_ban(gov: Harness) -> None:
    await ban(gov, ADMIN, by=DEPUTY)

    async with gov.agent(ADMIN) as admin:
        with pytest.raises(PermissionDenied, match="banned by security"):
            await RevocationAdmin(admin).unban(ADMIN, reason="it was me")
    async with gov.agent(DEPUTY) as deputy:
        await RevocationAdmin(deputy).unban(ADMIN, reason="new key issued")
    async with gov.agent(ADMIN) as admin:
        assert await RevocationAdmin(admin).list_bans() == ()


async def test_an_approver_banned_while_watching_sees_no_more_requests(gov: Harness) -> None:
    async with gov.agent(ALICE) as alice:
        stream = approvals_of(alice).watch()
        try:
            first = asyncio.ensure_future(anext(stream))
            await ask(gov)
            await asyncio.wait_for(first, 5)  # the stream is live: alice saw the first request
            await ban(gov, ALICE)
            async with gov.agent(BILLING_BOT) as agent:  # a new request must not reach alice
                with pytest.raises(ApprovalPending):
                    await agent.exchange(
                        Task(task_id="t-pay-2", audience="payments-api", action="write")
                    )

            with pytest.raises(PermissionDenied, match="banned by security"):
                await asyncio.wait_for(anext(stream), 5)
        finally:
            await stream.aclose()
