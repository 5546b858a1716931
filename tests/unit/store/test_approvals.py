"""The approvals aggregate (every backend): one request per task, decided once, used once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from taskpass.server.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import ApprovalRecord, ApprovalState
from taskpass.server.store.sqlite import SqliteStore

from .builders import AGENT, OTHER_AGENT, T0, entry

TTL = dt.timedelta(minutes=15)
APPROVER = "spiffe://example.org/humans/approvers/alice"


def pending(
    approval_id: str = "apr-1",
    *,
    requester: str = AGENT,
    digest: str = "digest-1",
    created_at: dt.datetime = T0,
) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=approval_id,
        requester=requester,
        requester_method="x509-svid",
        cert_thumbprint="thumb",
        task_id="task-1",
        digest=digest,
        descriptor={"task_id": "task-1", "audience": "payments-api", "action": "write"},
        audience="payments-api",
        action="write",
        sensitivity="internal",
        scopes=("payments:write",),
        ttl_seconds=300,
        rules=("approval.payments.write",),
        approver_groups=("security-approvers",),
        policy_version="sha256:policy",
        decision_id="dec_1",
        state=ApprovalState.PENDING,
        created_at=created_at,
        expires_at=created_at + TTL,
    )


async def create(store: Store, approval: ApprovalRecord, now: dt.datetime = T0) -> ApprovalRecord:
    stored, created = await store.approvals.create_or_reuse(
        approval, audit=entry("approval_requested", approval_id=approval.approval_id), now=now
    )
    assert created
    return stored


async def approve(
    store: Store, approval_id: str = "apr-1", *, at: dt.datetime = T0
) -> ApprovalRecord:
    return await store.approvals.decide(
        approval_id,
        approve=True,
        by=APPROVER,
        at=at,
        reason="ok",
        expires_at=at + TTL,
        audit=entry("approval_granted", approval_id=approval_id),
    )


async def consume(
    store: Store,
    approval_id: str = "apr-1",
    *,
    requester: str = AGENT,
    digest: str = "digest-1",
    at: dt.datetime = T0,
) -> ApprovalRecord:
    return await store.approvals.consume(
        approval_id,
        requester=requester,
        digest=digest,
        at=at,
        audit=entry("approval_consumed", approval_id=approval_id),
    )


async def test_a_created_approval_reads_back_equal_with_its_audit_record(store: Store) -> None:
    approval = await create(store, pending())

    assert await store.approvals.get("apr-1") == approval
    assert await store.approvals.latest_for(AGENT, "digest-1") == approval
    [record] = await store.audit.read(limit=10)
    assert (record.kind, record.payload) == ("approval_requested", {"approval_id": "apr-1"})


async def test_a_second_request_for_the_same_task_reuses_the_live_one(store: Store) -> None:
    first = await create(store, pending())

    again, created = await store.approvals.create_or_reuse(
        pending("apr-2"), audit=entry("approval_requested"), now=T0 + dt.timedelta(minutes=1)
    )

    assert (again, created) == (first, False)
    assert await store.approvals.get("apr-2") is None
    assert len(await store.audit.read(limit=10)) == 1


@pytest.mark.parametrize(
    ("other", "now"),
    [
        pytest.param(pending("apr-2", requester=OTHER_AGENT), T0, id="other-requester"),
        pytest.param(pending("apr-2", digest="digest-2"), T0, id="other-task"),
        pytest.param(pending("apr-2", created_at=T0 + TTL), T0 + TTL, id="first-expired"),
    ],
)
async def test_a_request_is_new_for_another_requester_task_or_after_expiry(
    store: Store, other: ApprovalRecord, now: dt.datetime
) -> None:
    await create(store, pending())

    stored, created = await store.approvals.create_or_reuse(
        other, audit=entry("approval_requested"), now=now
    )

    assert created
    assert stored == other


async def test_a_denial_is_final_for_that_task(store: Store) -> None:
    await create(store, pending())
    await store.approvals.decide(
        "apr-1",
        approve=False,
        by=APPROVER,
        at=T0,
        reason="not today",
        expires_at=T0 + TTL,
        audit=entry("approval_denied"),
    )

    stored, created = await store.approvals.create_or_reuse(
        pending("apr-2"), audit=entry("approval_requested"), now=T0 + 2 * TTL
    )

    assert not created
    assert (stored.approval_id, stored.state, stored.reason) == ("apr-1", "denied", "not today")


async def test_approving_records_who_when_and_a_new_grant_expiry(store: Store) -> None:
    await create(store, pending())
    later = T0 + dt.timedelta(minutes=10)

    approved = await approve(store, at=later)

    assert approved.state is ApprovalState.APPROVED
    assert (approved.decided_by, approved.decided_at) == (APPROVER, later)
    assert approved.expires_at == later + TTL
    assert await store.approvals.get("apr-1") == approved
    assert [r.kind for r in await store.audit.read(limit=10)] == [
        "approval_requested",
        "approval_granted",
    ]


@pytest.mark.parametrize(
    ("prepare", "at", "phrase"),
    [
        pytest.param("approve", T0, "was already approved", id="already-approved"),
        pytest.param("deny", T0, "was denied", id="already-denied"),
        pytest.param("", T0 + TTL, "has expired", id="expired"),
    ],
)
async def test_only_a_pending_unexpired_request_can_be_decided(
    store: Store, prepare: str, at: dt.datetime, phrase: str
) -> None:
    await create(store, pending())
    if prepare:
        await store.approvals.decide(
            "apr-1",
            approve=prepare == "approve",
            by=APPROVER,
            at=T0,
            reason="",
            expires_at=T0 + dt.timedelta(minutes=1),
            audit=entry("decided"),
        )
    audit_before = len(await store.audit.read(limit=10))

    with pytest.raises(Conflict, match=phrase):
        await approve(store, at=at)
    assert len(await store.audit.read(limit=10)) == audit_before


async def test_deciding_an_unknown_approval_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await approve(store, "apr-nope")


async def test_two_racing_approvers_one_wins(store: Store) -> None:
    await create(store, pending())

    results = await asyncio.gather(approve(store), approve(store), return_exceptions=True)

    assert sorted(type(r).__name__ for r in results) == ["ApprovalRecord", "Conflict"]


async def test_an_approved_grant_is_used_once(store: Store) -> None:
    await create(store, pending())
    await approve(store)

    used = await consume(store, at=T0 + dt.timedelta(minutes=1))

    assert used.state is ApprovalState.CONSUMED
    assert used.consumed_at == T0 + dt.timedelta(minutes=1)
    with pytest.raises(Conflict, match="single use"):
        await consume(store)


async def test_two_racing_exchanges_one_gets_the_grant(store: Store) -> None:
    await create(store, pending())
    await approve(store)

    results = await asyncio.gather(*(consume(store) for _ in range(5)), return_exceptions=True)

    assert sum(isinstance(r, ApprovalRecord) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "phrase"),
    [
        pytest.param({"requester": OTHER_AGENT}, PermissionDenied, "another requester", id="who"),
        pytest.param({"digest": "digest-2"}, PermissionDenied, "another task", id="task"),
        pytest.param({"at": T0 + TTL}, Conflict, "has expired", id="expired"),
    ],
)
async def test_a_grant_is_bound_to_requester_task_and_time(
    store: Store, kwargs: dict[str, object], error: type[Exception], phrase: str
) -> None:
    await create(store, pending())
    await approve(store)

    with pytest.raises(error, match=phrase):
        await consume(store, **kwargs)  # type: ignore[arg-type]
    assert (await store.approvals.get("apr-1")).state is ApprovalState.APPROVED  # type: ignore[union-attr]


async def test_a_pending_request_cannot_be_used(store: Store) -> None:
    await create(store, pending())

    with pytest.raises(Conflict, match="still pending"):
        await consume(store)


async def test_list_pending_skips_decided_and_expired_oldest_first(store: Store) -> None:
    for n in range(4):
        await create(
            store,
            pending(f"apr-{n}", digest=f"d-{n}", created_at=T0 + dt.timedelta(minutes=n)),
        )
    await approve(store, "apr-2")

    listed = await store.approvals.list_pending(T0 + TTL + dt.timedelta(seconds=30), limit=10)

    assert [a.approval_id for a in listed] == ["apr-1", "apr-3"]


@pytest.mark.parametrize("limit", [0, MAX_PAGE + 1], ids=["zero", "over-max"])
async def test_list_pending_refuses_a_bad_limit(store: Store, limit: int) -> None:
    with pytest.raises(InvalidRequest):
        await store.approvals.list_pending(T0, limit=limit)


def test_effective_state_reports_expiry_without_a_write() -> None:
    approval = pending()
    consumed = dataclasses.replace(approval, state=ApprovalState.CONSUMED)

    assert approval.effective_state(T0) is ApprovalState.PENDING
    assert approval.effective_state(T0 + TTL) is ApprovalState.EXPIRED
    assert consumed.effective_state(T0 + TTL) is ApprovalState.CONSUMED


async def test_sqlite_refuses_moving_a_decision_back_or_deleting_it(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "t.db") as store:
        await create(store, pending())
        await approve(store)
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="forward only"):
            conn.execute("UPDATE approvals SET state = 'pending'")
        with pytest.raises(sqlite3.IntegrityError, match="kept for the audit trail"):
            conn.execute("DELETE FROM approvals")
    finally:
        conn.close()
