"""[store] notify_channel: deployments sharing one database wake each other only on one channel.

Two taskpass deployments in different schemas of one database, each on its own channel, must not
wake each other's replicas; on the same channel they do (channels are database-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest

from taskpass.server.store.base import StoreChange
from taskpass.server.store.factory import open_store
from taskpass.server.store.postgres import PostgresStore
from tests.support.postgres import fresh_schema

from .builders import T0, credential_revocation, entry, issue
from .test_keys import published

pytestmark = pytest.mark.postgres

WAIT_S = 10.0
"""Only turns a regression (a change that never arrives) into a failure; never waited out."""


def channel(name: str) -> str:
    return f"tp_{name}_{secrets.token_hex(6)}"


def postgres(dsn: str, notify_channel: str) -> PostgresStore:
    """The store as the server opens it from [store] dsn and notify_channel."""
    store = open_store(dsn, notify_channel=notify_channel)
    assert isinstance(store, PostgresStore)
    return store


@contextlib.asynccontextmanager
async def follower(dsn: str, notify_channel: str) -> AsyncIterator[asyncio.Queue[StoreChange]]:
    """A replica's follow() on `notify_channel`, once its LISTEN is up."""
    async with postgres(dsn, notify_channel) as store:
        changes: asyncio.Queue[StoreChange] = asyncio.Queue()
        task = asyncio.create_task(store.follow(changes.put_nowait))
        try:
            assert await next_change(changes) == StoreChange(everything=True)
            yield changes
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def next_change(changes: asyncio.Queue[StoreChange]) -> StoreChange:
    async with asyncio.timeout(WAIT_S):
        return await changes.get()


async def test_deployments_on_their_own_channels_do_not_wake_each_other_on_one_they_do() -> None:
    channel_a, channel_b = channel("a"), channel("b")
    async with (
        fresh_schema() as dsn_a,
        fresh_schema() as dsn_b,
        postgres(dsn_a, channel_a) as deployment_a,
        postgres(dsn_b, channel_b) as deployment_b,
        follower(dsn_b, channel_b) as own_channel,
        follower(dsn_b, channel_a) as shared_channel,
    ):
        await deployment_a.keys.publish(published(), audit=entry("key_shared"))
        await issue(deployment_b, "jti-b")
        await deployment_b.credentials.revoke_credential(
            jti="jti-b",
            at=T0,
            reason="revoked",
            audit=entry("revoke"),
            event=credential_revocation("jti-b"),
        )

        # A committed first: a listener that could hear A would get A's change before B's.
        assert await next_change(own_channel) == StoreChange(events=True)
        assert await next_change(shared_channel) == StoreChange(keys=True)
