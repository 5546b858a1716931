"""The fan-out benchmark's own parts: memory and CPU arithmetic, and the subscribers' bookkeeping
(readiness per stream, streams opened in waves, a stream that ends fails the run at once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench import revocation_fanout as fanout
from taskpass._proto.v1 import revocation_pb2 as pb

STATUS = "Name:\tpython\nVmPeak:\t  300000 kB\nVmRSS:\t   91416 kB\nRssAnon:\t   80000 kB\n"


def test_parse_vmrss_reads_the_resident_set_in_bytes() -> None:
    assert fanout.parse_vmrss(STATUS) == 91416 * 1024


def test_parse_vmrss_refuses_text_without_it() -> None:
    with pytest.raises(ValueError, match="no VmRSS"):
        fanout.parse_vmrss("Name:\tzombie\n")


def test_memory_summary_splits_streams_from_connections() -> None:
    memory = fanout.memory_summary(
        before=100_000_000, connected=100_640_000, after=130_640_000, count=1000, channels=20
    )

    assert memory["per_subscriber_bytes"] == 30_640
    assert memory["per_stream_bytes"] == 30_000
    assert memory["per_connection_bytes"] == 32_000


@pytest.mark.parametrize(
    ("client_s", "server_s", "bottleneck"),
    [
        pytest.param(1.0, 2.0, "server", id="server-spent-more"),
        pytest.param(2.0, 1.0, "client", id="client-spent-more"),
    ],
)
def test_cpu_summary_names_the_side_that_spent_more(
    client_s: float, server_s: float, bottleneck: str
) -> None:
    cpu = fanout.cpu_summary(client_s=client_s, server_s=server_s, rounds=10, deliveries=10_000)

    assert cpu["bottleneck"] == bottleneck
    assert cpu["server_ms_per_round"] == server_s * 100
    assert cpu["server_us_per_delivery"] == server_s * 100


def test_latency_summary_is_nearest_rank() -> None:
    summary = fanout.latency_summary([float(v) for v in range(100, 0, -1)])

    assert summary == {"p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}


@pytest.mark.parametrize(
    ("count", "rounds"),
    [
        pytest.param(100, 100, id="cheap-rounds-capped-at-100"),
        pytest.param(5_000, 40, id="5000"),
        pytest.param(50_000, 20, id="at-least-20"),
    ],
)
def test_default_rounds_shrink_as_rounds_get_dearer(count: int, rounds: int) -> None:
    assert fanout.default_rounds(count) == rounds


# -- Subscribers over fake streams --------------------------------------------------------


def _heartbeat(seq: int = 0) -> pb.WatchResponse:
    return pb.WatchResponse(heartbeat=pb.Heartbeat(seq=seq))


def _event(seq: int) -> pb.WatchResponse:
    return pb.WatchResponse(event=pb.RevocationEvent(seq=seq))


class FakeStub:
    """Watch streams whose items the test feeds: `feed(item)` reaches every open stream."""

    def __init__(self, first: list[pb.WatchResponse]) -> None:
        self.queues: list[asyncio.Queue[pb.WatchResponse | None]] = []
        self._first = first

    def Watch(self, request: pb.WatchRequest) -> AsyncIterator[pb.WatchResponse]:
        queue: asyncio.Queue[pb.WatchResponse | None] = asyncio.Queue()
        for item in self._first:
            queue.put_nowait(item)
        self.queues.append(queue)
        return self._stream(queue)

    async def _stream(
        self, queue: asyncio.Queue[pb.WatchResponse | None]
    ) -> AsyncIterator[pb.WatchResponse]:
        while (item := await queue.get()) is not None:
            yield item

    def feed(self, item: pb.WatchResponse | None, streams: slice = slice(None)) -> None:
        for queue in self.queues[streams]:
            queue.put_nowait(item)


async def _settle() -> None:
    """Let every task run until it waits on something the test has not fed yet."""
    for _ in range(10):
        await asyncio.sleep(0)


def _stubs(*stubs: FakeStub) -> Any:
    return list(stubs)  # duck-typed RevocationServiceStubs


async def test_connect_opens_streams_in_waves_each_caught_up_first() -> None:
    stub = FakeStub(first=[])
    subscribers = fanout.Subscribers()
    connecting = asyncio.create_task(subscribers.connect(_stubs(stub), 5, wave=2))
    try:
        await _settle()
        assert len(stub.queues) == 2  # the next wave waits for this one

        stub.feed(_heartbeat())
        await _settle()
        assert len(stub.queues) == 4

        stub.feed(_heartbeat(), slice(2, None))
        await _settle()
        assert len(stub.queues) == 5  # the last wave: the one stream left
        assert not connecting.done()

        stub.feed(_heartbeat(), slice(4, None))
        await asyncio.wait_for(connecting, 1)
    finally:
        await subscribers.close()


async def test_a_second_heartbeat_from_one_stream_does_not_make_another_ready() -> None:
    stub = FakeStub(first=[])
    subscribers = fanout.Subscribers()
    connecting = asyncio.create_task(subscribers.connect(_stubs(stub), 2, wave=2))
    try:
        await _settle()
        stub.feed(_heartbeat(), slice(0, 1))
        stub.feed(_heartbeat(), slice(0, 1))
        await _settle()
        assert not connecting.done()

        stub.feed(_heartbeat(), slice(1, 2))
        await asyncio.wait_for(connecting, 1)
    finally:
        connecting.cancel()
        await subscribers.close()


async def test_all_have_returns_once_every_stream_has_read_the_event() -> None:
    stub = FakeStub(first=[_heartbeat()])
    subscribers = fanout.Subscribers()
    try:
        await asyncio.wait_for(subscribers.connect(_stubs(stub), 3, wave=10), 1)
        stub.feed(_event(7), slice(0, 2))
        waiting = asyncio.create_task(subscribers.all_have(7))
        await _settle()
        assert not waiting.done()

        stub.feed(_event(7), slice(2, 3))
        arrivals = await asyncio.wait_for(waiting, 1)

        assert len(arrivals) == 3
    finally:
        await subscribers.close()


async def test_a_stream_the_server_ends_fails_the_round_at_once() -> None:
    stub = FakeStub(first=[_heartbeat()])
    subscribers = fanout.Subscribers()
    try:
        await asyncio.wait_for(subscribers.connect(_stubs(stub), 2, wave=10), 1)
        waiting = asyncio.create_task(subscribers.all_have(3))
        stub.feed(
            pb.WatchResponse(end=pb.EndOfStream(resume_after=2, reason="fell behind")), slice(0, 1)
        )

        with pytest.raises(fanout.StreamEnded, match="fell behind"):
            await asyncio.wait_for(waiting, 1)
    finally:
        await subscribers.close()


async def test_a_stream_that_ends_while_connecting_fails_connect() -> None:
    stub = FakeStub(first=[])
    subscribers = fanout.Subscribers()
    connecting = asyncio.create_task(subscribers.connect(_stubs(stub), 2, wave=2))
    try:
        await _settle()
        stub.feed(None, slice(0, 1))  # the stream closes without EndOfStream

        with pytest.raises(fanout.StreamEnded, match="without EndOfStream"):
            await asyncio.wait_for(connecting, 1)
    finally:
        await subscribers.close()
