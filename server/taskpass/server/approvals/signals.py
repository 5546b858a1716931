"""Wake-ups when an approval changes: waiting exchanges and live watchers.

A signal carries only an approval id; whoever wakes re-reads the approval from the store, which
stays the one source of truth. That is what lets another source raise the same signal: a
PostgreSQL replica's LISTEN callback calls `notify(approval_id)` for a change committed on
another replica, and the exchange waiting here completes just as for a local decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Final

RESYNC: Final = ""
"""Yielded by a subscription whose queue overflowed: changes were dropped, re-read everything."""

DEFAULT_QUEUE = 256


class Subscription:
    """The approval ids changed since subscribing, in order, through a bounded queue.

    A watcher that falls behind never slows down the deciders: on overflow its queue is cleared
    and it receives RESYNC once, telling it to re-read the pending list.
    """

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=size)

    def _put(self, approval_id: str) -> None:
        try:
            self._queue.put_nowait(approval_id)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._ids()

    async def _ids(self) -> AsyncIterator[str]:
        while True:
            yield await self._queue.get()


class ApprovalSignals:
    def __init__(self, *, queue_size: int = DEFAULT_QUEUE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue_size = queue_size
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._subscriptions: set[Subscription] = set()

    def notify(self, approval_id: str) -> None:
        """Approval `approval_id` changed (created, decided, used): wake who cares."""
        for event in self._waiters.get(approval_id, ()):
            event.set()
        for subscription in self._subscriptions:
            subscription._put(approval_id)

    def notify_all(self) -> None:
        """Any approval may have changed (another replica's changes went unannounced while the
        notification connection was down): every waiter re-reads, every watcher resyncs."""
        for events in self._waiters.values():
            for event in events:
                event.set()
        for subscription in self._subscriptions:
            subscription._put(RESYNC)

    @contextlib.contextmanager
    def waiter(self, approval_id: str) -> Iterator[asyncio.Event]:
        """An event set on every change of `approval_id` while the block runs. Register before
        reading the approval, so a change between the read and the wait is not missed."""
        event = asyncio.Event()
        self._waiters.setdefault(approval_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters[approval_id]
            events.discard(event)
            if not events:
                del self._waiters[approval_id]

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        subscription = Subscription(self._queue_size)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    @property
    def waiting(self) -> int:
        """How many waiters are registered (for tests and metrics)."""
        return sum(len(events) for events in self._waiters.values())
