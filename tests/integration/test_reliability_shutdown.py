"""Graceful shutdown of a real `taskpass serve` process on SIGTERM: exchanges in flight finish
and their credentials are durable, new calls are refused, Watch streams end with the seq to
resume after, and the process exits 0.

To have exchanges certainly in flight when the signal lands, the test holds SQLite's write lock
from outside: the server has decided them (its policy-evaluation count says so) but cannot
commit them until the lock is released, after the signal.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest

from taskpass._proto.v1 import revocation_pb2 as rpb
from taskpass._proto.v1 import revocation_pb2_grpc as rpb_grpc
from taskpass.client import Task, TaskCredential, TaskpassClient, Unavailable
from taskpass.server.revocation.hub import STOPPING
from tests.integration.harness import SIDECAR
from tests.integration.serving import ServedConfig, ServeProcess
from tests.support.pki import TestPki

IN_FLIGHT = 20
DECISIONS = "taskpass_policy_evaluation_seconds_count"

WatchCall = grpc.aio.UnaryStreamCall[rpb.WatchRequest, rpb.WatchResponse]


def read(task_id: str) -> Task:
    return Task(task_id=task_id, audience="payments-api", action="read")


async def until(stream: WatchCall, kind: str) -> rpb.WatchResponse:
    while True:
        item = await asyncio.wait_for(stream.read(), timeout=10)
        assert isinstance(item, rpb.WatchResponse), "the stream ended early"
        if item.WhichOneof("item") == kind:
            return item


def stored_jtis(database: Path) -> set[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT jti FROM credentials")}


@pytest.fixture
def served(tmp_path: Path, pki: TestPki) -> ServedConfig:
    return ServedConfig.write(tmp_path, pki, extra="\n[shutdown]\ngrace_seconds = 8\n")


async def test_sigterm_finishes_exchanges_in_flight_refuses_new_calls_and_ends_watch_streams(
    served: ServedConfig,
) -> None:
    async with ServeProcess(served) as server:
        agent = served.agent()
        sidecar = TaskpassClient(served.channel(SIDECAR))
        watch: WatchCall = rpb_grpc.RevocationServiceStub(sidecar.channel).Watch(
            rpb.WatchRequest(since=0)
        )
        lock = sqlite3.connect(served.database, isolation_level=None, timeout=5)
        try:
            await until(watch, "heartbeat")  # caught up, live
            await agent.exchange(read("done"))
            await agent.complete_task("done")  # event 1: the resume point
            assert (await until(watch, "event")).event.seq == 1

            lock.execute("BEGIN IMMEDIATE")  # the server's writer now waits for us
            in_flight = [
                asyncio.ensure_future(agent.exchange(read(f"f-{n}"))) for n in range(IN_FLIGHT)
            ]
            await served.wait_for_metric(DECISIONS, 1 + IN_FLIGHT)  # all decided, none stored

            server.terminate()

            end = await until(watch, "end")
            assert (end.end.resume_after, end.end.reason) == (1, STOPPING)
            with pytest.raises(Unavailable):  # the listener is closed: new calls are refused
                await agent.exchange(read("after-sigterm"))
            assert not any(f.done() for f in in_flight)
            lock.execute("ROLLBACK")  # the writer goes on; the grace period is not over
            issued = await asyncio.gather(*in_flight)
            assert await server.wait() == 0
        finally:
            lock.close()
            await agent.aclose()
            await sidecar.aclose()

    assert all(isinstance(c, TaskCredential) for c in issued)
    assert {c.jti for c in issued} <= stored_jtis(served.database)
    # The server's own log agrees: it issued them after it began to shut down.
    messages = [line.get("msg") for line in server.lines]
    after = server.lines[messages.index("shutting down") :]
    finished = [
        line
        for line in after
        if str(line.get("method", "")).endswith("/Exchange") and line.get("code") == "OK"
    ]
    assert len(finished) == IN_FLIGHT
