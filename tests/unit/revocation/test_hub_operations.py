"""What operations need of the hub: a fan-out latency observation per notified commit, and a
close that also ends streams subscribing after it (graceful shutdown)."""

from __future__ import annotations

import asyncio
import time

from taskpass.server.clock import FixedClock
from taskpass.server.revocation.hub import STOPPING, EndOfStream, Heartbeat, RevocationHub
from taskpass.server.store.sqlite import SqliteStore

from .conftest import FAST, WAIT
from .test_hub import commit, next_item, until_heartbeat


async def test_a_notified_commit_is_observed_once_as_fan_out_latency(
    store: SqliteStore, clock: FixedClock
) -> None:
    observed: list[float] = []
    seen = asyncio.Event()

    def observe(seconds: float) -> None:
        observed.append(seconds)
        seen.set()

    hub = RevocationHub(log=store.revocations, clock=clock, settings=FAST, observe_fan_out=observe)
    await hub.start()
    loop = asyncio.create_task(hub.run())
    try:
        stream = hub.watch(None)
        await until_heartbeat(stream)
        await commit(store, "jti-1")
        notified = time.perf_counter()
        hub.notify()
        hub.notify()  # a second wake-up for the same commit measures from the first
        got = await next_item(stream)
        assert getattr(got, "seq", None) == 1
        await asyncio.wait_for(seen.wait(), WAIT)
        span = time.perf_counter() - notified
        await until_heartbeat(stream)  # the hub has looped on: no second observation
    finally:
        loop.cancel()
    assert len(observed) == 1
    assert 0 <= observed[0] <= span  # within what the test saw, however slow the machine was


async def test_a_wake_up_with_nothing_new_is_not_observed(
    store: SqliteStore, clock: FixedClock
) -> None:
    observed: list[float] = []
    hub = RevocationHub(
        log=store.revocations, clock=clock, settings=FAST, observe_fan_out=observed.append
    )
    await hub.start()
    loop = asyncio.create_task(hub.run())
    try:
        stream = hub.watch(None)
        await until_heartbeat(stream)
        hub.notify()
        await until_heartbeat(stream)  # the hub has looped past the wake-up
        await until_heartbeat(stream)
    finally:
        loop.cancel()
    assert observed == []


async def test_a_stream_subscribing_after_close_ends_with_its_resume_point(
    store: SqliteStore, clock: FixedClock
) -> None:
    await commit(store, "jti-1")
    hub = RevocationHub(log=store.revocations, clock=clock, settings=FAST)
    await hub.start()
    hub.close(STOPPING)

    async def read_all() -> list[object]:
        return [item async for item in hub.watch(0)]

    items = await asyncio.wait_for(read_all(), WAIT)

    assert [getattr(i, "seq", None) for i in items[:1]] == [1]
    assert isinstance(items[1], Heartbeat)
    assert items[-1] == EndOfStream(resume_after=1, reason=STOPPING)
