"""LISTEN on a dedicated connection, surviving its loss.

A notification only says "something committed": the consumer re-reads the table. So the one
thing to get right is never to miss a change, which is why the callback is also called every
time the LISTEN is (re)established: whatever committed while nobody was listening is then read
too. Notifications that arrive twice or for nothing cost one cheap read.

A dropped connection is seen at once (asyncpg's termination callback); a silently dead one
(half-open TCP) by a periodic ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from taskpass.server.store.postgres_errors import DRIVER_ERRORS

log = logging.getLogger("taskpass.store")

_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectBackoff:
    """How long to wait before re-establishing a lost LISTEN connection."""

    initial: dt.timedelta = dt.timedelta(milliseconds=100)
    """The wait after the first failure; it doubles after each further failure."""
    maximum: dt.timedelta = dt.timedelta(seconds=10)
    """The longest wait between two attempts, however long the server stays away."""

    def __post_init__(self) -> None:
        if self.initial < dt.timedelta(0) or self.maximum < self.initial:
            raise ValueError("backoff needs 0 <= initial <= maximum")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` failed attempts in a row, with jitter so that
        replicas that lost the server together do not come back in lockstep."""
        ceiling = min(self.maximum, self.initial * (1 << min(failures, 30)))
        return ceiling.total_seconds() * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


Callback = Callable[[], None]
PayloadCallback = Callable[[str | None], None]
"""Called with each notification's payload, and with None when the LISTEN is (re)established."""


class EventListener:
    """One LISTEN loop: `run(callback)` until `stop()` is called or the task is cancelled."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        channel: str,
        backoff: ReconnectBackoff,
        ping_interval: dt.timedelta,
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._backoff = backoff
        self._ping_s = ping_interval.total_seconds()
        self._wake = asyncio.Event()
        self._stopping = False
        self._pid: int | None = None

    @property
    def server_pid(self) -> int | None:
        """The PostgreSQL backend pid of the LISTEN connection while it is up (diagnostics)."""
        return self._pid

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, callback: Callback) -> None:
        await self.run_with_payloads(lambda _payload: callback())

    async def run_with_payloads(self, callback: PayloadCallback) -> None:
        """As run, passing each notification's payload (None on (re)connecting)."""
        failures = 0
        while not self._stopping:
            conn: Any = None
            try:
                self._wake.clear()
                conn = await self._connect()
                conn.add_termination_listener(lambda _conn: self._wake.set())
                await conn.add_listener(
                    self._channel, lambda _conn, _pid, _channel, payload: _call(callback, payload)
                )
                self._pid = conn.get_server_pid()
                failures = 0
                _call(callback, None)  # catch up on whatever committed while nobody listened
                await self._watch(conn)
            except DRIVER_ERRORS as exc:
                log.warning(
                    "taskpass: the PostgreSQL LISTEN connection failed; reconnecting",
                    exc_info=exc,
                )
            finally:
                self._pid = None
                if conn is not None:
                    await _close(conn)
            if self._stopping:
                return
            delay = self._backoff.delay(failures)
            failures += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)  # stop() cuts it short

    async def _watch(self, conn: Any) -> None:
        """Return when the connection is lost or stop() is called; raise if a ping fails."""
        while not self._stopping and not conn.is_closed():
            try:
                await asyncio.wait_for(self._wake.wait(), self._ping_s)
            except TimeoutError:
                await conn.execute("SELECT 1", timeout=self._ping_s)
                continue
            return


def _call(callback: PayloadCallback, payload: str | None) -> None:
    try:
        callback(payload)
    except Exception:
        # The consumer's bug must not stop the notifications every replica relies on.
        log.exception("taskpass: a store event callback failed")


async def _close(conn: Any) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), _CLOSE_TIMEOUT_S)
    except Exception:  # a dying connection: drop it without the goodbye
        conn.terminate()
