"""Who may approve a delegated request: never the principal it is made for, nor any agent
between, even when it is in the approver group (a sub-agent asking for its own principal)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.client import ApprovalPending, PermissionDenied
from taskpass.client.approvals import ApprovalsClient
from tests.integration.delegating import POLICY, RUNNER, agent, read
from tests.integration.harness import BILLING_BOT, Harness, start_harness
from tests.support.pki import EXAMPLE, TestPki

ALICE = f"spiffe://{EXAMPLE}/humans/approvers/alice"


@pytest.fixture
async def harness(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    """The delegation policy, with the billing bot made a security approver as well."""
    approvers = ("spiffe://example.org/humans/approvers/*", BILLING_BOT)
    running = await start_harness(
        tmp_path, pki, policy=POLICY, groups={"security-approvers": approvers}
    )
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)


async def test_the_principal_of_a_delegated_request_may_not_approve_it(harness: Harness) -> None:
    parent = await agent(harness).exchange(read(sensitivity="confidential"))
    runner = agent(harness, RUNNER)
    task = read(sensitivity="confidential", ttl=60)
    with pytest.raises(ApprovalPending) as pending:
        await runner.delegate(parent, task=task)  # made on the billing bot's behalf
    approval_id = pending.value.approval_id

    async with harness.agent(BILLING_BOT) as principal:
        with pytest.raises(PermissionDenied) as refused:
            await ApprovalsClient.over(principal).approve(approval_id)
    assert refused.value.message == (
        f"{BILLING_BOT} may not approve approval {approval_id}: the request is delegated from a "
        "credential it holds, so it is made on its behalf; another approver must decide"
    )
    async with harness.agent(ALICE) as alice:
        await ApprovalsClient.over(alice).approve(approval_id)
    child = await runner.delegate(parent, task=task)
    assert child.approval_id == approval_id
