"""EventListener on fake connections: reconnects, backoff, pings, stop and a failing callback.
(The same loop against the real server is in test_postgres_replicas.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from taskpass.server.store.postgres_listen import EventListener, ReconnectBackoff

CHANNEL = "taskpass_events"
NO_BACKOFF = ReconnectBackoff(initial=dt.timedelta(0), maximum=dt.timedelta(0))
WAIT_S = 10.0
"""Only turns a regression (a callback that never comes) into a failure; never waited out."""


class FakeConnection:
    """What EventListener uses of an asyncpg connection."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.closed = False
        self.ping_fails = False
        self.pings = 0
        self._listeners: dict[str, Callable[..., None]] = {}
        self._on_terminate: list[Callable[[Any], None]] = []

    def add_termination_listener(self, callback: Callable[[Any], None]) -> None:
        self._on_terminate.append(callback)

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None:
        self._listeners[channel] = callback

    def get_server_pid(self) -> int:
        return self.pid

    def is_closed(self) -> bool:
        return self.closed

    async def execute(self, sql: str, *, timeout: float) -> None:
        self.pings += 1
        if self.ping_fails:
            raise ConnectionResetError("silently dead")

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.closed = True

    # -- test controls -------------------------------------------------------------------------

    def notify(self, payload: str = "1") -> None:
        self._listeners[CHANNEL](self, 999, CHANNEL, payload)

    def drop(self) -> None:
        self.closed = True
        for callback in self._on_terminate:
            callback(self)


class FakeServer:
    """Hands out connections; `refuse` makes the next attempts fail as a down server would."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.refuse = 0
        self.attempts = 0

    async def connect(self) -> FakeConnection:
        self.attempts += 1
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError("server down")
        conn = FakeConnection(pid=100 + len(self.connections))
        self.connections.append(conn)
        return conn


@contextlib.asynccontextmanager
async def running(
    listener: EventListener, callback: Callable[[], None]
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(listener.run(callback))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_listener(
    server: FakeServer, *, ping: dt.timedelta = dt.timedelta(minutes=1)
) -> EventListener:
    return EventListener(server.connect, channel=CHANNEL, backoff=NO_BACKOFF, ping_interval=ping)


async def next_call(calls: asyncio.Queue[None]) -> None:
    async with asyncio.timeout(WAIT_S):
        await calls.get()


async def test_calls_back_once_on_connecting_and_once_per_notification() -> None:
    server = FakeServer()
    calls: asyncio.Queue[None] = asyncio.Queue()
    listener = make_listener(server)

    async with running(listener, lambda: calls.put_nowait(None)):
        await next_call(calls)
        assert listener.server_pid == 100
        server.connections[0].notify("7")
        server.connections[0].notify("8")

        await next_call(calls)
        await next_call(calls)
        assert calls.empty()


async def test_a_dropped_connection_is_remade_and_announced_once() -> None:
    server = FakeServer()
    calls: asyncio.Queue[None] = asyncio.Queue()
    listener = make_listener(server)

    async with running(listener, lambda: calls.put_nowait(None)):
        await next_call(calls)
        server.connections[0].drop()

        await next_call(calls)
        assert listener.server_pid == 101
        assert calls.empty()
        server.connections[1].notify()
        await next_call(calls)


async def test_connection_failures_are_retried_until_the_server_is_back() -> None:
    server = FakeServer()
    server.refuse = 3
    calls: asyncio.Queue[None] = asyncio.Queue()

    async with running(make_listener(server), lambda: calls.put_nowait(None)):
        await next_call(calls)

    assert server.attempts == 4
    assert len(server.connections) == 1


async def test_a_connection_that_stops_answering_pings_is_replaced() -> None:
    server = FakeServer()
    calls: asyncio.Queue[None] = asyncio.Queue()
    listener = make_listener(server, ping=dt.timedelta(milliseconds=1))

    async with running(listener, lambda: calls.put_nowait(None)):
        await next_call(calls)
        first = server.connections[0]
        first.ping_fails = True  # half-open TCP: no termination callback ever comes

        await next_call(calls)

    assert first.closed
    assert first.pings >= 1
    assert len(server.connections) >= 2


async def test_a_failing_callback_does_not_stop_the_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer()
    calls: asyncio.Queue[None] = asyncio.Queue()
    failures = iter([True, False])

    def callback() -> None:
        calls.put_nowait(None)
        if next(failures, False):
            raise RuntimeError("consumer bug")

    async with running(make_listener(server), callback):
        await next_call(calls)
        server.connections[0].notify()
        await next_call(calls)

    assert "callback failed" in caplog.text
    assert len(server.connections) == 1


async def test_stop_ends_the_loop_and_closes_the_connection() -> None:
    server = FakeServer()
    calls: asyncio.Queue[None] = asyncio.Queue()
    listener = make_listener(server)

    async with running(listener, lambda: calls.put_nowait(None)) as task:
        await next_call(calls)
        listener.stop()
        async with asyncio.timeout(WAIT_S):
            await task

    assert server.connections[0].closed
    assert listener.server_pid is None


async def test_stop_cuts_a_backoff_wait_short() -> None:
    server = FakeServer()
    server.refuse = 1
    listener = EventListener(
        server.connect,
        channel=CHANNEL,
        backoff=ReconnectBackoff(initial=dt.timedelta(hours=1), maximum=dt.timedelta(hours=1)),
        ping_interval=dt.timedelta(minutes=1),
    )

    async with running(listener, lambda: None) as task:
        while server.attempts == 0:
            await asyncio.sleep(0)  # yield until the first attempt has failed
        listener.stop()
        async with asyncio.timeout(WAIT_S):
            await task

    assert server.attempts == 1


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [
        pytest.param(0, 0.05, 0.1, id="first"),
        pytest.param(3, 0.4, 0.8, id="doubles"),
        pytest.param(10, 5.0, 10.0, id="capped"),
        pytest.param(10_000, 5.0, 10.0, id="no-overflow"),
    ],
)
def test_backoff_doubles_up_to_its_maximum_with_jitter(
    failures: int, low: float, high: float
) -> None:
    backoff = ReconnectBackoff(
        initial=dt.timedelta(milliseconds=100), maximum=dt.timedelta(seconds=10)
    )

    delays = [backoff.delay(failures) for _ in range(50)]

    assert all(low <= d <= high for d in delays)


def test_backoff_refuses_a_maximum_below_its_initial_wait() -> None:
    with pytest.raises(ValueError, match="initial <= maximum"):
        ReconnectBackoff(initial=dt.timedelta(seconds=2), maximum=dt.timedelta(seconds=1))
