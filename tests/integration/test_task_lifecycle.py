"""Exchange outcomes, task completion and introspection over the real server."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.client import (
    ApprovalPending,
    FailedPrecondition,
    InvalidRequest,
    PermissionDenied,
    Task,
)
from tests.integration.harness import BILLING_BOT, REPORT_BOT, Harness

READ = Task(task_id="t-7", audience="payments-api", action="read", ttl=dt.timedelta(minutes=5))


async def test_write_needs_approval_and_says_by_whom(harness: Harness) -> None:
    async with harness.agent() as client:
        with pytest.raises(ApprovalPending) as info:
            await client.exchange(Task(task_id="t-w", audience="payments-api", action="write"))
    assert info.value.rules == ("approval.payments.write",)
    assert info.value.approver_groups == ("security-approvers",)
    assert "security-approvers" in info.value.message


async def test_ttl_is_capped_by_the_grant_and_by_prod(harness: Harness) -> None:
    async with harness.agent() as client:
        long = await client.exchange(
            Task(
                task_id="t-long", audience="payments-api", action="read", ttl=dt.timedelta(hours=2)
            )
        )
        prod = await client.exchange(
            Task(task_id="t-prod", audience="payments-api", action="read", environment="prod")
        )
    assert long.expires_at - long.issued_at == dt.timedelta(minutes=15)
    assert prod.expires_at - prod.issued_at == dt.timedelta(minutes=5)
    assert prod.matched_rules == ("grant.payments.read", "cap.prod")


async def test_complete_task_revokes_every_credential_of_it(harness: Harness) -> None:
    async with harness.agent() as client:
        first = await client.exchange(READ)
        second = await client.exchange(READ)  # same task, same descriptor: a second credential
        assert (await client.introspect(first.token)).active
        revoked = await client.complete_task("t-7")
        assert set(revoked) == {first.jti, second.jti}
        assert not (await client.introspect(first.token)).active
        assert not (await client.introspect(second.token)).active
        with pytest.raises(FailedPrecondition, match="completed"):
            await client.exchange(READ)


async def test_a_task_id_cannot_be_reused_for_a_different_task(harness: Harness) -> None:
    async with harness.agent() as client:
        await client.exchange(READ)
        with pytest.raises(FailedPrecondition, match="different task"):
            await client.exchange(
                Task(task_id="t-7", audience="payments-api", action="read", sensitivity="public")
            )


async def test_task_ids_are_per_requester(harness: Harness) -> None:
    async with harness.agent() as billing, harness.agent(REPORT_BOT) as report:
        a = await billing.exchange(READ)
        b = await report.exchange(READ)
        assert await report.complete_task("t-7") == (b.jti,)
        assert (await billing.introspect(a.token)).active


@pytest.mark.parametrize(
    ("requester", "shown"),
    [
        pytest.param("x\r\ny", "x\\r\\ny", id="control-characters-escaped"),
        pytest.param("é" * 3000, "\\xe9" * 256, id="a-huge-name-cut-short"),
    ],
)
async def test_completing_someone_elses_task_quotes_the_name_safely(
    harness: Harness, requester: str, shown: str
) -> None:
    async with harness.agent() as client:
        with pytest.raises(PermissionDenied) as refused:
            await client.complete_task("t-7", requester=requester)
    assert f"may not complete task 't-7' of {shown}: only the requester" in refused.value.message


async def test_introspect_reports_claims_of_an_active_token(harness: Harness) -> None:
    async with harness.agent() as client:
        credential = await client.exchange(READ)
        result = await client.introspect(credential.token)
    assert result.active
    assert result.claims["jti"] == credential.jti
    assert result.claims["txn"] == "t-7"
    assert result.claims["aud"] == "payments-api"
    assert result.claims["scope"] == "payments:read"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.", id="alg-none"),
    ],
)
async def test_introspect_is_inactive_for_anything_not_issued_here(
    harness: Harness, token: str
) -> None:
    async with harness.agent() as client:
        result = await client.introspect(token)
    assert not result.active
    assert dict(result.claims) == {}


async def test_introspect_is_inactive_for_a_forged_signature(harness: Harness) -> None:
    async with harness.agent() as client:
        credential = await client.exchange(READ)
        head, body, signature = credential.token.split(".")
        forged = f"{head}.{body}.{signature[::-1]}"
        assert not (await client.introspect(forged)).active


async def test_completing_an_unknown_task_is_not_found(harness: Harness) -> None:
    from taskpass.client import NotFound

    async with harness.agent() as client:
        with pytest.raises(NotFound, match="t-none"):
            await client.complete_task("t-none")


ORCHESTRATOR = "spiffe://example.org/orchestrators/ci"


async def test_the_declared_orchestrator_completes_the_task_for_its_agent(harness: Harness) -> None:
    task = Task(task_id="t-orch", audience="payments-api", action="read", orchestrator=ORCHESTRATOR)
    async with harness.agent() as agent, harness.agent(ORCHESTRATOR) as ci:
        credential = await agent.exchange(task)
        revoked = await ci.complete_task("t-orch", requester=BILLING_BOT)
        assert revoked == (credential.jti,)
        assert not (await agent.introspect(credential.token)).active


@pytest.mark.parametrize(
    ("declared", "completer"),
    [
        pytest.param("", ORCHESTRATOR, id="task-names-no-orchestrator"),
        pytest.param(
            ORCHESTRATOR, "spiffe://example.org/orchestrators/other", id="not-the-named-one"
        ),
        pytest.param(REPORT_BOT, REPORT_BOT, id="named-but-not-in-orchestrators-group"),
    ],
)
async def test_nobody_else_completes_a_task_of_another_workload(
    harness: Harness, declared: str, completer: str
) -> None:
    task = Task(task_id="t-o2", audience="payments-api", action="read", orchestrator=declared)
    async with harness.agent() as agent, harness.agent(completer) as other:
        credential = await agent.exchange(task)
        with pytest.raises(PermissionDenied, match="may not complete task 't-o2'"):
            await other.complete_task("t-o2", requester=BILLING_BOT)
        assert (await agent.introspect(credential.token)).active


async def test_orchestrator_must_be_a_spiffe_id(harness: Harness) -> None:
    async with harness.agent() as agent:
        with pytest.raises(InvalidRequest, match=r"task\.orchestrator"):
            await agent.exchange(
                Task(task_id="t-o3", audience="payments-api", action="read", orchestrator="ci")
            )
