"""A database row edited outside taskpass, over the real server: the read RPC that meets it
answers DATA_LOSS naming the table and column (never UNAVAILABLE, which clients retry), the SDK
raises StoreCorrupted, and the server keeps serving everything else."""

from __future__ import annotations

import logging
import sqlite3

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from taskpass.client import StoreCorrupted, Task, Unavailable
from taskpass.server.store.sqlite import SqliteStore
from tests.integration.harness import Harness

READ = Task(task_id="t-corrupt", audience="payments-api", action="read")
# 2**62 microseconds since 1970: about 146,000 years, far past datetime's year 9999.
BEYOND_9999 = 4611686018427387904
MESSAGE = (
    "store corrupted: column expires_at of table credentials holds a value taskpass cannot "
    "have written (out of range or malformed); the database may have been edited outside "
    "taskpass or damaged: restore the row from a backup, or correct it"
)


def edit(harness: Harness, statement: str, *params: object) -> None:
    """The SQLite file edited directly, as anyone with write access to it could."""
    store = harness.server.store
    assert isinstance(store, SqliteStore)
    conn = sqlite3.connect(store.path)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


async def test_introspecting_a_credential_whose_row_was_edited_out_of_range_is_data_loss(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness.agent() as agent:
        corrupted = await agent.exchange(READ)
        intact = await agent.exchange(
            Task(task_id="t-intact", audience="payments-api", action="read")
        )
        edit(
            harness,
            "UPDATE credentials SET expires_at = ? WHERE jti = ?",
            BEYOND_9999,
            corrupted.jti,
        )
        stub = pb_grpc.CredentialServiceStub(agent.channel)

        caplog.set_level(logging.ERROR, logger="taskpass.api")
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await stub.Introspect(pb.IntrospectRequest(token=corrupted.token), timeout=10)
        with pytest.raises(StoreCorrupted) as typed:
            await agent.introspect(corrupted.token)
        still_served = await agent.introspect(intact.token)

    assert raw.value.code() == grpc.StatusCode.DATA_LOSS
    assert raw.value.details() == MESSAGE
    assert typed.value.message == MESSAGE
    assert not isinstance(typed.value, Unavailable)  # nothing in the SDK retries it as one
    # one ERROR for the operator per refused call, without a traceback (it could quote the value)
    logged = [r for r in caplog.records if r.name == "taskpass.api"]
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in logged] == 2 * [
        (logging.ERROR, MESSAGE, None)
    ]
    assert still_served.active
