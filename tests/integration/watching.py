"""Helpers for the revocation tests: a watcher followed in the background, token claims."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from taskpass.client import TaskCredential, TaskpassClient
from taskpass.client.watcher import Revocation, RevocationWatcher
from tests.integration.harness import BILLING_BOT, ISSUER, SIDECAR, Harness

WAIT = 15.0
"""Seconds any single expected thing may take; the tests never sleep. Only a bound, never waited
out: the server, its clients and, for the CLI tests, a fresh `taskpass` process share a small and
possibly busy CI machine (the CLI alone took over 2 s under load)."""


class Follower:
    """Runs a watcher as a task and records what it yields."""

    def __init__(self, watcher: RevocationWatcher, client: TaskpassClient | None = None) -> None:
        self.watcher = watcher
        self._client = client
        self.got: list[Revocation] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        try:
            async for revocation in self.watcher:
                self.got.append(revocation)
                self._changed.set()
        except Exception as error:  # kept for the test to look at
            self.error = error
            self._changed.set()

    @property
    def seqs(self) -> list[int]:
        return [r.seq for r in self.got]

    async def ready(self) -> None:
        await asyncio.wait_for(self.watcher.wait_ready(), WAIT)

    async def until(self, done: Callable[[list[Revocation]], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not done(self.got):
                if self.error is not None:
                    raise self.error
                self._changed.clear()
                await self._changed.wait()

    async def has(self, count: int) -> None:
        await self.until(lambda got: len(got) >= count)

    async def finished(self) -> BaseException | None:
        """Wait for the watcher to stop by itself; its error (None if it ended cleanly)."""
        await asyncio.wait_for(asyncio.shield(self._task), WAIT)
        return self.error

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._client is not None:
            await self._client.aclose()


def watcher(client: TaskpassClient, **options: object) -> RevocationWatcher:
    return RevocationWatcher(client, issuer=ISSUER, **options)  # type: ignore[arg-type]


class Followers:
    """Makes followers, each on its own client, and stops them all at the end of the test."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness
        self._made: list[Follower] = []

    def start(self, spiffe_id: str = SIDECAR, **options: object) -> Follower:
        client = self._harness.agent(spiffe_id)
        follower = Follower(watcher(client, **options), client)
        self._made.append(follower)
        return follower

    async def ready(self, spiffe_id: str = SIDECAR, **options: object) -> Follower:
        """A follower that has caught up with the server."""
        follower = self.start(spiffe_id, **options)
        await follower.ready()
        return follower

    async def close(self) -> None:
        for follower in self._made:
            await follower.stop()


def claims(
    credential: TaskCredential, task_id: str, subject: str = BILLING_BOT
) -> dict[str, object]:
    """What a relying party holds after verifying the token."""
    return {
        "jti": credential.jti,
        "sub": subject,
        "txn": task_id,
        "iat": int(credential.issued_at.timestamp()),
    }
