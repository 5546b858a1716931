"""The fan-out: catch-up (snapshot or replay), live events once and in order, heartbeats, and the
bounded queue that ends a slow subscriber cleanly without holding anyone up."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import StoreCorrupted, Unavailable
from taskpass.server.revocation.hub import (
    FELL_BEHIND,
    HEARTBEAT_SLOTS,
    LOG_UNAVAILABLE,
    STOPPING,
    UNREADABLE,
    EndOfStream,
    Heartbeat,
    HubSettings,
    RevocationHub,
    SnapshotChunk,
    StreamItem,
)
from taskpass.server.store.records import RevocationEvent, RevocationSnapshot
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.store.builders import T0, credential_revocation, entry, issue
from tests.unit.store.test_unreadable_rows import raw

from .conftest import FAST, WAIT, HubMaker, Stopwatch

Stream = AsyncIterator[StreamItem]
LONG = dt.timedelta(minutes=10)


async def commit(store: SqliteStore, jti: str, *, ttl: dt.timedelta = LONG) -> RevocationEvent:
    """Issue one credential living `ttl` and revoke it: one event in the log."""
    await issue(store, jti, task_id=f"task-{jti}", ttl=ttl)
    _, event = await store.credentials.revoke_credential(
        jti=jti,
        at=T0,
        reason="revoked",
        audit=entry("revoke"),
        event=credential_revocation(jti, expires_at=T0 + ttl),
    )
    assert event is not None
    return event


async def commit_many(store: SqliteStore, hub: RevocationHub, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await commit(store, f"jti-{n}")
        hub.notify()


async def next_item(stream: Stream) -> StreamItem:
    return await asyncio.wait_for(anext(stream), WAIT)


async def until_heartbeat(stream: Stream) -> tuple[list[StreamItem], Heartbeat]:
    """Everything before the next heartbeat, and the heartbeat."""
    before: list[StreamItem] = []
    while True:
        item = await next_item(stream)
        if isinstance(item, Heartbeat):
            return before, item
        before.append(item)


async def collect(stream: Stream, *, upto: int) -> list[StreamItem]:
    """Read (as a live subscriber does) until the event `upto` has arrived."""
    got: list[StreamItem] = []
    while not seqs(got) or seqs(got)[-1] < upto:
        got.append(await next_item(stream))
    return got


async def commit_in_step(
    store: SqliteStore, hub: RevocationHub, reader: Stream, count: int
) -> list[int]:
    """Commit `count` events into an empty log one at a time, `reader` reading each before the
    next: it keeps up however slow the machine is (were several commits read in one batch, a
    reader could overflow too). Returns the seqs it read."""
    read: list[int] = []
    for n in range(1, count + 1):
        await commit(store, f"jti-{n}")
        hub.notify()
        read += seqs(await collect(reader, upto=n))
    return read


def seqs(items: list[StreamItem]) -> list[int]:
    return [item.seq for item in items if isinstance(item, RevocationEvent)]


async def test_a_stream_without_a_cursor_starts_with_a_snapshot_of_what_is_in_force(
    store: SqliteStore, hub: RevocationHub, clock: FixedClock
) -> None:
    await commit(store, "short", ttl=dt.timedelta(minutes=1))
    for n in range(4):
        await commit(store, f"long-{n}")
    clock.advance(dt.timedelta(minutes=2))  # "short" no longer in force

    before, caught_up = await until_heartbeat(hub.watch(None))

    chunks = [item for item in before if isinstance(item, SnapshotChunk)]
    assert chunks == before  # a snapshot, no replayed events
    assert [len(c.events) for c in chunks] == [3, 1]  # snapshot_chunk=3
    assert [c.complete for c in chunks] == [False, True]
    assert [e.jti for c in chunks for e in c.events] == [f"long-{n}" for n in range(4)]
    assert {c.seq for c in chunks} == {5}
    assert caught_up.seq == 5


async def test_an_empty_log_gives_one_empty_complete_snapshot(hub: RevocationHub) -> None:
    before, caught_up = await until_heartbeat(hub.watch(None))
    assert before == [SnapshotChunk((), 0, True)]
    assert caught_up.seq == 0


async def test_a_cursor_replays_every_event_after_it_in_order(
    store: SqliteStore, hub: RevocationHub
) -> None:
    for n in range(5):
        await commit(store, f"jti-{n}")

    before, caught_up = await until_heartbeat(hub.watch(2))

    assert seqs(before) == [3, 4, 5]
    assert len(before) == 3
    assert caught_up.seq == 5


async def test_a_cursor_ahead_of_the_log_gets_a_snapshot_instead(
    store: SqliteStore, hub: RevocationHub
) -> None:
    await commit(store, "jti-0")
    before, caught_up = await until_heartbeat(hub.watch(99))
    assert isinstance(before[0], SnapshotChunk)
    assert before[0].seq == 1
    assert caught_up.seq == 1


async def test_live_events_reach_every_stream_once_and_in_order(
    store: SqliteStore, hub: RevocationHub
) -> None:
    streams = [hub.watch(None) for _ in range(3)]
    for stream in streams:
        await until_heartbeat(stream)

    await commit_many(store, hub, 5)

    for stream in streams:
        got = await collect(stream, upto=5)  # heartbeats may come between the commits
        assert seqs(got) == [1, 2, 3, 4, 5]
        _, beat = await until_heartbeat(stream)
        assert beat.seq == 5


class HookedLog:
    """The store's log, running `hook` once right after the first read_after: a commit landing
    between a stream's catch-up read and its subscription."""

    def __init__(self, store: SqliteStore, hook: Callable[[], object]) -> None:
        self._log = store.revocations
        self._hook = hook
        self.reads = 0
        self.fail_next = 0

    async def read_after(self, seq: int, *, limit: int) -> list[RevocationEvent]:
        if self.fail_next:
            self.fail_next -= 1
            raise Unavailable("store unavailable: injected")
        events = await self._log.read_after(seq, limit=limit)
        self.reads += 1
        if self.reads == 2:  # the first is the hub's start-up fan-out, the second the stream's
            await self._hook()  # type: ignore[misc]
        return events

    async def in_force(self, now: dt.datetime) -> RevocationSnapshot:
        return await self._log.in_force(now)

    async def current_seq(self) -> int:
        return await self._log.current_seq()


async def test_a_commit_during_catch_up_is_sent_once(store: SqliteStore, clock: FixedClock) -> None:
    await commit_many_plain(store, 2)
    hub: RevocationHub

    async def land_one() -> None:
        await commit(store, "during")
        hub.notify()

    log = HookedLog(store, land_one)
    hub = RevocationHub(log=log, clock=clock, settings=FAST)
    await hub.start()
    loop = asyncio.create_task(hub.run())
    try:
        await hub._fan_out()  # the hub's own read comes first
        stream = hub.watch(0)
        before, caught_up = await until_heartbeat(stream)
        after, _ = await until_heartbeat(stream)  # the hub's push of seq 3 is skipped
    finally:
        loop.cancel()
    assert seqs(before) == [1, 2, 3]
    assert caught_up.seq == 3
    assert seqs(after) == []


async def commit_many_plain(store: SqliteStore, count: int) -> None:
    for n in range(count):
        await commit(store, f"jti-{n}")


async def test_heartbeats_carry_the_current_seq(store: SqliteStore, hub: RevocationHub) -> None:
    stream = hub.watch(None)
    await until_heartbeat(stream)
    _, idle = await until_heartbeat(stream)  # periodic, nothing happened
    assert idle.seq == 0

    await commit_many(store, hub, 2)
    _, after = await until_heartbeat(stream)
    assert after.seq == 2 == await store.revocations.current_seq()


async def test_a_commit_without_notify_is_found_by_the_safety_poll(
    store: SqliteStore, hub: RevocationHub
) -> None:
    stream = hub.watch(None)
    await until_heartbeat(stream)
    await commit(store, "quiet")  # no hub.notify()
    got = await collect(stream, upto=1)  # within WAIT: the poll comes every 50 ms
    assert seqs(got) == [1]


async def test_a_subscriber_that_never_reads_ends_with_its_resume_seq_holding_up_nobody(
    store: SqliteStore, hub: RevocationHub
) -> None:
    stuck, reader = hub.watch(None), hub.watch(None)
    await until_heartbeat(stuck)
    await until_heartbeat(reader)

    last = FAST.queue_size + 4
    read = await commit_in_step(store, hub, reader, last)  # the revoker is never blocked
    assert read == list(range(1, last + 1))

    # the stuck one reads at last (however long that took: its grace never passes here, the
    # stopwatch stands still): what its queue held, then where to resume
    held: list[StreamItem] = []
    while not isinstance(held[-1:] and held[-1], EndOfStream):
        held.append(await next_item(stuck))
    end = held.pop()
    assert isinstance(end, EndOfStream)
    assert seqs(held) == list(range(1, FAST.queue_size + 1))
    assert end == EndOfStream(FAST.queue_size, FELL_BEHIND)
    with pytest.raises(StopAsyncIteration):
        await next_item(stuck)
    assert hub.subscribers == 1

    resumed, _ = await until_heartbeat(hub.watch(end.resume_after))
    assert seqs(resumed) == list(range(FAST.queue_size + 1, FAST.queue_size + 5))


async def test_a_stream_that_does_not_even_read_its_end_is_cut_after_the_grace(
    store: SqliteStore, hub: RevocationHub, stopwatch: Stopwatch
) -> None:
    blocked = asyncio.Event()

    async def consume() -> None:
        async for item in hub.watch(None):
            if isinstance(item, Heartbeat):
                blocked.set()
                await asyncio.Event().wait()  # a client that stopped reading

    consumer = asyncio.create_task(consume())
    witness = hub.watch(None)  # reads everything; its heartbeats show the hub's reap passes
    await until_heartbeat(witness)
    await asyncio.wait_for(blocked.wait(), WAIT)
    # seq queue_size + 1 reached the witness: it was offered to both, so the blocked one ended
    await commit_in_step(store, hub, witness, FAST.queue_size + 1)

    stopwatch.advance(FAST.stuck_grace - dt.timedelta(milliseconds=1))
    await until_heartbeat(witness)
    await until_heartbeat(witness)  # beaten (and reaped) after the advance
    assert not consumer.done()  # still within its grace

    stopwatch.advance(dt.timedelta(milliseconds=1))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(consumer, WAIT)
    assert hub.subscribers == 1  # the witness


async def test_stopping_the_hub_ends_every_stream_with_its_resume_seq(
    store: SqliteStore, make_hub: HubMaker
) -> None:
    hub = make_hub(running=False)
    loop = asyncio.create_task(hub.run())
    await hub.start()
    await commit_many(store, hub, 2)
    streams = [hub.watch(None) for _ in range(2)]
    for stream in streams:
        await until_heartbeat(stream)

    loop.cancel()
    for stream in streams:
        assert await next_item(stream) == EndOfStream(2, STOPPING)


async def test_a_failed_log_read_is_retried_at_the_next_poll(
    store: SqliteStore, clock: FixedClock
) -> None:
    async def nothing() -> None:
        return None

    log = HookedLog(store, nothing)
    hub = RevocationHub(log=log, clock=clock, settings=FAST)
    loop = asyncio.create_task(hub.run())
    try:
        await hub.start()
        stream = hub.watch(None)
        await until_heartbeat(stream)
        log.fail_next = 1
        await commit(store, "after-outage")
        hub.notify()
        got = await collect(stream, upto=1)  # heartbeats may come before the next poll
    finally:
        loop.cancel()
    assert seqs(got) == [1]


async def test_streams_end_with_their_resume_seq_when_the_log_stays_unreadable(
    store: SqliteStore, clock: FixedClock
) -> None:
    async def nothing() -> None:
        return None

    log = HookedLog(store, nothing)
    hub = RevocationHub(log=log, clock=clock, settings=FAST)  # heartbeat interval 50 ms
    loop = asyncio.create_task(hub.run())
    try:
        await hub.start()
        stream = hub.watch(None)
        await until_heartbeat(stream)
        log.fail_next = 10**6  # this replica lost its database; others commit meanwhile
        hub.notify()
        # Heartbeats alone would say "nothing after seq 0" for as long as the outage lasts.
        _, end = await asyncio.wait_for(until_end(stream), WAIT)
    finally:
        loop.cancel()
    assert end == EndOfStream(0, LOG_UNAVAILABLE)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"queue_size": 0}, id="empty-queue"),
        pytest.param({"snapshot_chunk": 0}, id="empty-chunk"),
        pytest.param({"heartbeat_interval": dt.timedelta(0)}, id="zero-heartbeat"),
        pytest.param({"poll_interval": dt.timedelta(seconds=-1)}, id="negative-poll"),
    ],
)
def test_settings_refuse_values_that_make_no_sense(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        dataclasses.replace(FAST, **change)  # type: ignore[arg-type]


def test_a_stream_from_a_hub_not_started_is_refused(store: SqliteStore, clock: FixedClock) -> None:
    hub = RevocationHub(log=store.revocations, clock=clock, settings=HubSettings())
    with pytest.raises(RuntimeError, match="not started"):
        _ = hub.last_seq


async def test_an_unreadable_event_ends_the_live_streams_instead_of_leaving_them_silent(
    store: SqliteStore, hub: RevocationHub, caplog: pytest.LogCaptureFixture
) -> None:
    stream = hub.watch(0)
    await until_heartbeat(stream)
    await commit_in_step(store, hub, stream, 1)
    await commit(store, "jti-2")
    with raw(store.path) as conn:  # someone edits event 2 beyond what taskpass can read
        conn.execute("UPDATE revocation_events SET at = 4611686018427387904 WHERE seq = 2")
    await commit(store, "jti-3")  # readable, and after the bad one

    with caplog.at_level(logging.ERROR, logger="taskpass.revocation"):
        hub.notify()
        _, end = await asyncio.wait_for(until_end(stream), WAIT)  # heartbeats alone: a failure

    assert end == EndOfStream(1, UNREADABLE)
    assert "revocation fan-out stopped, 1 streams ended" in caplog.text
    assert "revocation_events" in caplog.text
    with pytest.raises(StoreCorrupted, match="revocation_events"):  # a reconnect: DATA_LOSS
        await next_item(hub.watch(1))


async def until_end(stream: Stream) -> tuple[list[StreamItem], EndOfStream]:
    """Everything before the stream's end (heartbeats included), and the end."""
    before: list[StreamItem] = []
    while True:
        item = await next_item(stream)
        if isinstance(item, EndOfStream):
            return before, item
        before.append(item)


async def test_heartbeats_are_spread_over_the_interval_not_sent_to_every_stream_at_once(
    make_hub: HubMaker,
) -> None:
    # One stream per slot; a beat goes to one slot at a time, beat_every = interval / slots apart.
    interval = dt.timedelta(milliseconds=500)
    hub = make_hub(dataclasses.replace(FAST, heartbeat_interval=interval))
    await hub.start()
    streams = [hub.watch(None) for _ in range(HEARTBEAT_SLOTS)]
    for stream in streams:
        await until_heartbeat(stream)  # the one every stream gets once caught up
    loop = asyncio.get_running_loop()

    async def next_beat_at(stream: Stream) -> float:
        await until_heartbeat(stream)
        return loop.time()

    arrivals = await asyncio.gather(*(next_beat_at(s) for s in streams))

    # All at once, they would arrive within a few ms; spread, the first and the last periodic
    # beats are (slots - 1) beats apart: 450 ms (less however late the first one is read).
    assert max(arrivals) - min(arrivals) > interval.total_seconds() / 2.5
