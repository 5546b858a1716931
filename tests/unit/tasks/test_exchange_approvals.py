"""The exchange with approvals: pending -> request, wait, approve -> one credential, once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.approvals.service import Approvals
from taskpass.server.clock import FixedClock
from taskpass.server.errors import (
    ApprovalRequired,
    Conflict,
    InvalidRequest,
    PermissionDenied,
    ResourceExhausted,
)
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.store.records import ApprovalState
from taskpass.server.store.sqlite import SqliteStore
from taskpass.server.tasks import service
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor
from taskpass.server.tasks.service import StaticPolicy, TaskService

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
AGENT = "spiffe://example.org/agents/billing-bot"
ALICE = "spiffe://example.org/humans/approvers/alice"
POLICY = b"""
version: "unit-1"
rules:
  - id: grant.payments
    effect: grant
    workload: "spiffe://example.org/agents/*"
    audience: payments-api
    actions: [read, write]
    max_ttl: 10m
    scopes: ["payments:rw"]
  - id: approval.payments.write
    effect: require_approval
    audience: payments-api
    actions: [write]
    approvers: [security-approvers]
"""
WRITE = TaskDescriptor(
    task_id="t-1",
    audience="payments-api",
    action="write",
    sensitivity=Sensitivity.INTERNAL,
    requested_ttl=dt.timedelta(minutes=5),
)


def workload(spiffe_id: str = AGENT) -> Workload:
    return Workload(
        id=spiffe_id,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=NOW + dt.timedelta(days=1),
        cert_thumbprint="thumb",
    )


@dataclasses.dataclass
class World:
    tasks: TaskService
    approvals: Approvals
    store: SqliteStore
    clock: FixedClock
    engine: PolicyEngine


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FixedClock(NOW)
    keys = KeyRing.load_or_create(tmp_path / "keys", algorithm="ES256", clock=clock)
    engine = PolicyEngine.from_yaml(POLICY, source="unit")
    async with SqliteStore(tmp_path / "t.db") as store:
        approvals = Approvals(
            store=store,
            groups=Groups({"security-approvers": ["spiffe://example.org/humans/approvers/*"]}),
            clock=clock,
            ttl=dt.timedelta(minutes=15),
        )
        tasks = TaskService(
            policy=StaticPolicy(engine),
            issuer=TokenIssuer(issuer="https://taskpass.test", keys=keys, clock=clock),
            verifier=TokenVerifier(issuer="https://taskpass.test", jwks=keys.jwks, clock=clock),
            store=store,
            clock=clock,
            approvals=approvals,
        )
        yield World(tasks, approvals, store, clock, engine)


async def pending_id(world: World, task: TaskDescriptor = WRITE) -> str:
    with pytest.raises(ApprovalRequired) as info:
        await world.tasks.exchange(workload(), task)
    return info.value.approval_id


async def task_claim(world: World, token: str) -> object:
    """The verified token's private `task` claim."""
    introspection = await world.tasks.introspect(token)
    assert introspection.active
    return introspection.claims["task"]


async def test_a_pending_exchange_names_its_approval_and_audits_both(world: World) -> None:
    approval_id = await pending_id(world)

    assert approval_id.startswith("apr_")
    records = await world.store.audit.read(limit=10)
    assert [r.kind for r in records] == ["approval_requested", "decision"]
    assert records[1].payload["approval_id"] == approval_id
    assert records[1].payload["outcome"] == "pending_approval"


async def test_after_approval_the_exchange_issues_a_credential_naming_approval_and_policy(
    world: World,
) -> None:
    approval_id = await pending_id(world)
    await world.approvals.approve(workload(ALICE), approval_id)

    done = await world.tasks.exchange(workload(), WRITE)

    assert done.approval_id == approval_id
    claim = await task_claim(world, done.credential.token)
    assert isinstance(claim, dict)
    assert claim["approval_id"] == approval_id
    assert claim["policy_version"] == world.engine.version
    stored = await world.store.credentials.get_credential(done.credential.jti)
    assert stored is not None
    assert stored.approval_id == approval_id
    issuance = (await world.store.audit.read(limit=20))[-1]
    assert issuance.kind == "issuance"
    assert issuance.payload["approval_id"] == approval_id
    assert issuance.payload["approved_by"] == ALICE
    assert issuance.payload["policy_version"] == world.engine.version
    assert issuance.payload["jti"] == done.credential.jti


async def test_an_approval_gives_one_credential_then_the_task_needs_a_new_one(
    world: World,
) -> None:
    approval_id = await pending_id(world)
    await world.approvals.approve(workload(ALICE), approval_id)
    await world.tasks.exchange(workload(), WRITE)

    assert await pending_id(world) != approval_id


async def test_an_approval_of_one_task_does_not_serve_another(world: World) -> None:
    approval_id = await pending_id(world)
    await world.approvals.approve(workload(ALICE), approval_id)

    other = await pending_id(world, dataclasses.replace(WRITE, task_id="t-2"))

    assert other != approval_id


WAIT = 10.0
"""A bound on what a test awaits, generous for a loaded CI machine; it passes in milliseconds."""


async def _until_waiting(world: World) -> None:
    """Until the exchange waits on its approval (so the approver's decision is not early)."""
    while world.approvals.signals.waiting == 0:
        await asyncio.sleep(0)


async def test_a_waiting_exchange_completes_when_the_approver_approves(world: World) -> None:
    exchange = asyncio.create_task(
        world.tasks.exchange(workload(), WRITE, wait_for_approval=dt.timedelta(minutes=5))
    )
    await asyncio.wait_for(_until_waiting(world), WAIT)
    [request] = await world.approvals.list_pending(workload(ALICE))

    await world.approvals.approve(workload(ALICE), request.approval_id)

    done = await asyncio.wait_for(exchange, WAIT)
    assert done.approval_id == request.approval_id


async def test_a_workload_may_have_only_so_many_exchanges_waiting_for_an_approver(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_WAITING_PER_WORKLOAD", 2)
    waiting = [
        asyncio.create_task(
            world.tasks.exchange(
                workload(),
                dataclasses.replace(WRITE, task_id=f"t-wait-{n}"),
                wait_for_approval=dt.timedelta(minutes=5),
            )
        )
        for n in range(2)
    ]
    while world.approvals.signals.waiting < 2:
        await asyncio.sleep(0)

    with pytest.raises(ResourceExhausted) as refused:
        third = world.tasks.exchange(
            workload(),
            dataclasses.replace(WRITE, task_id="t-wait-3"),
            wait_for_approval=dt.timedelta(minutes=5),
        )
        await asyncio.wait_for(third, WAIT)  # refused at once, or it would wait its 5 minutes
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)

    assert refused.value.message.startswith(
        f"{AGENT} already has 2 exchanges waiting for approval, the most it may have"
    )


async def test_a_waiting_exchange_ends_with_the_denial(world: World) -> None:
    exchange = asyncio.create_task(
        world.tasks.exchange(workload(), WRITE, wait_for_approval=dt.timedelta(minutes=5))
    )
    await asyncio.wait_for(_until_waiting(world), WAIT)
    [request] = await world.approvals.list_pending(workload(ALICE))

    await world.approvals.deny(workload(ALICE), request.approval_id, reason="change freeze")

    with pytest.raises(PermissionDenied, match="change freeze") as info:
        await asyncio.wait_for(exchange, WAIT)
    assert info.value.details["approval_id"] == request.approval_id


async def test_a_wait_that_runs_out_answers_approval_required_with_the_id(world: World) -> None:
    with pytest.raises(ApprovalRequired) as info:
        await world.tasks.exchange(
            workload(), WRITE, wait_for_approval=dt.timedelta(milliseconds=10)
        )
    assert info.value.approval_id.startswith("apr_")


async def test_a_task_id_used_for_another_task_is_refused_before_asking_anyone(
    world: World,
) -> None:
    read = dataclasses.replace(WRITE, action="read")
    await world.tasks.exchange(workload(), read)

    with pytest.raises(Conflict, match="different task"):
        await world.tasks.exchange(workload(), WRITE)
    assert await world.approvals.list_pending(workload(ALICE)) == []


async def test_waiting_longer_than_an_hour_is_refused(world: World) -> None:
    with pytest.raises(InvalidRequest, match="wait_for_approval_seconds"):
        await world.tasks.exchange(workload(), WRITE, wait_for_approval=dt.timedelta(hours=2))


# -- delegation: the approval of a delegated exchange is bound to its parent credential ----------

SUB_AGENT = "spiffe://example.org/agents/sub-bot"


async def approved_exchange(
    world: World, who: str = AGENT, *, subject_token: str = ""
) -> tuple[str, str]:
    """(approval id, token): ask, have alice approve, exchange again."""
    with pytest.raises(ApprovalRequired) as asked:
        await world.tasks.exchange(workload(who), WRITE, subject_token=subject_token)
    await world.approvals.approve(workload(ALICE), asked.value.approval_id)
    done = await world.tasks.exchange(workload(who), WRITE, subject_token=subject_token)
    assert done.approval_id == asked.value.approval_id
    return done.approval_id, done.credential.token


async def test_an_approval_under_one_parent_serves_neither_another_nor_none(
    world: World,
) -> None:
    _, parent_x = await approved_exchange(world)
    _, parent_y = await approved_exchange(world)  # the same task, a second credential
    with pytest.raises(ApprovalRequired) as under_x:
        await world.tasks.exchange(workload(SUB_AGENT), WRITE, subject_token=parent_x)
    approval_x = under_x.value.approval_id
    await world.approvals.approve(workload(ALICE), approval_x)

    with pytest.raises(ApprovalRequired) as under_y:
        await world.tasks.exchange(workload(SUB_AGENT), WRITE, subject_token=parent_y)
    with pytest.raises(ApprovalRequired) as without:
        await world.tasks.exchange(workload(SUB_AGENT), WRITE)

    # each asked an approver anew; the grant under X is still there, unused
    assert len({approval_x, under_y.value.approval_id, without.value.approval_id}) == 3
    stored = await world.store.approvals.get(approval_x)
    assert stored is not None and stored.state is ApprovalState.APPROVED
    child = await world.tasks.exchange(workload(SUB_AGENT), WRITE, subject_token=parent_x)
    assert child.approval_id == approval_x
    record = await world.store.credentials.get_credential(child.credential.jti)
    parent_x_jti = (await world.tasks.introspect(parent_x)).claims["jti"]
    assert record is not None and record.parent_jti == parent_x_jti
    consumed = [r for r in await world.store.audit.read(limit=100) if r.kind == "approval_consumed"]
    assert consumed[-1].payload["approval_id"] == approval_x
    assert consumed[-1].payload["parent_jti"] == parent_x_jti
