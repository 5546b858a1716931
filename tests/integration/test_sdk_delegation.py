"""A sub-agent's task block over the real server: `client.task(..., on_behalf_of=parent)` delegates
on entry and on every refresh under that same parent token, ends with the parent, and completes
only the sub-agent's own task on exit; the blocking SDK does the same."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.client import PermissionDenied, TaskpassClient
from taskpass.client.sync import SyncTaskpassClient
from taskpass.server.clock import FixedClock
from tests.integration.delegating import (
    RUNNER,
    TASK_ID,
    agent,
    read,
    start_delegation,
    verified_claims,
)
from tests.integration.harness import BILLING_BOT, Harness
from tests.support.pki import TestPki


@pytest.fixture
async def harness(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    running = await start_delegation(tmp_path, pki)
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)


async def is_active(client: TaskpassClient, token: str) -> bool:
    return (await client.introspect(token)).active


async def parent_jti_of(harness: Harness, jti: str) -> str | None:
    record = await harness.server.store.credentials.get_credential(jti)
    assert record is not None
    return record.parent_jti


async def test_a_sub_agents_task_block_delegates_on_entry_and_on_every_refresh(
    harness: Harness,
) -> None:
    parent = await agent(harness).exchange(read(ttl=600))
    clock = FixedClock(dt.datetime.now(dt.UTC))
    async with agent(harness, RUNNER).client() as runner:
        async with runner.task(
            TASK_ID,
            audience="payments-api",
            action="read",
            ttl=dt.timedelta(minutes=4),
            on_behalf_of=parent.token,
            scopes=["payments:read"],
            clock=clock,
        ) as task:
            first = task.current
            clock.advance(dt.timedelta(minutes=3, seconds=30))
            second = await task.credential()
            assert await is_active(runner, second.token)
        assert not await is_active(runner, first.token)
        assert not await is_active(runner, second.token)
        assert await is_active(runner, parent.token)  # exit completed the runner's task only

    assert second.jti != first.jti
    assert set(task.revoked_jtis) == {first.jti, second.jti}
    for credential in (first, second):
        claims = await verified_claims(harness, credential.token)
        assert (claims["sub"], claims["client_id"], claims["act"]) == (
            BILLING_BOT,
            RUNNER,
            {"sub": RUNNER},
        )
        assert claims["scope"] == "payments:read"
        assert await parent_jti_of(harness, credential.jti) == parent.jti


async def test_a_sub_agents_refresh_ends_with_its_parents_credential(harness: Harness) -> None:
    billing = agent(harness)
    parent = await billing.exchange(read(ttl=600))
    clock = FixedClock(dt.datetime.now(dt.UTC))
    async with (
        agent(harness, RUNNER).client() as runner,
        runner.task(
            TASK_ID,
            audience="payments-api",
            action="read",
            ttl=dt.timedelta(minutes=4),
            on_behalf_of=parent.token,
            clock=clock,
        ) as task,
    ):
        async with billing.client() as billing_client:
            await billing_client.complete_task(TASK_ID)  # the parent's task is over
        clock.advance(dt.timedelta(minutes=3, seconds=30))

        # a refresh without the parent would be Denied (no direct grant for tools/*):
        # this is the delegation under the same, now revoked, parent being refused
        with pytest.raises(PermissionDenied) as refused:
            await task.credential()

    assert refused.value.message == (
        "the parent credential is revoked; ask its holder for a live one"
    )


async def test_a_sub_agents_blocking_task_block_delegates_too(harness: Harness) -> None:
    parent = await agent(harness).exchange(read(ttl=600))
    runner = agent(harness, RUNNER)
    cert, key = TestPki.write_identity(harness.directory / "sync", "runner", runner.leaf)

    def sub_agent() -> tuple[str, str, tuple[str, ...]]:
        with (
            SyncTaskpassClient.from_files(
                harness.mtls_target, ca=harness.server_ca, cert=cert, key=key
            ) as client,
            client.task(
                TASK_ID,
                audience="payments-api",
                action="read",
                ttl=dt.timedelta(minutes=2),
                on_behalf_of=parent.token,
            ) as task,
        ):
            return task.token, task.current.jti, task.revoked_jtis

    token, jti, revoked_inside = await asyncio.to_thread(sub_agent)

    claims = await verified_claims(harness, token)
    assert (claims["sub"], claims["act"]) == (BILLING_BOT, {"sub": RUNNER})
    assert await parent_jti_of(harness, jti) == parent.jti
    assert revoked_inside == ()
    async with agent(harness, RUNNER).client() as client:
        assert not await is_active(client, token)  # completed when the block ended
