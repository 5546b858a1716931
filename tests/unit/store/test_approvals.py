"""The approvals aggregate (every backend): one request per task, decided once, used once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from taskpass.server.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from taskpass.server.store import postgres_codec, postgres_schema, sqlite_codec, sqlite_schema
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import ApprovalRecord, ApprovalState
from taskpass.server.store.sqlite import SqliteStore
from tests.support.postgres import raw_connection

from .builders import AGENT, OTHER_AGENT, T0, entry
from .conftest import StoreMaker

TTL = dt.timedelta(minutes=15)
APPROVER = "spiffe://example.org/humans/approvers/alice"


def pending(
    approval_id: str = "apr-1",
    *,
    requester: str = AGENT,
    digest: str = "digest-1",
    created_at: dt.datetime = T0,
    parent_jti: str | None = None,
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
        parent_jti=parent_jti,
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
    parent_jti: str | None = None,
    at: dt.datetime = T0,
) -> ApprovalRecord:
    return await store.approvals.consume(
        approval_id,
        requester=requester,
        digest=digest,
        parent_jti=parent_jti,
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


# -- delegation: a grant is bound to the parent credential it was asked under --------------------

PARENT_X = "jti-parent-x"
PARENT_Y = "jti-parent-y"


async def test_a_delegated_request_reads_back_with_its_parent(store: Store) -> None:
    approval = await create(store, pending(parent_jti=PARENT_X))

    stored = await store.approvals.get("apr-1")

    assert stored == approval
    assert stored is not None and stored.parent_jti == PARENT_X
    [listed] = await store.approvals.list_pending(T0, limit=10)
    assert listed.parent_jti == PARENT_X


@pytest.mark.parametrize(
    ("first", "again"),
    [
        pytest.param(PARENT_X, PARENT_Y, id="x-then-y"),
        pytest.param(PARENT_X, None, id="x-then-no-parent"),
        pytest.param(None, PARENT_X, id="no-parent-then-x"),
    ],
)
async def test_a_live_request_is_not_found_under_another_parent(
    store: Store, first: str | None, again: str | None
) -> None:
    await create(store, pending(parent_jti=first))
    await approve(store)

    stored, created = await store.approvals.create_or_reuse(
        pending("apr-2", parent_jti=again), audit=entry("approval_requested"), now=T0
    )

    assert created
    assert (stored.approval_id, stored.state, stored.parent_jti) == (
        "apr-2",
        ApprovalState.PENDING,
        again,
    )


@pytest.mark.parametrize("parent", [PARENT_X, None], ids=["x", "no-parent"])
async def test_a_live_request_is_found_again_under_the_same_parent(
    store: Store, parent: str | None
) -> None:
    first = await create(store, pending(parent_jti=parent))

    again, created = await store.approvals.create_or_reuse(
        pending("apr-2", parent_jti=parent), audit=entry("approval_requested"), now=T0
    )

    assert (again, created) == (first, False)


async def test_a_denial_under_one_parent_is_final_for_the_task_under_any(store: Store) -> None:
    await create(store, pending(parent_jti=PARENT_X))
    await store.approvals.decide(
        "apr-1",
        approve=False,
        by=APPROVER,
        at=T0,
        reason="not this runner",
        expires_at=T0 + TTL,
        audit=entry("approval_denied"),
    )

    for parent in (PARENT_Y, None):
        stored, created = await store.approvals.create_or_reuse(
            pending("apr-2", parent_jti=parent), audit=entry("approval_requested"), now=T0
        )
        assert not created
        assert (stored.approval_id, stored.state) == ("apr-1", ApprovalState.DENIED)


@pytest.mark.parametrize(
    ("granted", "presented", "message"),
    [
        pytest.param(
            PARENT_X,
            PARENT_Y,
            "approval apr-1 does not cover this request: it was granted under another parent "
            "credential; ask for a new approval",
            id="x-used-under-y",
        ),
        pytest.param(
            PARENT_X,
            None,
            "approval apr-1 does not cover this request: it was granted for a delegation under "
            "a parent credential, not without one; ask for a new approval",
            id="x-used-without-parent",
        ),
        pytest.param(
            None,
            PARENT_X,
            "approval apr-1 does not cover this request: it was granted for an exchange without "
            "a parent credential, not a delegation; ask for a new approval",
            id="no-parent-used-under-x",
        ),
    ],
)
async def test_a_grant_is_bound_to_its_parent_credential(
    store: Store, granted: str | None, presented: str | None, message: str
) -> None:
    await create(store, pending(parent_jti=granted))
    await approve(store)
    audit_before = len(await store.audit.read(limit=10))

    with pytest.raises(PermissionDenied) as refused:
        await consume(store, parent_jti=presented)

    assert refused.value.message == message
    assert (await store.approvals.get("apr-1")).state is ApprovalState.APPROVED  # type: ignore[union-attr]
    assert len(await store.audit.read(limit=10)) == audit_before
    used = await consume(store, parent_jti=granted)  # still there for the parent it names
    assert (used.state, used.parent_jti) == (ApprovalState.CONSUMED, granted)


async def test_list_pending_skips_decided_and_expired_oldest_first(store: Store) -> None:
    for n in range(4):
        await create(
            store,
            pending(f"apr-{n}", digest=f"d-{n}", created_at=T0 + dt.timedelta(minutes=n)),
        )
    await approve(store, "apr-2")

    listed = await store.approvals.list_pending(T0 + TTL + dt.timedelta(seconds=30), limit=10)

    assert [a.approval_id for a in listed] == ["apr-1", "apr-3"]


async def test_list_pending_pages_after_a_cursor_ties_in_id_order(store: Store) -> None:
    same_time = ["apr-b", "apr-a", "apr-c"]
    for n, approval_id in enumerate(same_time):
        await create(store, pending(approval_id, digest=f"d-{n}"))
    await create(store, pending("apr-0", digest="d-9", created_at=T0 + dt.timedelta(minutes=1)))

    first = await store.approvals.list_pending(T0, limit=2)
    rest = await store.approvals.list_pending(
        T0, limit=10, after=(first[-1].created_at, first[-1].approval_id)
    )

    assert [a.approval_id for a in first] == ["apr-a", "apr-b"]
    assert [a.approval_id for a in rest] == ["apr-c", "apr-0"]


async def test_a_requester_at_its_pending_limit_gets_no_new_request_but_finds_its_own(
    store: Store,
) -> None:
    for n in range(3):
        await create(store, pending(f"apr-{n}", digest=f"d-{n}"))
    fourth = pending("apr-3", digest="d-3")

    with pytest.raises(ResourceExhausted) as refused:
        await store.approvals.create_or_reuse(fourth, audit=entry(), now=T0, max_pending=3)
    again, created = await store.approvals.create_or_reuse(
        pending("apr-x", digest="d-1"), audit=entry(), now=T0, max_pending=3
    )
    other, other_created = await store.approvals.create_or_reuse(
        pending("apr-o", requester=OTHER_AGENT, digest="d-1"), audit=entry(), now=T0, max_pending=3
    )

    assert refused.value.message == (
        f"{AGENT} has 3 approval requests pending, the most it may have: wait for approvers "
        "to decide them or for them to expire"
    )
    assert (again.approval_id, created) == ("apr-1", False)  # the one asked before
    assert (other.approval_id, other_created) == ("apr-o", True)  # another requester's own
    assert await store.approvals.get("apr-3") is None


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


# -- migration 6: requests stored before parents were recorded -----------------------------------

BEFORE_PARENTS = 5
"""The last schema version without approvals.parent_jti."""
_SQLITE_INSERT_BEFORE_PARENTS = """
    INSERT INTO approvals (approval_id, requester, requester_method, cert_thumbprint, task_id,
        digest, descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules,
        approver_groups, policy_version, decision_id, state, created_at, expires_at, decided_by,
        decided_at, reason, consumed_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_PG_INSERT_BEFORE_PARENTS = """
    INSERT INTO approvals (approval_id, requester, requester_method, cert_thumbprint, task_id,
        digest, descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules,
        approver_groups, policy_version, decision_id, state, created_at, expires_at, decided_by,
        decided_at, reason, consumed_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
        $19, $20, $21, $22, $23)"""


async def _store_before_parents(dsn: str, approval: ApprovalRecord) -> None:
    """The database as a taskpass of schema version 5 left it, holding `approval`."""
    if dsn.startswith("sqlite:///"):
        conn = sqlite_schema.connect(Path(dsn.removeprefix("sqlite:///")))
        try:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at)")
            for migration in sqlite_schema.MIGRATIONS[:BEFORE_PARENTS]:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (?, 'then')", (migration.version,))
            row = sqlite_codec.codec.approval_to_row(approval)[:23]
            conn.execute(_SQLITE_INSERT_BEFORE_PARENTS, row)
        finally:
            conn.close()
        return
    async with raw_connection(dsn) as pg:
        await pg.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for pg_migration in postgres_schema.MIGRATIONS[:BEFORE_PARENTS]:
            for statement in pg_migration.statements:
                await pg.execute(statement)
            await pg.execute(
                "INSERT INTO schema_version (version) VALUES ($1)", pg_migration.version
            )
        row = postgres_codec.codec.approval_to_row(approval)[:23]
        await pg.execute(_PG_INSERT_BEFORE_PARENTS, *row)


async def test_a_request_stored_before_parents_were_recorded_has_none_after_the_migration(
    dsn: str, make_store: StoreMaker
) -> None:
    old = pending()
    await _store_before_parents(dsn, old)

    async with make_store() as store:  # opening migrates
        read_back = await store.approvals.get("apr-1")
        reused, created = await store.approvals.create_or_reuse(
            pending("apr-2"), audit=entry("approval_requested"), now=T0
        )
        delegated, delegated_created = await store.approvals.create_or_reuse(
            pending("apr-3", parent_jti=PARENT_X), audit=entry("approval_requested"), now=T0
        )

    assert read_back == old
    assert read_back is not None and read_back.parent_jti is None
    assert (reused.approval_id, created) == ("apr-1", False)  # still the exchange without one
    assert (delegated.approval_id, delegated_created) == ("apr-3", True)
