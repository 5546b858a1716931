"""What a write returned survives closing and reopening the store (every backend)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from taskpass.server.errors import Unavailable
from taskpass.server.store.audit_chain import verify_chain
from taskpass.server.store.base import MAX_PAGE

from .builders import AGENT, T0, entry, issue, task_revocation
from .conftest import StoreMaker


async def test_everything_is_there_after_close_and_reopen_and_the_chain_continues(
    make_store: StoreMaker,
) -> None:
    async with make_store() as store:
        first = await issue(store, "jti-1")
        await issue(store, "jti-2", task_id="task-2")
        revoked, event = await store.credentials.complete_task(
            requester=AGENT,
            task_id="task-2",
            at=T0,
            audit=entry("task_completed"),
            event=task_revocation("task-2", at=T0),
        )
        audit_before = await store.audit.read(limit=MAX_PAGE)

    async with make_store() as reopened:
        assert await reopened.credentials.get_credential("jti-1") == first
        assert await reopened.credentials.get_credential("jti-2") == revoked[0]
        task = await reopened.credentials.get_task(AGENT, "task-2")
        assert task is not None
        assert task.completed_at == T0
        assert await reopened.revocations.read_after(0, limit=10) == [event]
        assert await reopened.audit.read(limit=MAX_PAGE) == audit_before

        # The writer resumes the chain from the stored head: seq and prev_hash continue.
        appended = await reopened.audit.append(entry("decision", at=T0 + dt.timedelta(days=1)))
        _, second_event = await reopened.credentials.complete_task(
            requester=AGENT,
            task_id="task-1",
            at=T0,
            audit=entry("task_completed"),
            event=task_revocation("task-1", at=T0),
        )
        records = await reopened.audit.read(limit=MAX_PAGE)

    assert appended.seq == len(audit_before) + 1
    assert appended.prev_hash == audit_before[-1].hash
    assert second_event is not None
    assert event is not None
    assert second_event.seq == event.seq + 1
    assert verify_chain(records).ok


async def test_close_finishes_the_writes_already_queued(make_store: StoreMaker) -> None:
    store = make_store()
    await store.open()
    pending = [asyncio.create_task(store.audit.append(entry(n=n))) for n in range(20)]
    await asyncio.sleep(0)  # one loop turn: every task has queued its write (no waiting on time)

    await store.close()

    assert sorted(t.result().seq for t in pending) == list(range(1, 21))
    async with make_store() as reopened:
        assert len(await reopened.audit.read(limit=MAX_PAGE)) == 20


async def test_a_closed_store_refuses_reads_and_writes_as_unavailable(
    make_store: StoreMaker,
) -> None:
    store = make_store()
    await store.open()
    await store.close()

    with pytest.raises(Unavailable, match="closed"):
        await store.audit.append(entry())
    with pytest.raises(Unavailable, match="closed"):
        await store.credentials.get_credential("jti-1")
