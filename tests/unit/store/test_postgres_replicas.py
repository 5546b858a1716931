"""Several replicas on one PostgreSQL database: one gap-free sequence and one audit chain under
concurrent writers, readers that never miss an event, and LISTEN/NOTIFY between replicas
(including a dropped LISTEN connection, and events committed while it was down)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from taskpass.server.errors import Unavailable
from taskpass.server.store.audit_chain import verify_chain
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.postgres_listen import EventListener, ReconnectBackoff
from taskpass.server.store.records import ApprovalRecord, ApprovalState
from tests.support.postgres import raw_connection

from .builders import T0, credential_revocation, entry, issue

pytestmark = pytest.mark.postgres

WAIT_S = 10.0
"""Only turns a regression (a callback that never comes) into a failure; never waited out."""
NO_BACKOFF = ReconnectBackoff(initial=dt.timedelta(0), maximum=dt.timedelta(0))


def unique_channel() -> str:
    # Channels are database-wide: a channel per test keeps other test runs' NOTIFYs out.
    return f"taskpass_test_{secrets.token_hex(6)}"


@contextlib.asynccontextmanager
async def replicas(dsn: str, count: int, *, channel: str) -> AsyncIterator[list[PostgresStore]]:
    """`count` stores on one database, each with its own pool, as separate processes would be."""
    async with contextlib.AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(
                PostgresStore(
                    dsn, events_channel=channel, pool_max_size=3, listen_backoff=NO_BACKOFF
                )
            )
            for _ in range(count)
        ]
        yield stores


async def revoke(store: PostgresStore, jti: str) -> int:
    """Issue a credential and revoke it with an event; returns the event's seq."""
    await issue(store, jti, task_id=f"task-{jti}")
    _, event = await store.credentials.revoke_credential(
        jti=jti,
        at=T0,
        reason="revoked",
        audit=entry("revoke", jti=jti),
        event=credential_revocation(jti, at=T0),
    )
    assert event is not None
    return event.seq


@contextlib.asynccontextmanager
async def listening(
    run: Callable[[Callable[[], None]], Coroutine[Any, Any, None]],
) -> AsyncIterator[asyncio.Queue[None]]:
    """Run a listen loop in a task; each callback puts one item in the queue yielded."""
    calls: asyncio.Queue[None] = asyncio.Queue()
    task = asyncio.create_task(run(lambda: calls.put_nowait(None)))
    try:
        yield calls
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_call(calls: asyncio.Queue[None]) -> None:
    async with asyncio.timeout(WAIT_S):
        await calls.get()


async def test_concurrent_writers_on_two_replicas_keep_one_gap_free_sequence_and_chain(
    pg_dsn: str,
) -> None:
    async with replicas(pg_dsn, 2, channel=unique_channel()) as (a, b):
        seqs, _ = await asyncio.gather(
            asyncio.gather(*(revoke(a if n % 2 else b, f"jti-{n}") for n in range(20))),
            asyncio.gather(*(b.audit.append(entry("decision", n=n)) for n in range(20))),
        )

        events = await a.revocations.read_after(0, limit=MAX_PAGE)
        records = await b.audit.read(limit=MAX_PAGE)

    assert sorted(seqs) == list(range(1, 21))
    assert [e.seq for e in events] == list(range(1, 21))
    assert sorted(e.jti or "" for e in events) == sorted(f"jti-{n}" for n in range(20))
    assert [r.seq for r in records] == list(range(1, 20 * 3 + 1))  # issue + revoke + decision
    result = verify_chain(records)
    assert result.ok, result.message
    # Both replicas really wrote, in batches of their own.
    assert a.writer_stats.operations == 20
    assert b.writer_stats.operations == 40


async def test_a_reader_polling_during_concurrent_writes_never_skips_an_event(
    pg_dsn: str,
) -> None:
    """Gap-free in commit order: whenever a reader sees seq N, every seq below N is visible."""
    async with replicas(pg_dsn, 3, channel=unique_channel()) as (a, b, reader):
        writers = asyncio.gather(*(revoke(a if n % 2 else b, f"jti-{n}") for n in range(40)))
        seen: list[int] = []
        while len(seen) < 40:
            page = await reader.revocations.read_after(seen[-1] if seen else 0, limit=MAX_PAGE)
            # Each page continues exactly where the reader was: nothing below it appears later.
            assert [e.seq for e in page] == list(range(len(seen) + 1, len(seen) + 1 + len(page)))
            seen.extend(e.seq for e in page)
            if not page:
                await asyncio.sleep(0)  # yield to the writers, no waiting on time
        await writers

    assert seen == list(range(1, 41))


async def test_a_replica_hears_events_and_decisions_committed_on_another(pg_dsn: str) -> None:
    async with (
        replicas(pg_dsn, 2, channel=unique_channel()) as (a, b),
        listening(a.listen) as calls,
    ):
        await next_call(calls)  # the first call: LISTEN is established

        seq = await revoke(b, "jti-1")
        await next_call(calls)
        assert await a.revocations.current_seq() == seq

        await b.approvals.create_or_reuse(pending_approval(), audit=entry(), now=T0)
        await next_call(calls)  # approvers watching on another replica see the request
        await b.approvals.decide(
            "apr-1",
            approve=True,
            by="spiffe://example.org/humans/alice",
            at=T0,
            reason="ok",
            expires_at=T0 + dt.timedelta(minutes=5),
            audit=entry("approval_granted"),
        )
        await next_call(calls)
        approval = await a.approvals.get("apr-1")
        assert approval is not None
        assert approval.state is ApprovalState.APPROVED


async def test_a_dropped_listen_connection_is_remade_and_announced(pg_dsn: str) -> None:
    async with (
        replicas(pg_dsn, 2, channel=unique_channel()) as (a, b),
        listening(a.listen) as calls,
    ):
        await next_call(calls)
        [pid] = a.listener_pids
        async with raw_connection(pg_dsn) as admin:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

        await next_call(calls)  # reconnected: one call, to re-read what may have been missed
        assert a.listener_pids
        assert pid not in a.listener_pids

        seq = await revoke(b, "jti-1")
        await next_call(calls)  # and notifications flow again
        assert await a.revocations.current_seq() == seq
        assert calls.empty()


async def test_events_committed_while_the_listener_was_down_are_announced_on_reconnect(
    pg_dsn: str,
) -> None:
    channel = unique_channel()
    gate = asyncio.Event()
    gate.set()
    reconnecting = asyncio.Event()

    async with replicas(pg_dsn, 1, channel=channel) as (writer,):

        async def connect() -> object:
            if not gate.is_set():
                reconnecting.set()
                await gate.wait()
            return await writer._connect()  # the store's own connection settings

        listener = EventListener(
            connect, channel=channel, backoff=NO_BACKOFF, ping_interval=dt.timedelta(minutes=1)
        )
        async with listening(listener.run) as calls:
            await next_call(calls)
            gate.clear()
            async with raw_connection(pg_dsn) as admin:
                await admin.execute("SELECT pg_terminate_backend($1)", listener.server_pid)
            async with asyncio.timeout(WAIT_S):
                await reconnecting.wait()

            await revoke(writer, "jti-1")  # its NOTIFY reaches nobody
            assert calls.empty()
            gate.set()

            await next_call(calls)  # the catch-up call after reconnecting
            assert calls.empty()


async def test_listen_ends_when_the_store_closes_and_refuses_a_closed_store(
    pg_dsn: str,
) -> None:
    store = PostgresStore(pg_dsn, events_channel=unique_channel())
    await store.open()
    calls: asyncio.Queue[None] = asyncio.Queue()
    task = asyncio.create_task(store.listen(lambda: calls.put_nowait(None)))
    await next_call(calls)

    await store.close()

    async with asyncio.timeout(WAIT_S):
        await task
    assert store.listener_pids == frozenset()
    with pytest.raises(Unavailable, match="closed"):
        await store.listen(lambda: None)


def pending_approval() -> ApprovalRecord:
    return ApprovalRecord(
        approval_id="apr-1",
        requester="spiffe://example.org/agents/a",
        requester_method="x509-svid",
        cert_thumbprint=None,
        task_id="task-1",
        digest="digest-1",
        descriptor={"task_id": "task-1"},
        audience="payments-api",
        action="write",
        sensitivity="internal",
        scopes=("payments:write",),
        ttl_seconds=300,
        rules=("approval.payments",),
        approver_groups=("security-approvers",),
        policy_version="sha256:policy",
        decision_id="dec_1",
        state=ApprovalState.PENDING,
        created_at=T0,
        expires_at=T0 + dt.timedelta(minutes=15),
    )
