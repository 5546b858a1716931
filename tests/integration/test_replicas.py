"""Three real `taskpass serve` processes on one PostgreSQL schema, as behind one load balancer:
a token from any replica verifies on all, revocations and approvals cross replicas at once, one
gap-free sequence and one audit chain with writers everywhere, and a replica killed mid-load
costs nothing that a client was told had happened."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc import jws

from taskpass.client import (
    ApprovalsClient,
    CredentialVerifier,
    RevocationAdmin,
    Task,
    TaskCredential,
    TaskpassClientError,
)
from taskpass.client.jwks import JWKS_PATH
from taskpass.server.cli.main import main
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.postgres import PostgresStore
from tests.integration.governance import ALICE
from tests.integration.harness import ADMIN, BILLING_BOT, ISSUER, SIDECAR
from tests.integration.replicas import Cluster, Replica, start_cluster
from tests.integration.watching import Follower, watcher
from tests.support.pki import TestPki
from tests.support.postgres import fresh_schema, raw_connection

pytestmark = pytest.mark.postgres

WAIT = 15.0
"""Seconds any one expected thing may take: three servers and the tests share a small machine.
Only a bound, never waited out; the safety polls are a minute (replicas.py), so anything that
arrives within it came by notification."""


def read_task(task_id: str) -> Task:
    return Task(
        task_id=task_id, audience="payments-api", action="read", ttl=dt.timedelta(minutes=5)
    )


@pytest.fixture
async def cluster(tmp_path: Path, pki: TestPki) -> AsyncIterator[Cluster]:
    async with fresh_schema() as dsn, start_cluster(tmp_path, pki, dsn, count=3) as running:
        yield running


async def exchange(cluster: Cluster, replica: int | Replica, task_id: str) -> TaskCredential:
    async with cluster.client(replica, BILLING_BOT) as agent:
        return await agent.exchange(read_task(task_id))


async def revoke(cluster: Cluster, replica: int | Replica, jti: str) -> int:
    async with cluster.admin(replica) as admin:
        result = await RevocationAdmin(admin).revoke_credential(jti, reason="replica test")
    assert result.seq is not None
    return result.seq


async def follow(cluster: Cluster, replica: int | Replica, **options: object) -> Follower:
    """A revocation watcher on `replica`, caught up with it."""
    client = cluster.client(replica, SIDECAR)
    follower = Follower(watcher(client, **options), client)
    await asyncio.wait_for(follower.watcher.wait_ready(), WAIT)
    return follower


async def has(follower: Follower, count: int) -> None:
    await follower.until(lambda got: len(got) >= count, WAIT)


def kid_of(token: str) -> str:
    kid = jws.extract_compact(token.encode()).protected["kid"]
    assert isinstance(kid, str)
    return kid


async def http_jwks_kids(replica: Replica) -> set[str]:
    url = replica.http_url + JWKS_PATH
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        document = await response.json()
    return {key["kid"] for key in document["keys"]}


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, _ = capsys.readouterr()
    return code, out


async def test_a_token_signed_by_any_replica_verifies_on_every_replica(cluster: Cluster) -> None:
    credentials = await asyncio.gather(*(exchange(cluster, n, f"t-sign-{n}") for n in range(3)))
    kids = {kid_of(c.token) for c in credentials}

    introspected = []
    for credential in credentials:
        for replica in range(3):
            async with cluster.client(replica, ADMIN) as client:
                introspected.append(await client.introspect(credential.token))
    published = [await http_jwks_kids(replica) for replica in cluster.replicas]
    offline = CredentialVerifier.from_jwks_url(
        cluster.replicas[2].http_url + JWKS_PATH,
        issuer=ISSUER,
        audience="payments-api",
    )
    cert, _ = cluster.identity(BILLING_BOT)
    verified = await offline.verify(credentials[0].token, peer_certificate=cert.read_bytes())

    assert len(kids) == 3  # each replica signs with its own key
    assert all(i.active for i in introspected)
    assert [i.claims["jti"] for i in introspected] == [c.jti for c in credentials for _ in range(3)]
    assert published == [kids] * 3  # one shared JWKS, over HTTP on every replica
    assert verified.jti == credentials[0].jti


async def test_a_revocation_on_one_replica_reaches_watchers_on_the_others_once(
    cluster: Cluster,
) -> None:
    on_b, on_c = await follow(cluster, 1), await follow(cluster, 2)
    try:
        first, second = (
            await exchange(cluster, 0, "t-rev-1"),
            await exchange(cluster, 0, "t-rev-2"),
        )

        seq_1 = await revoke(cluster, 0, first.jti)
        await has(on_b, 1)
        await has(on_c, 1)
        seq_2 = await revoke(cluster, 2, second.jti)  # a later event: nothing came twice before
        await has(on_b, 2)
        await has(on_c, 2)
    finally:
        await on_b.stop()
        await on_c.stop()

    for follower in (on_b, on_c):
        assert [(r.seq, r.jti) for r in follower.got] == [
            (seq_1, first.jti),
            (seq_2, second.jti),
        ]
        assert follower.watcher.rejected == 0  # each SET, signed on A or C, verified on B and C


async def test_a_watcher_resumes_on_another_replica_from_its_cursor(cluster: Cluster) -> None:
    credentials = [await exchange(cluster, n % 3, f"t-resume-{n}") for n in range(3)]
    on_b = await follow(cluster, 1)
    try:
        seen = await revoke(cluster, 0, credentials[0].jti)
        await has(on_b, 1)
    finally:
        await on_b.stop()  # the sidecar loses replica B
    cursor = on_b.watcher.cursor
    missed = [
        await revoke(cluster, 0, credentials[1].jti),
        await revoke(cluster, 1, credentials[2].jti),
    ]

    on_c = await follow(cluster, 2, since=cursor)
    try:
        await has(on_c, 2)
    finally:
        await on_c.stop()

    assert cursor == seen
    assert on_c.seqs == missed == [seen + 1, seen + 2]
    assert [r.jti for r in on_c.got] == [credentials[1].jti, credentials[2].jti]


async def test_twenty_concurrent_revokers_across_replicas_get_one_gap_free_sequence(
    cluster: Cluster,
) -> None:
    credentials = await asyncio.gather(*(exchange(cluster, n % 3, f"t-gap-{n}") for n in range(20)))
    on_c = await follow(cluster, 2)
    try:
        start = on_c.watcher.cursor or 0
        seqs = await asyncio.gather(
            *(revoke(cluster, n % 3, c.jti) for n, c in enumerate(credentials))
        )
        await has(on_c, 20)
    finally:
        await on_c.stop()

    assert sorted(seqs) == list(range(start + 1, start + 21))
    assert on_c.seqs == sorted(seqs)  # streamed in order, none skipped, none twice
    assert {r.jti for r in on_c.got} == {c.jti for c in credentials}


async def test_an_approval_asked_on_one_replica_is_approved_on_another_and_the_exchange_completes(
    cluster: Cluster,
) -> None:
    write = Task(
        task_id="t-approve", audience="payments-api", action="write", ttl=dt.timedelta(minutes=5)
    )
    async with cluster.client(0, BILLING_BOT) as agent, cluster.client(1, ALICE) as alice:
        waiting = asyncio.create_task(
            agent.exchange(write, wait_for_approval=dt.timedelta(seconds=30))
        )
        try:
            # The request, made on A, shows on B's live watch of pending approvals.
            approval = await asyncio.wait_for(anext(ApprovalsClient.over(alice).watch()), WAIT)
            await ApprovalsClient.over(alice).approve(approval.approval_id, comment="ok")
            # A's waiting exchange re-reads on its own only every minute: it is woken by the
            # decision's notification from B.
            credential = await asyncio.wait_for(waiting, WAIT)
        finally:
            waiting.cancel()

    assert approval.requester == BILLING_BOT
    assert credential.approval_id == approval.approval_id


async def test_the_audit_log_stays_one_verifiable_chain_with_writers_on_every_replica(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = await asyncio.gather(
        *(exchange(cluster, n % 3, f"t-audit-{n}") for n in range(30))
    )
    await asyncio.gather(*(revoke(cluster, n % 3, c.jti) for n, c in enumerate(credentials[:9])))

    code, out = await run_cli(
        capsys, "audit", "verify", *cluster.connection_args(1, ADMIN), "--json"
    )

    async with raw_connection(cluster.dsn) as conn:
        rows = await conn.fetchval("SELECT count(*) FROM audit")
        sharers = await conn.fetchval(
            "SELECT count(DISTINCT payload) FROM audit WHERE kind = 'key_shared'"
        )

    result = json.loads(out)
    assert code == 0, out
    assert result["ok"] is True
    assert result["checked"] == result["last_seq"] == rows  # the whole table, one chain
    assert rows >= 3 + 3 + 30 + 9  # policy loads, keys shared, issuances, revocations
    assert sharers == 3  # written by three replicas


async def test_killing_a_replica_mid_load_loses_nothing_the_clients_were_told(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 replica B while clients exchange and revoke on every replica; they fail over to
    the others (as a load balancer would send them) and carry on."""
    a, b, c = cluster.replicas
    on_b = await follow(cluster, b)
    start = on_b.watcher.cursor or 0
    issued: list[TaskCredential] = []
    revoked: dict[int, str] = {}  # seq -> jti, as each Revoke answered
    failures = 0
    counter = itertools.count()
    enough = asyncio.Event()

    async def worker(first: int) -> None:
        nonlocal failures
        order = itertools.cycle([a, b, c][first:] + [a, b, c][:first])
        while not enough.is_set():
            replica = next(order)
            n = next(counter)
            try:
                credential = await exchange(cluster, replica, f"t-load-{n}")
                issued.append(credential)
                if n % 3 == 0:
                    revoked[await revoke(cluster, replica, credential.jti)] = credential.jti
            except TaskpassClientError:
                failures += 1  # replica B is gone: the next round goes elsewhere
            if len(issued) >= 20:  # kill() is a no-op once B is gone
                b.kill()
            if len(issued) >= 60:
                enough.set()

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(n % 3) for n in range(6))), 60)
    finally:
        await on_b.stop()
    async with PostgresStore(cluster.dsn) as store:
        stored = [await store.credentials.get_credential(cred.jti) for cred in issued]
        events = await store.revocations.read_after(0, limit=MAX_PAGE)
    head = events[-1].seq
    resumed = await follow(cluster, c, since=on_b.watcher.cursor)
    try:
        await resumed.until(
            lambda got: head in {r.seq for r in got} or on_b.watcher.cursor == head, WAIT
        )
    finally:
        await resumed.stop()
    code, out = await run_cli(capsys, "audit", "verify", *cluster.connection_args(a, ADMIN))

    assert await b.exited(WAIT)  # it is gone
    assert failures > 0  # B really died under load
    assert all(record is not None for record in stored)  # every credential a client received
    assert {e.seq: e.jti for e in events if e.seq in revoked} == revoked
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The watcher of B, resumed on C from its cursor: every event once, none missing.
    assert on_b.seqs + resumed.seqs == list(range(start + 1, head + 1))
    assert code == 0, out


async def test_a_replica_whose_notification_connection_drops_still_streams_the_revocation(
    cluster: Cluster,
) -> None:
    b = cluster.replicas[1]
    credential = await exchange(cluster, 0, "t-drop")
    on_b = await follow(cluster, b)
    try:
        async with raw_connection(cluster.dsn) as admin:
            (old,) = await listen_pids(admin, b)
            await admin.execute("SELECT pg_terminate_backend($1)", old)
            seq = await revoke(cluster, 0, credential.jti)  # its NOTIFY may reach nobody on B
            # B's fan-out polls only every minute: the event comes from B re-reading the table
            # when its LISTEN connection is back.
            await has(on_b, 1)
            new = await listen_pids(admin, b)
    finally:
        await on_b.stop()

    assert on_b.seqs == [seq]
    assert new and old not in new


async def listen_pids(admin: Any, replica: Replica) -> list[int]:
    """The backend pids of `replica`'s LISTEN connections (it names its sessions)."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        replica.application_name,
    )
    return [int(row["pid"]) for row in rows]
