"""Delegation in the store: a child is recorded only under a live parent, and every revocation
takes the live descendants with it, at any depth, in the same transaction (every backend)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from taskpass.server.errors import PermissionDenied
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import (
    BanRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
    RevocationKind,
)

from .builders import AGENT, T0, TTL, credential, credential_revocation, entry, issue, task

TOOLS = "spiffe://example.org/tools"
LATER = T0 + dt.timedelta(minutes=1)


def holder(depth: int) -> str:
    return f"{TOOLS}/hop-{depth}"


async def delegate(
    store: Store,
    jti: str,
    *,
    parent: str,
    requester: str,
    task_id: str = "task-1",
    ttl: dt.timedelta = TTL,
) -> CredentialRecord:
    """Record a delegated credential the way the exchange does."""
    record = dataclasses.replace(
        credential(jti, task_id=task_id, requester=requester, ttl=ttl), parent_jti=parent
    )
    await store.credentials.record_issuance(
        task=task(task_id, requester=requester, digest=f"digest-{requester}"),
        credential=record,
        audit=entry("issuance", jti=jti, parent_jti=parent),
    )
    return record


async def chain(store: Store, depth: int = 3) -> list[str]:
    """root (AGENT) -> d1 -> d2 -> ... each held by the next tool; returns the jtis, root first."""
    await issue(store, "root")
    jtis = ["root"]
    for n in range(1, depth + 1):
        await delegate(store, f"d{n}", parent=jtis[-1], requester=holder(n))
        jtis.append(f"d{n}")
    return jtis


def cascade_event(record: CredentialRecord) -> NewRevocation:
    return NewRevocation(
        kind=RevocationKind.CREDENTIAL,
        subject=record.requester,
        task_id=record.task_id,
        jti=record.jti,
        expires_at=record.expires_at,
        at=record.revoked_at or LATER,
        set_token=f"set-for-{record.jti}",
        reason=record.revoke_reason,
    )


async def events(store: Store) -> list[RevocationEvent]:
    return await store.revocations.read_after(0, limit=MAX_PAGE)


async def revoked_jtis(store: Store, jtis: list[str]) -> set[str]:
    found = set()
    for jti in jtis:
        record = await store.credentials.get_credential(jti)
        assert record is not None
        if record.revoked_at is not None:
            found.add(jti)
    return found


async def test_a_child_reads_back_with_its_parent(store: Store) -> None:
    await issue(store, "root")
    child = await delegate(store, "d1", parent="root", requester=holder(1))

    assert await store.credentials.get_credential("d1") == child
    assert child.parent_jti == "root"


@pytest.mark.parametrize(
    ("parent", "revoke_parent", "message"),
    [
        pytest.param("root", True, "parent credential is revoked", id="revoked-parent"),
        pytest.param("nobody", False, "parent credential is unknown", id="unknown-parent"),
    ],
)
async def test_a_child_of_a_revoked_or_unknown_parent_is_refused_and_writes_nothing(
    store: Store, parent: str, revoke_parent: bool, message: str
) -> None:
    await issue(store, "root")
    if revoke_parent:
        await store.credentials.revoke_credential(
            jti="root", at=T0, reason="leaked", audit=entry("revoke"), event=None
        )
    audit_before = len(await store.audit.read(limit=MAX_PAGE))

    with pytest.raises(PermissionDenied, match=message):
        await delegate(store, "d1", parent=parent, requester=holder(1))

    assert await store.credentials.get_credential("d1") is None
    assert await store.credentials.get_task(holder(1), "task-1") is None
    assert len(await store.audit.read(limit=MAX_PAGE)) == audit_before


async def test_revoking_the_root_revokes_every_descendant_three_levels_deep_with_an_event_each(
    store: Store,
) -> None:
    jtis = await chain(store, depth=3)
    await issue(store, "unrelated", task_id="task-2")

    revoked, event = await store.credentials.revoke_credential(
        jti="root",
        at=LATER,
        reason="leaked",
        audit=entry("revoke", at=LATER),
        event=credential_revocation("root", at=LATER),
        cascade=cascade_event,
    )

    assert revoked.jti == "root"
    assert await revoked_jtis(store, [*jtis, "unrelated"]) == set(jtis)
    d3 = await store.credentials.get_credential("d3")
    assert d3 is not None
    assert (d3.revoked_at, d3.revoke_reason) == (LATER, "delegation chain revoked: leaked")
    stored = await events(store)
    assert event is not None
    assert [e.jti for e in stored] == ["root", "d1", "d2", "d3"]
    assert [e.seq for e in stored] == [1, 2, 3, 4]
    assert all(e.kind is RevocationKind.CREDENTIAL for e in stored)
    [audit] = [r for r in await store.audit.read(limit=MAX_PAGE) if r.kind == "revoke"]
    assert audit.payload["cascade"] == [
        {"jti": "d1", "parent_jti": "root", "holder": holder(1)},
        {"jti": "d2", "parent_jti": "d1", "holder": holder(2)},
        {"jti": "d3", "parent_jti": "d2", "holder": holder(3)},
    ]


async def test_descendants_are_revoked_and_announced_parents_first(store: Store) -> None:
    """Issued in one second, their jtis sort the other way: the order is the tree's."""
    await issue(store, "root")
    for parent, jti, depth in (("root", "zz", 1), ("zz", "mm", 2), ("mm", "aa", 3)):
        await delegate(store, jti, parent=parent, requester=holder(depth))

    await store.credentials.revoke_credential(
        jti="root",
        at=LATER,
        reason="leaked",
        audit=entry("revoke"),
        event=None,
        cascade=cascade_event,
    )

    assert [e.jti for e in await events(store)] == ["zz", "mm", "aa"]


async def test_revoking_a_middle_link_revokes_below_it_and_leaves_the_ancestors(
    store: Store,
) -> None:
    jtis = await chain(store, depth=3)

    await store.credentials.revoke_credential(
        jti="d1", at=LATER, reason="tool compromised", audit=entry("revoke"), event=None
    )

    assert await revoked_jtis(store, jtis) == {"d1", "d2", "d3"}


async def test_completing_the_root_task_revokes_the_descendants_held_under_other_tasks(
    store: Store,
) -> None:
    jtis = await chain(store, depth=2)

    revoked, _ = await store.credentials.complete_task(
        requester=AGENT,
        task_id="task-1",
        at=LATER,
        audit=entry("task_completed", at=LATER),
        event=None,
        cascade=cascade_event,
    )

    assert [c.jti for c in revoked] == ["root", "d1", "d2"]
    assert await revoked_jtis(store, jtis) == set(jtis)
    assert [e.jti for e in await events(store)] == ["d1", "d2"]


async def test_completing_a_delegates_own_task_announces_its_delegated_credential_by_jti(
    store: Store,
) -> None:
    """Its `sub` is the principal, not the holder: a task event alone would not reach it."""
    jtis = await chain(store, depth=2)

    revoked, _ = await store.credentials.complete_task(
        requester=holder(1),
        task_id="task-1",
        at=LATER,
        audit=entry("task_completed", at=LATER),
        event=None,
        cascade=cascade_event,
    )

    assert [c.jti for c in revoked] == ["d1", "d2"]
    assert await revoked_jtis(store, jtis) == {"d1", "d2"}
    assert [e.jti for e in await events(store)] == ["d1", "d2"]


async def test_banning_a_delegate_revokes_what_it_holds_and_what_it_passed_on(
    store: Store,
) -> None:
    jtis = await chain(store, depth=3)
    ban = BanRecord(pattern=holder(2), banned_at=LATER, banned_by="admin", reason="rogue")

    revoked, event = await store.bans.ban(
        ban=ban, audit=entry("ban", at=LATER), event=None, cascade=cascade_event
    )

    assert [c.jti for c in revoked] == ["d2", "d3"]
    assert event is None
    assert await revoked_jtis(store, jtis) == {"d2", "d3"}
    assert [e.jti for e in await events(store)] == ["d2", "d3"]
    [audit] = [r for r in await store.audit.read(limit=MAX_PAGE) if r.kind == "ban"]
    assert audit.payload["cascade"] == [{"jti": "d3", "parent_jti": "d2", "holder": holder(3)}]


async def test_expired_descendants_are_left_as_they_are(store: Store) -> None:
    await issue(store, "root")
    await delegate(store, "short", parent="root", requester=holder(1), ttl=dt.timedelta(seconds=30))
    await delegate(store, "live", parent="root", requester=holder(2))

    await store.credentials.revoke_credential(
        jti="root", at=LATER, reason="leaked", audit=entry("revoke"), event=None
    )

    assert await revoked_jtis(store, ["root", "short", "live"]) == {"root", "live"}


async def test_without_a_cascade_event_descendants_are_still_revoked_silently(
    store: Store,
) -> None:
    jtis = await chain(store, depth=2)

    await store.credentials.revoke_credential(
        jti="root", at=LATER, reason="leaked", audit=entry("revoke"), event=None
    )

    assert await revoked_jtis(store, jtis) == set(jtis)
    assert await events(store) == []


async def test_a_revocation_without_delegation_writes_no_cascade_into_its_audit_record(
    store: Store,
) -> None:
    await issue(store, "root")

    await store.credentials.revoke_credential(
        jti="root", at=LATER, reason="leaked", audit=entry("revoke"), event=None
    )

    [audit] = [r for r in await store.audit.read(limit=MAX_PAGE) if r.kind == "revoke"]
    assert "cascade" not in audit.payload
