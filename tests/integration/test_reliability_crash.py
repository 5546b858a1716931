"""kill -9 under exchange load, then a restart on the same data directory (SQLite):
- every credential a client received is in the store (durable before the reply);
- the audit chain verifies (`taskpass audit verify`);
- a revocation watcher resumes from its cursor and ends with every event once, no gap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from taskpass.client import Task, TaskpassClient, Unavailable
from taskpass.client.watcher import Backoff, RevocationWatcher
from taskpass.server.cli.main import main
from tests.integration.harness import ADMIN, ISSUER, SIDECAR
from tests.integration.serving import ServedConfig, ServeProcess
from tests.support.pki import TestPki

WORKERS = 8
BEFORE_KILL = 150
AFTER_RESTART = 30
COMPLETE_EVERY = 4  # every 4th task is completed: a revocation event for the watcher
FAST_RESUME = Backoff(initial=dt.timedelta(milliseconds=50), maximum=dt.timedelta(seconds=0.25))


def read(task_id: str) -> Task:
    return Task(task_id=task_id, audience="payments-api", action="read")


def stored(database: Path) -> tuple[set[str], int]:
    """The jtis stored and the newest revocation event seq."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        jtis = {row[0] for row in db.execute("SELECT jti FROM credentials")}
        head = db.execute("SELECT coalesce(max(seq), 0) FROM revocation_events").fetchone()[0]
    return jtis, int(head)


class Load:
    """Workers exchanging (and now and then completing) tasks until stopped; a refused or
    broken call (the server is down) moves on to the next task."""

    def __init__(self, served: ServedConfig) -> None:
        self._served = served
        self.received: dict[str, str] = {}  # jti -> task id
        self.completed: list[str] = []
        self._target = 0
        self._reached = asyncio.Event()
        self._stopping = False
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(w)) for w in range(WORKERS)]

    async def until_received(self, more: int, timeout: float = 30.0) -> None:
        self._target = len(self.received) + more
        self._reached.clear()
        await asyncio.wait_for(self._reached.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._workers)

    async def _work(self, worker: int) -> None:
        async with self._served.agent() as client:
            n = 0
            while not self._stopping:
                n += 1
                task_id = f"w{worker}-{n}"
                try:
                    credential = await client.exchange(read(task_id))
                    self.received[credential.jti] = task_id
                    if n % COMPLETE_EVERY == 0:
                        await client.complete_task(task_id)
                        self.completed.append(task_id)
                except Unavailable:
                    await asyncio.sleep(0.02)  # the server is down: try again shortly
                if len(self.received) >= self._target:
                    self._reached.set()


async def test_kill_9_under_load_then_restart_loses_nothing_and_watchers_resume_without_gap(
    tmp_path: Path, pki: TestPki, capsys: pytest.CaptureFixture[str]
) -> None:
    served = ServedConfig.write(tmp_path, pki)
    server = ServeProcess(served)
    sidecar = TaskpassClient(served.channel(SIDECAR))
    watcher = RevocationWatcher(sidecar, since=0, issuer=ISSUER, backoff=FAST_RESUME)
    seen: list[int] = []
    tasks_seen: set[str | None] = set()

    async def follow() -> None:
        async for revocation in watcher:
            seen.append(revocation.seq)
            tasks_seen.add(revocation.task_id)

    load = Load(served)
    following: asyncio.Task[None] | None = None
    try:
        await server.start()
        following = asyncio.create_task(follow())
        load.start()
        await load.until_received(BEFORE_KILL)

        server.kill()  # SIGKILL mid-load: no shutdown code runs
        assert await server.wait() == -9
        await server.start()  # same data directory, same ports

        await load.until_received(AFTER_RESTART)
        await load.stop()
        async with served.agent() as client:  # one last event: the watcher must reach it
            await client.exchange(read("last"))
            await client.complete_task("last")
        async with asyncio.timeout(10):
            while "last" not in tasks_seen:
                await asyncio.sleep(0.02)

        verified = await asyncio.to_thread(main, ["audit", "verify", *served.cli_args(ADMIN)])
        assert verified == 0, capsys.readouterr()
        assert "audit log ok" in capsys.readouterr().out

        server.terminate()
        assert await server.wait() == 0
    finally:
        if following is not None:
            following.cancel()
        await sidecar.aclose()
        server.kill()

    jtis, head = stored(served.database)
    assert len(load.received) >= BEFORE_KILL + AFTER_RESTART
    assert set(load.received) <= jtis  # every credential a client received survived
    assert seen == list(range(1, head + 1))  # every event once, in order, across the crash
    assert set(load.completed) <= tasks_seen
    assert watcher.reconnects >= 1
