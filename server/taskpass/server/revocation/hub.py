"""The revocation fan-out: one reader of the event log, many subscribers, nobody waits on anybody.

    committers --notify()--> reader task --read_after(last)--> offer() to every subscriber's
                                  ^                            bounded queue (never blocks)
                      safety poll |                                      |
                                                         each Watch stream drains its own queue

- The reader is woken by `notify()` (a local commit; later a PostgreSQL NOTIFY) and by a periodic
  safety poll, and re-reads the log from the last seq it fanned out: a lost wake-up costs at most
  one poll interval, never an event.
- `offer()` appends to a deque or, when the subscriber is `queue_size` events behind, ends that
  subscription: its stream sends what it holds, then EndOfStream with the seq to resume after.
  The revoker and the other subscribers never wait for it. One that does not even read that far
  is cancelled after `stuck_grace` (its client resumes from its own cursor).
- A stream first catches up from the log (snapshot or replay), subscribes, catches up once more
  (events committed meanwhile), then serves its queue, skipping seqs it already sent: every event
  after the cursor exactly once, in order, across reconnects and restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from taskpass.server.clock import Clock
from taskpass.server.errors import StoreCorrupted, TaskpassError
from taskpass.server.store.base import MAX_PAGE, RevocationLog
from taskpass.server.store.records import RevocationEvent

log = logging.getLogger("taskpass.revocation")


@dataclass(frozen=True, slots=True, kw_only=True)
class HubSettings:
    queue_size: int = 1024
    """Events a subscriber may fall behind before its stream is ended with a resume seq."""
    heartbeat_interval: dt.timedelta = dt.timedelta(seconds=5)
    """How often an idle stream gets a heartbeat carrying its seq."""
    poll_interval: dt.timedelta = dt.timedelta(seconds=1)
    """The safety re-read of the log when no notify() came (commits elsewhere, a lost wake-up)."""
    stuck_grace: dt.timedelta = dt.timedelta(seconds=30)
    """How long a stream ended for falling behind may take to read its end before it is cut."""
    snapshot_chunk: int = 500
    """Events per Snapshot message (keeps each message far below gRPC's 4 MiB default)."""

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.snapshot_chunk < 1:
            raise ValueError("queue_size and snapshot_chunk must be at least 1")
        positive = (self.heartbeat_interval, self.poll_interval, self.stuck_grace)
        if any(d <= dt.timedelta(0) for d in positive):
            raise ValueError("heartbeat_interval, poll_interval and stuck_grace must be positive")


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    events: tuple[RevocationEvent, ...]
    seq: int
    complete: bool


@dataclass(frozen=True, slots=True)
class Heartbeat:
    seq: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class EndOfStream:
    resume_after: int
    reason: str


StreamItem = SnapshotChunk | RevocationEvent | Heartbeat | EndOfStream

FELL_BEHIND = "the subscriber fell too far behind; resume after the given seq"
STOPPING = "the server is stopping; resume after the given seq"
HEARTBEAT_SLOTS = 10
"""Heartbeats go to one tenth of the streams at a time, ten times per interval (each stream
still gets one per interval). All at once, 10,000 streams took the event loop for about half a
second every interval, and a revocation committed then waited behind them."""

UNREADABLE = (
    "the revocation log holds a row the server cannot read (the database may have been edited); "
    "resume after the given seq once it is repaired"
)

LOG_UNAVAILABLE = (
    "the revocation log cannot be read from this server; resume after the given seq (another "
    "replica may answer)"
)


class Subscription:
    """One stream's bounded queue. The hub side (`offer`, `beat`, `end`) never blocks."""

    __slots__ = (
        "_capacity",
        "_items",
        "_loop",
        "_monotonic",
        "_signalled",
        "_waiter",
        "ended",
        "ended_at",
        "heartbeat_due",
        "heartbeat_slot",
        "owner",
    )

    def __init__(
        self, capacity: int, monotonic: Callable[[], float], *, heartbeat_slot: int = 0
    ) -> None:
        self._capacity = capacity
        self._monotonic = monotonic
        self._items: collections.deque[RevocationEvent] = collections.deque()
        # A flag and a bare future rather than an asyncio.Event: this runs once per subscriber
        # per event, and offer + wake-up + take cost 4.3 us in process with an Event (its loop
        # lookup and waiter set), 3.0 with this.
        self._loop = asyncio.get_running_loop()
        self._signalled = False
        self._waiter: asyncio.Future[None] | None = None
        self.ended: str | None = None
        self.ended_at: float | None = None
        self.heartbeat_due = False
        self.heartbeat_slot = heartbeat_slot
        """Which of the HEARTBEAT_SLOTS beats of an interval is this stream's."""
        self.owner: asyncio.Task[object] | None = asyncio.current_task()

    def offer(self, event: RevocationEvent) -> bool:
        """Queue `event`; False (and the subscription ends) when the queue is full."""
        if self.ended is not None:
            return False
        if len(self._items) >= self._capacity:
            self.end(FELL_BEHIND)
            return False
        self._items.append(event)
        self._wake()
        return True

    def beat(self) -> None:
        self.heartbeat_due = True
        self._wake()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.ended_at = self._monotonic()
            self._wake()

    def _wake(self) -> None:
        self._signalled = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._items)

    def take(self) -> list[RevocationEvent]:
        items = list(self._items)
        self._items.clear()
        return items

    async def wait(self) -> None:
        """Until offer, beat or end was called since the last wait returned."""
        if not self._signalled:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._signalled = False


class RevocationHub:
    def __init__(
        self,
        *,
        log: RevocationLog,
        clock: Clock,
        settings: HubSettings,
        observe_fan_out: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`observe_fan_out(seconds)`: from a notify() to the events it announced being queued
        to every subscriber (the fan-out latency metric). `monotonic`: the seconds `stuck_grace`
        is measured in (a test passes one it moves, so a busy machine cannot cut a stream early
        or late)."""
        self._log = log
        self._monotonic = monotonic
        self._clock = clock
        self._settings = settings
        self._observe = observe_fan_out
        self._notified_at: float | None = None
        self._closed: str | None = None
        self._wake = asyncio.Event()
        self._subscribers: set[Subscription] = set()
        self._ended: set[Subscription] = set()
        self._last: int | None = None
        self._next_slot = 0
        self._unreadable = False
        self._failing_since: float | None = None  # monotonic time of the first failed read
        """The last read of the log found a row it cannot read (StoreCorrupted)."""

    @property
    def settings(self) -> HubSettings:
        return self._settings

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def last_seq(self) -> int:
        """The newest seq fanned out."""
        if self._last is None:
            raise RuntimeError("the hub is not started: await start() first")
        return self._last

    async def start(self) -> None:
        """Begin after the log's current head: older events reach streams by catch-up reads."""
        if self._last is None:
            self._last = await self._log.current_seq()

    def notify(self) -> None:
        """Something was committed to the log: read it soon. Cheap, never blocks."""
        if self._notified_at is None:
            self._notified_at = time.perf_counter()
        self._wake.set()

    async def run(self) -> None:
        """The reader loop, for the server's lifetime; on exit every stream is ended cleanly."""
        await self.start()
        loop = asyncio.get_running_loop()
        beat_every = self._settings.heartbeat_interval.total_seconds() / HEARTBEAT_SLOTS
        poll = self._settings.poll_interval.total_seconds()
        next_read, next_beat, slot = loop.time() + poll, loop.time() + beat_every, 0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, min(next_read, next_beat) - loop.time())):
                        await self._wake.wait()
                # The log is read when woken or when the safety poll is due, not on the beats
                # in between (those come ten times per heartbeat interval).
                if self._wake.is_set() or loop.time() >= next_read:
                    self._wake.clear()  # before reading: a commit during the read wakes us again
                    notified, self._notified_at = self._notified_at, None
                    offered = await self._fan_out()
                    if offered and notified is not None and self._observe is not None:
                        self._observe(time.perf_counter() - notified)
                    next_read = loop.time() + poll
                if loop.time() >= next_beat:
                    next_beat = loop.time() + beat_every
                    self._beat_and_reap(slot, self._monotonic())
                    slot = (slot + 1) % HEARTBEAT_SLOTS
        finally:
            self.close(STOPPING)

    def close(self, reason: str) -> None:
        """End every stream: each sends what it holds, then EndOfStream. A stream that
        subscribes later (it was accepted just before) ends as soon as it has caught up."""
        self._closed = reason
        for sub in (*self._subscribers, *self._ended):
            sub.end(reason)

    async def _fan_out(self) -> int:
        """Offer every new event; returns how many there were."""
        offered = 0
        while True:
            try:
                events = await self._log.read_after(self.last_seq, limit=MAX_PAGE)
            except StoreCorrupted as error:
                # Retrying cannot help until someone repairs the row, and a stream that only
                # gets heartbeats meanwhile would look live while missing every revocation
                # after it: end the streams (their catch-up reads then answer DATA_LOSS).
                self._end_all(UNREADABLE, error)
                return offered
            except TaskpassError as error:
                log.warning("revocation log read failed, retrying at the next poll: %s", error)
                # Heartbeats would tell the streams all is well while they miss what others
                # commit: past one heartbeat interval, end them so subscribers resume elsewhere.
                now = self._monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                if now - self._failing_since >= self._settings.heartbeat_interval.total_seconds():
                    self._end_all(LOG_UNAVAILABLE, error)
                return offered
            self._unreadable = False
            self._failing_since = None
            for event in events:
                self._offer(event)
                self._last = event.seq
            offered += len(events)
            if len(events) < MAX_PAGE:
                return offered

    def _end_all(self, reason: str, error: TaskpassError) -> None:
        """End every live stream; said at ERROR when the log turns unreadable and whenever
        streams are ended for it (new ones subscribe only if their catch-up read passed)."""
        if self._subscribers or not self._unreadable:
            log.error(
                "revocation fan-out stopped, %d streams ended: %s",
                len(self._subscribers),
                error.message,
            )
        self._unreadable = True
        for sub in self._subscribers:
            sub.end(reason)
        self._ended.update(self._subscribers)
        self._subscribers.clear()

    def _offer(self, event: RevocationEvent) -> None:
        overflowed = [sub for sub in self._subscribers if not sub.offer(event)]
        for sub in overflowed:
            self._subscribers.discard(sub)
            self._ended.add(sub)
            log.info("revocation stream ended before seq %d: %s", event.seq, sub.ended)

    def _beat_and_reap(self, slot: int, now: float) -> None:
        for sub in self._subscribers:
            if sub.heartbeat_slot == slot:
                sub.beat()
        grace = self._settings.stuck_grace.total_seconds()
        for sub in list(self._ended):
            if sub.ended_at is not None and now - sub.ended_at >= grace:
                self._ended.discard(sub)
                if sub.owner is not None:
                    log.info("cutting a revocation stream that did not read its end")
                    sub.owner.cancel()

    # -- one subscriber's stream --------------------------------------------------------------

    async def watch(self, since: int | None) -> AsyncIterator[StreamItem]:
        """The items of one Watch stream: catch-up, then live events and heartbeats, until the
        subscription ends (EndOfStream) or the consumer stops iterating."""
        if self._last is None:
            raise RuntimeError("the hub is not started: await start() first")
        cursor = since
        if cursor is None or cursor > await self._log.current_seq():
            # No cursor, or one this log never reached (another database): start from what is
            # in force rather than skip the events numbered up to it.
            snapshot = await self._log.in_force(self._clock.now())
            for chunk in _chunks(snapshot.events, snapshot.seq, self._settings.snapshot_chunk):
                yield chunk
            cursor = snapshot.seq
        async for event in self._replay(cursor):
            yield event
            cursor = event.seq
        sub = Subscription(
            self._settings.queue_size, self._monotonic, heartbeat_slot=self._next_slot
        )
        self._next_slot = (self._next_slot + 1) % HEARTBEAT_SLOTS
        self._subscribers.add(sub)
        if self._closed is not None:
            sub.end(self._closed)
        try:
            async for event in self._replay(cursor):
                yield event
                cursor = event.seq
            yield Heartbeat(cursor, self._clock.now())  # caught up: live from here
            while True:
                for event in sub.take():
                    if event.seq <= cursor:
                        continue  # already sent by a catch-up read
                    if event.seq > cursor + 1:  # never expected: the queue skipped a seq
                        async for missed in self._replay(cursor, upto=event.seq - 1):
                            yield missed
                    yield event
                    cursor = event.seq
                if sub.ended is not None:
                    if sub.pending:
                        continue  # queued while the last ones were sent
                    yield EndOfStream(cursor, sub.ended)
                    return
                if sub.heartbeat_due:
                    sub.heartbeat_due = False
                    yield Heartbeat(cursor, self._clock.now())
                await sub.wait()
        finally:
            self._subscribers.discard(sub)
            self._ended.discard(sub)

    async def _replay(
        self, after: int, *, upto: int | None = None
    ) -> AsyncIterator[RevocationEvent]:
        while True:
            events = await self._log.read_after(after, limit=MAX_PAGE)
            for event in events:
                if upto is not None and event.seq > upto:
                    return
                yield event
                after = event.seq
            if len(events) < MAX_PAGE:
                return


def _chunks(events: tuple[RevocationEvent, ...], seq: int, size: int) -> list[SnapshotChunk]:
    if not events:
        return [SnapshotChunk((), seq, True)]
    starts = range(0, len(events), size)
    return [
        SnapshotChunk(events[i : i + size], seq, complete=i + size >= len(events)) for i in starts
    ]
