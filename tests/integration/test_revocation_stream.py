"""The revocation stream over the real server: completion, resume, restart, many watchers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.client import PermissionDenied, Task, TaskCredential, TaskpassClient
from taskpass.client.jwks import GrpcJwks, JwksCache
from taskpass.client.revocations import RevocationAdmin
from taskpass.client.security_events import ALGORITHMS, RevocationKind
from taskpass.client.watcher import Backoff
from taskpass.server.app import TaskpassServer
from tests.integration.harness import ADMIN, REPORT_BOT, REVOCATION_QUEUE, SIDECAR, Harness
from tests.integration.watching import WAIT, Follower, Followers, claims, watcher
from tests.support.pki import TestPki


@pytest.fixture
async def followers(harness: Harness) -> AsyncIterator[Followers]:
    made = Followers(harness)
    yield made
    await made.close()


def read_task(task_id: str) -> Task:
    return Task(
        task_id=task_id, audience="payments-api", action="read", ttl=dt.timedelta(minutes=5)
    )


async def exchange(client: TaskpassClient, task_id: str) -> TaskCredential:
    return await client.exchange(read_task(task_id))


async def test_completing_a_task_revokes_all_its_credentials_and_each_watcher_sees_it_once(
    harness: Harness, followers: Followers
) -> None:
    watching = [await followers.ready() for _ in range(3)]
    async with harness.agent() as agent:
        first, second = await exchange(agent, "t-7"), await exchange(agent, "t-7")
        untouched = await exchange(agent, "t-9")
        await agent.complete_task("t-7")
        later = await exchange(agent, "t-8")
        await agent.complete_task("t-8")

    for follower in watching:
        await follower.has(2)
        assert [(r.kind, r.task_id) for r in follower.got] == [
            (RevocationKind.TASK, "t-7"),
            (RevocationKind.TASK, "t-8"),
        ]
        assert follower.seqs == sorted(set(follower.seqs))
        w = follower.watcher
        assert w.is_token_revoked(claims(first, "t-7"))
        assert w.is_token_revoked(claims(second, "t-7"))
        assert w.is_token_revoked(claims(later, "t-8"))
        assert not w.is_token_revoked(claims(untouched, "t-9"))
        assert (w.rejected, w.duplicates) == (0, 0)


async def test_a_watcher_resuming_from_its_cursor_after_a_drop_loses_nothing(
    harness: Harness, followers: Followers
) -> None:
    before = await followers.ready()
    async with harness.agent() as agent, harness.agent(ADMIN) as admin:
        revoke = RevocationAdmin(admin)
        seen = await exchange(agent, "t-1")
        await revoke.revoke_credential(seen.jti)
        await before.has(1)
        await before.stop()  # the connection drops
        cursor = before.watcher.cursor
        missed = [await exchange(agent, f"t-{n}") for n in (2, 3)]
        for credential in missed:
            await revoke.revoke_credential(credential.jti)

    after = await followers.ready(since=cursor)
    await after.has(2)
    assert [r.jti for r in after.got] == [c.jti for c in missed]
    assert cursor is not None
    assert after.seqs == [cursor + 1, cursor + 2]


async def test_a_watcher_rides_out_a_server_restart_and_loses_nothing(
    harness: Harness, followers: Followers
) -> None:
    quick = Backoff(initial=dt.timedelta(milliseconds=20), maximum=dt.timedelta(milliseconds=200))
    follower = await followers.ready(backoff=quick)
    async with harness.agent() as agent:
        await exchange(agent, "t-1")
        await agent.complete_task("t-1")
    await follower.has(1)

    config = harness.server.config
    ports = harness.server.ports
    await harness.server.stop(grace=0.2)
    listen = dataclasses.replace(
        config.listen,
        mtls_address=f"127.0.0.1:{ports.mtls}",
        tls_address=f"127.0.0.1:{ports.tls}",
        http_address=f"127.0.0.1:{ports.http}",
    )
    harness.server = await TaskpassServer.start(dataclasses.replace(config, listen=listen))

    async with harness.agent() as agent:  # committed while the watcher is still reconnecting
        await exchange(agent, "t-2")
        await agent.complete_task("t-2")
        await exchange(agent, "t-3")
        await agent.complete_task("t-3")

    await follower.has(3)
    assert [r.task_id for r in follower.got] == ["t-1", "t-2", "t-3"]
    assert follower.seqs == [1, 2, 3]
    assert follower.watcher.reconnects >= 1


async def test_five_hundred_watchers_all_receive_an_event(harness: Harness) -> None:
    clients = [harness.agent(SIDECAR) for _ in range(10)]  # 50 streams share each channel
    keys = JwksCache(GrpcJwks(clients[0]), algorithms=ALGORITHMS)
    watching = [
        Follower(watcher(clients[n % len(clients)], keys=keys, since=0)) for n in range(500)
    ]
    try:
        async with asyncio.timeout(WAIT):  # each ready() is bounded by WAIT too
            await asyncio.gather(*(f.ready() for f in watching))
        async with harness.agent() as agent:
            await exchange(agent, "t-500")
            started = time.perf_counter()
            await agent.complete_task("t-500")
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(f.has(1) for f in watching))
        elapsed = time.perf_counter() - started
    finally:
        for follower in watching:
            await follower.stop()
        for client in clients:
            await client.aclose()
    assert all(f.got[0].task_id == "t-500" and len(f.got) == 1 for f in watching)
    print(f"500 watchers: CompleteTask -> last watcher in {elapsed * 1000:.0f} ms")


async def read(call: object) -> pb.WatchResponse:
    """The next message of a raw Watch call."""
    response = await asyncio.wait_for(call.read(), WAIT)  # type: ignore[attr-defined]
    assert isinstance(response, pb.WatchResponse)
    return response


def small_window_channel(harness: Harness) -> grpc.aio.Channel:
    """A sidecar's channel whose flow-control window stays at 1 KiB: a stream on it that is not
    read blocks the server's writes after about one event."""
    cert, key = TestPki.write_identity(
        harness.directory / "clients", "slow-sidecar", harness.pki.leaf(SIDECAR)
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    return grpc.aio.secure_channel(harness.mtls_target, credentials, options)


async def test_a_subscriber_that_never_reads_holds_up_no_one_and_gets_a_clean_end(
    harness: Harness, followers: Followers
) -> None:
    reader = await followers.ready()
    async with small_window_channel(harness) as channel:
        stuck = pb_grpc.RevocationServiceStub(channel).Watch(pb.WatchRequest(since=0))
        assert (await read(stuck)).WhichOneof("item") == "heartbeat"  # caught up, then no reads

        count = REVOCATION_QUEUE * 2
        async with harness.agent() as agent, harness.agent(ADMIN) as admin:
            credentials = await asyncio.gather(*(exchange(agent, f"t-{n}") for n in range(count)))
            revoke = RevocationAdmin(admin)
            await asyncio.gather(*(revoke.revoke_credential(c.jti) for c in credentials))
        await reader.has(count)  # the others are not held up

        received: list[int] = []
        async with asyncio.timeout(WAIT):
            while True:
                response = await read(stuck)
                item = response.WhichOneof("item")
                if item == "event":
                    received.append(response.event.seq)
                elif item == "end":
                    break
        assert received == list(range(1, len(received) + 1))
        assert len(received) < count
        assert response.end.resume_after == received[-1]
        assert "fell too far behind" in response.end.reason

    resumed = await followers.ready(since=response.end.resume_after)
    await resumed.has(count - len(received))
    assert resumed.seqs == list(range(len(received) + 1, count + 1))


async def test_a_workload_outside_the_subscribers_group_is_denied_the_stream(
    harness: Harness, followers: Followers
) -> None:
    intruder = followers.start(REPORT_BOT)
    error = await intruder.finished()
    assert isinstance(error, PermissionDenied)
    assert "subscribers" in error.message


async def test_without_a_cursor_the_stream_starts_with_what_is_in_force_and_its_seq(
    harness: Harness,
) -> None:
    async with harness.agent() as agent:
        for n in range(3):
            await exchange(agent, f"t-{n}")
            await agent.complete_task(f"t-{n}")
    async with harness.agent(SIDECAR) as sidecar:
        call = pb_grpc.RevocationServiceStub(sidecar.channel).Watch(pb.WatchRequest())
        snapshot = (await read(call)).snapshot
        heartbeat = (await read(call)).heartbeat
        call.cancel()
    assert [e.task_id for e in snapshot.events] == ["t-0", "t-1", "t-2"]
    assert (snapshot.seq, snapshot.complete) == (3, True)
    assert heartbeat.seq == 3
