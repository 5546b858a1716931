"""Credentials and tasks: issuance, conflicts, completion and revocation (every backend)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from taskpass.server.errors import Conflict, NotFound
from taskpass.server.store.audit_chain import verify_chain
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.records import RevocationKind

from .builders import (
    AGENT,
    OTHER_AGENT,
    T0,
    TTL,
    credential,
    credential_revocation,
    entry,
    issue,
    task,
    task_revocation,
)

LATER = T0 + dt.timedelta(minutes=1)


async def audit_count(store: Store) -> int:
    return len(await store.audit.read(limit=MAX_PAGE))


async def test_recorded_issuance_reads_back_equal_with_its_audit_record(store: Store) -> None:
    record = await issue(store, "jti-1")

    assert await store.credentials.get_credential("jti-1") == record
    assert await store.credentials.get_task(AGENT, "task-1") == task()
    [audit] = await store.audit.read(limit=10)
    assert (audit.seq, audit.kind, audit.actor) == (1, "issuance", AGENT)
    assert audit.payload == {"jti": "jti-1", "task_id": "task-1"}


async def test_unknown_credential_and_task_read_as_none(store: Store) -> None:
    assert await store.credentials.get_credential("nope") is None
    assert await store.credentials.get_task(AGENT, "nope") is None


async def test_same_task_with_same_digest_accepts_another_credential(store: Store) -> None:
    await issue(store, "jti-1")
    await issue(store, "jti-2")

    assert await store.credentials.get_credential("jti-2") is not None
    assert await audit_count(store) == 2


async def test_task_id_reused_for_a_different_task_is_a_conflict_and_writes_nothing(
    store: Store,
) -> None:
    await issue(store, "jti-1", digest="digest-1")

    with pytest.raises(Conflict, match="task_id already used for a different task"):
        await issue(store, "jti-2", digest="digest-2")

    assert await store.credentials.get_credential("jti-2") is None
    assert await audit_count(store) == 1


async def test_same_task_id_of_different_requesters_are_different_tasks(store: Store) -> None:
    await issue(store, "jti-1", requester=AGENT, digest="digest-1")
    await issue(store, "jti-2", requester=OTHER_AGENT, digest="digest-2")

    other = await store.credentials.get_task(OTHER_AGENT, "task-1")
    assert other is not None
    assert other.digest == "digest-2"


async def test_duplicate_jti_is_a_conflict(store: Store) -> None:
    await issue(store, "jti-1")

    with pytest.raises(Conflict, match="jti already recorded"):
        await issue(store, "jti-1", task_id="task-2")

    assert await store.credentials.get_task(AGENT, "task-2") is None
    assert await audit_count(store) == 1


async def test_credential_of_another_task_is_refused_before_any_write(store: Store) -> None:
    with pytest.raises(ValueError, match="does not belong to the task"):
        await store.credentials.record_issuance(
            task=task("task-1"), credential=credential("jti-1", task_id="task-2"), audit=entry()
        )


async def test_completed_task_refuses_new_credentials(store: Store) -> None:
    await issue(store, "jti-1")
    await store.credentials.complete_task(
        requester=AGENT, task_id="task-1", at=LATER, audit=entry("task_completed"), event=None
    )

    with pytest.raises(Conflict, match="task already completed"):
        await issue(store, "jti-2")

    assert await store.credentials.get_credential("jti-2") is None


async def test_complete_task_revokes_every_live_credential_with_one_event_and_one_audit_record(
    store: Store,
) -> None:
    for jti in ("jti-1", "jti-2", "jti-3"):
        await issue(store, jti)
    await issue(store, "jti-other", task_id="task-2")
    audit_before = await audit_count(store)

    revoked, event = await store.credentials.complete_task(
        requester=AGENT,
        task_id="task-1",
        at=LATER,
        reason="task completed",
        audit=entry("task_completed", at=LATER),
        event=task_revocation(at=LATER),
    )

    assert [c.jti for c in revoked] == ["jti-1", "jti-2", "jti-3"]
    for jti in ("jti-1", "jti-2", "jti-3"):
        stored = await store.credentials.get_credential(jti)
        assert stored is not None
        assert (stored.revoked_at, stored.revoke_reason) == (LATER, "task completed")
        assert stored in revoked
    other = await store.credentials.get_credential("jti-other")
    assert other is not None
    assert other.revoked_at is None
    done = await store.credentials.get_task(AGENT, "task-1")
    assert done is not None
    assert done.completed_at == LATER
    assert event is not None
    assert (event.seq, event.kind, event.task_id) == (1, RevocationKind.TASK, "task-1")
    assert await store.revocations.read_after(0, limit=10) == [event]
    assert await audit_count(store) == audit_before + 1


async def test_complete_task_leaves_already_revoked_credentials_as_they_were(
    store: Store,
) -> None:
    await issue(store, "jti-1")
    await issue(store, "jti-2")
    await store.credentials.revoke_credential(
        jti="jti-1", at=T0, reason="admin", audit=entry("revoke"), event=None
    )

    revoked, _ = await store.credentials.complete_task(
        requester=AGENT, task_id="task-1", at=LATER, audit=entry("task_completed"), event=None
    )

    assert [c.jti for c in revoked] == ["jti-2"]
    first = await store.credentials.get_credential("jti-1")
    assert first is not None
    assert (first.revoked_at, first.revoke_reason) == (T0, "admin")


async def test_complete_task_event_stays_in_force_until_the_last_revoked_credential_expires(
    store: Store,
) -> None:
    await issue(store, "short", ttl=dt.timedelta(minutes=1))
    await issue(store, "long", ttl=dt.timedelta(minutes=30))

    _, event = await store.credentials.complete_task(
        requester=AGENT,
        task_id="task-1",
        at=LATER,
        audit=entry("task_completed"),
        event=task_revocation(at=LATER, expires_at=T0 + dt.timedelta(minutes=5)),
    )

    assert event is not None
    assert event.expires_at == T0 + dt.timedelta(minutes=30)


async def test_complete_task_without_event_appends_no_event(store: Store) -> None:
    await issue(store, "jti-1")

    _, event = await store.credentials.complete_task(
        requester=AGENT, task_id="task-1", at=LATER, audit=entry("task_completed"), event=None
    )

    assert event is None
    assert await store.revocations.current_seq() == 0


@pytest.mark.parametrize(
    ("task_id", "complete_first", "error", "message"),
    [
        pytest.param("unknown", False, NotFound, "no task 'unknown'", id="unknown-task"),
        pytest.param("task-1", True, Conflict, "task already completed", id="completed-twice"),
    ],
)
async def test_complete_task_refusal_writes_nothing(
    store: Store, task_id: str, complete_first: bool, error: type[Exception], message: str
) -> None:
    await issue(store, "jti-1")
    if complete_first:
        await store.credentials.complete_task(
            requester=AGENT, task_id="task-1", at=LATER, audit=entry("done"), event=None
        )
    audit_before = await audit_count(store)

    with pytest.raises(error, match=message):
        await store.credentials.complete_task(
            requester=AGENT,
            task_id=task_id,
            at=LATER,
            audit=entry("done"),
            event=task_revocation(task_id, at=LATER),
        )

    assert await audit_count(store) == audit_before
    assert await store.revocations.current_seq() == 0


async def test_revoke_credential_marks_it_with_its_event_and_audit_record(store: Store) -> None:
    record = await issue(store, "jti-1")

    revoked, event = await store.credentials.revoke_credential(
        jti="jti-1",
        at=LATER,
        reason="revoked by admin",
        audit=entry("revoke", at=LATER),
        event=credential_revocation("jti-1", at=LATER),
    )

    expected = dataclasses.replace(record, revoked_at=LATER, revoke_reason="revoked by admin")
    assert revoked == expected
    assert await store.credentials.get_credential("jti-1") == expected
    assert event is not None
    assert (event.seq, event.jti, event.expires_at) == (1, "jti-1", T0 + TTL)
    assert [r.kind for r in await store.audit.read(limit=10)] == ["issuance", "revoke"]


@pytest.mark.parametrize(
    ("jti", "error", "message"),
    [
        pytest.param("unknown", NotFound, "no credential with jti 'unknown'", id="unknown-jti"),
        pytest.param("jti-1", Conflict, "already revoked", id="revoked-twice"),
    ],
)
async def test_revoke_credential_refusal_writes_nothing(
    store: Store, jti: str, error: type[Exception], message: str
) -> None:
    await issue(store, "jti-1")
    await store.credentials.revoke_credential(
        jti="jti-1", at=T0, reason="first", audit=entry("revoke"), event=None
    )
    audit_before = await audit_count(store)

    with pytest.raises(error, match=message):
        await store.credentials.revoke_credential(
            jti=jti,
            at=LATER,
            reason="second",
            audit=entry("revoke"),
            event=credential_revocation(jti, at=LATER),
        )

    assert await audit_count(store) == audit_before
    assert await store.revocations.current_seq() == 0
    stored = await store.credentials.get_credential("jti-1")
    assert stored is not None
    assert stored.revoke_reason == "first"


@pytest.mark.parametrize(
    ("bad_jti", "bad_task_id", "bad_digest", "message"),
    [
        pytest.param("jti-new", "task-07", "other", "different task", id="task-digest-conflict"),
        pytest.param("jti-07", "task-new", "digest-1", "jti already recorded", id="duplicate-jti"),
    ],
)
async def test_a_failing_operation_in_a_batch_does_not_fail_the_others(
    store: Store, bad_jti: str, bad_task_id: str, bad_digest: str, message: str
) -> None:
    await issue(store, "jti-07", task_id="task-07")  # the task (and jti) the fault collides with
    good = [f"jti-{n:02}" for n in range(10, 59)]

    results = await asyncio.gather(
        *(issue(store, jti, task_id=f"task-{jti}") for jti in good[:25]),
        issue(store, bad_jti, task_id=bad_task_id, digest=bad_digest),
        *(issue(store, jti, task_id=f"task-{jti}") for jti in good[25:]),
        return_exceptions=True,
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], Conflict)
    assert message in str(failures[0])
    for jti in good:
        assert await store.credentials.get_credential(jti) is not None
    assert await store.credentials.get_credential("jti-new") is None
    assert await store.credentials.get_task(AGENT, "task-new") is None
    records = await store.audit.read(limit=MAX_PAGE)
    assert [r.seq for r in records] == list(range(1, 1 + 1 + len(good)))
    assert verify_chain(records).ok
