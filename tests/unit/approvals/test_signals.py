"""Signals: ids only, waiters keyed by approval, bounded watcher queues that resync."""

from __future__ import annotations

import asyncio

import pytest

from taskpass.server.approvals.signals import RESYNC, ApprovalSignals


async def test_notify_wakes_only_the_waiters_of_that_approval() -> None:
    signals = ApprovalSignals()
    with signals.waiter("apr-1") as one, signals.waiter("apr-2") as two:
        signals.notify("apr-1")
        assert one.is_set()
        assert not two.is_set()
    assert signals.waiting == 0


async def test_a_subscription_sees_every_change_in_order() -> None:
    signals = ApprovalSignals()
    with signals.subscribe() as changes:
        for n in range(3):
            signals.notify(f"apr-{n}")
        ids = changes.__aiter__()
        seen = [await anext(ids) for _ in range(3)]
    assert seen == ["apr-0", "apr-1", "apr-2"]


async def test_a_slow_subscriber_is_told_to_resync_instead_of_slowing_anyone() -> None:
    signals = ApprovalSignals(queue_size=2)
    with signals.subscribe() as slow, signals.subscribe() as fast:
        fast_ids = fast.__aiter__()
        for n in range(5):
            signals.notify(f"apr-{n}")
            assert await anext(fast_ids) == f"apr-{n}"
        slow_ids = slow.__aiter__()
        first = await anext(slow_ids)
        signals.notify("apr-5")
        after = await anext(slow_ids)
    assert first == RESYNC
    assert after == "apr-5"


async def test_a_closed_subscription_gets_nothing_more() -> None:
    signals = ApprovalSignals()
    with signals.subscribe() as changes:
        pass
    signals.notify("apr-1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(changes.__aiter__()), 0.01)


def test_a_queue_must_hold_something() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        ApprovalSignals(queue_size=0)
