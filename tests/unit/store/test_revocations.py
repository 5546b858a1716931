"""Revocation events: resume after a cursor, snapshot of what is in force (every backend)."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import InvalidRequest
from taskpass.server.store.base import Store

from .builders import AGENT, T0, credential_revocation, entry, issue, task_revocation


async def revoke(store: Store, jti: str, *, at: dt.datetime, ttl: dt.timedelta) -> int:
    """Issue and revoke one credential living `ttl`; returns the event's seq."""
    await issue(store, jti, task_id=f"task-{jti}", issued_at=at, ttl=ttl)
    _, event = await store.credentials.revoke_credential(
        jti=jti,
        at=at,
        reason="revoked",
        audit=entry("revoke", at=at),
        event=credential_revocation(jti, at=at),
    )
    assert event is not None
    return event.seq


async def test_current_seq_is_zero_with_no_events(store: Store) -> None:
    assert await store.revocations.current_seq() == 0


async def test_read_after_returns_the_events_after_the_cursor_in_order(store: Store) -> None:
    for n in range(5):
        await revoke(store, f"jti-{n}", at=T0, ttl=dt.timedelta(minutes=5))

    after_two = await store.revocations.read_after(2, limit=10)

    assert [e.seq for e in after_two] == [3, 4, 5]
    assert [e.jti for e in after_two] == ["jti-2", "jti-3", "jti-4"]
    assert [e.seq for e in await store.revocations.read_after(0, limit=2)] == [1, 2]
    assert await store.revocations.read_after(5, limit=10) == []
    assert await store.revocations.current_seq() == 5


@pytest.mark.parametrize(
    ("seq", "limit", "field"),
    [
        pytest.param(0, 0, "limit", id="zero-limit"),
        pytest.param(-3, 5, "seq", id="negative-seq"),
    ],
)
async def test_read_after_refuses_a_bad_page(
    store: Store, seq: int, limit: int, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.revocations.read_after(seq, limit=limit)
    assert caught.value.field == field


async def test_in_force_holds_only_events_not_yet_expired_as_the_clock_moves(
    store: Store,
) -> None:
    clock = FixedClock(T0)
    await revoke(store, "short", at=T0, ttl=dt.timedelta(minutes=1))
    await revoke(store, "long", at=T0, ttl=dt.timedelta(minutes=10))

    now = await store.revocations.in_force(clock.now())
    assert [e.jti for e in now.events] == ["short", "long"]

    clock.advance(dt.timedelta(minutes=1))  # "short" expires exactly now: no longer in force
    later = await store.revocations.in_force(clock.now())
    assert [e.jti for e in later.events] == ["long"]

    clock.advance(dt.timedelta(minutes=9))
    expired = await store.revocations.in_force(clock.now())
    assert expired.events == ()
    assert expired.seq == 2


async def test_in_force_snapshot_carries_the_current_seq_to_resume_from(store: Store) -> None:
    empty = await store.revocations.in_force(T0)
    assert (empty.events, empty.seq) == ((), 0)

    await issue(store, "jti-1")
    _, event = await store.credentials.complete_task(
        requester=AGENT,
        task_id="task-1",
        at=T0,
        audit=entry("task_completed"),
        event=task_revocation(at=T0),
    )

    snapshot = await store.revocations.in_force(T0)
    assert snapshot.events == (event,)
    assert snapshot.seq == 1
    assert await store.revocations.read_after(snapshot.seq, limit=10) == []
