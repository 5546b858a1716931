"""`PostgresStore.follow`: another replica's commits arrive saying what changed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from taskpass.server.store.base import StoreChange
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.postgres_listen import ReconnectBackoff
from tests.support.postgres import raw_connection

from .builders import T0, credential_revocation, entry, issue
from .test_keys import published
from .test_postgres_replicas import pending_approval

pytestmark = pytest.mark.postgres

WAIT_S = 10.0
"""Only turns a regression (a change that never arrives) into a failure; never waited out."""
NO_BACKOFF = ReconnectBackoff(initial=dt.timedelta(0), maximum=dt.timedelta(0))


@dataclass
class Following:
    writer: PostgresStore
    follower: PostgresStore
    changes: asyncio.Queue[StoreChange]


@contextlib.asynccontextmanager
async def following(dsn: str) -> AsyncIterator[Following]:
    """A writer replica and the changes a second replica hears, after its first connect."""
    channel = f"taskpass_test_{secrets.token_hex(6)}"
    async with (
        PostgresStore(dsn, events_channel=channel, pool_max_size=2) as writer,
        PostgresStore(dsn, events_channel=channel, listen_backoff=NO_BACKOFF) as follower,
    ):
        changes: asyncio.Queue[StoreChange] = asyncio.Queue()
        task = asyncio.create_task(follower.follow(changes.put_nowait))
        try:
            assert await next_change(changes) == StoreChange(everything=True)
            yield Following(writer, follower, changes)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def next_change(changes: asyncio.Queue[StoreChange]) -> StoreChange:
    async with asyncio.timeout(WAIT_S):
        return await changes.get()


async def test_a_follower_hears_which_approval_changed(pg_dsn: str) -> None:
    async with following(pg_dsn) as f:
        writer, changes = f.writer, f.changes
        await writer.approvals.create_or_reuse(pending_approval(), audit=entry(), now=T0)
        created = await next_change(changes)
        await writer.approvals.decide(
            "apr-1",
            approve=True,
            by="spiffe://example.org/humans/alice",
            at=T0,
            reason="ok",
            expires_at=T0 + dt.timedelta(minutes=5),
            audit=entry("approval_granted"),
        )
        decided = await next_change(changes)

    assert created == decided == StoreChange(approvals=frozenset({"apr-1"}))


async def test_a_follower_hears_revocation_events_and_key_publications(pg_dsn: str) -> None:
    async with following(pg_dsn) as f:
        writer, changes = f.writer, f.changes
        await issue(writer, "jti-1")
        await writer.credentials.revoke_credential(
            jti="jti-1",
            at=T0,
            reason="revoked",
            audit=entry("revoke"),
            event=credential_revocation("jti-1"),
        )
        revoked = await next_change(changes)
        await writer.keys.publish(published(), audit=entry("key_published"))
        keys = await next_change(changes)
        await writer.keys.publish(published(), audit=entry("key_published"))  # nothing new
        await writer.keys.publish(published(until=T0 + dt.timedelta(days=1)), audit=entry())
        extended = await next_change(changes)

    assert revoked == StoreChange(events=True)
    assert keys == extended == StoreChange(keys=True)


async def test_a_follower_whose_connection_drops_is_told_to_re_read_everything(
    pg_dsn: str,
) -> None:
    async with following(pg_dsn) as f, raw_connection(pg_dsn) as admin:
        (pid,) = f.follower.listener_pids
        await admin.execute("SELECT pg_terminate_backend($1)", pid)

        assert await next_change(f.changes) == StoreChange(everything=True)
        assert f.follower.listener_pids and f.follower.listener_pids != {pid}
