"""Limits over the real server: a per-identity rate limit on Exchange and request size limits,
each answered RESOURCE_EXHAUSTED with a message naming the limit; the server keeps serving."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from taskpass.client import ResourceExhausted, Task
from taskpass.server.config import LimitsConfig
from tests.integration.harness import BILLING_BOT, REPORT_BOT, Harness
from tests.integration.serving import metrics_once, start_tuned_harness
from tests.support.pki import TestPki

BURST = 3


def read(task_id: str) -> Task:
    return Task(task_id=task_id, audience="payments-api", action="read")


@pytest.fixture
async def limited(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    # A token every 100 s, bursts of three: a test's few calls never see a refill.
    harness = await start_tuned_harness(
        tmp_path, pki, limits=LimitsConfig(exchanges_per_second=0.01, burst=BURST)
    )
    try:
        yield harness
    finally:
        await harness.server.stop(grace=0.5)


async def test_an_identity_over_its_rate_is_refused_with_the_limit_and_when_to_retry(
    limited: Harness,
) -> None:
    async with limited.agent(BILLING_BOT) as billing, limited.agent(REPORT_BOT) as report:
        for n in range(BURST):
            await billing.exchange(read(f"t-{n}"))
        with pytest.raises(ResourceExhausted) as refused:
            await billing.exchange(read("t-over"))
        assert await billing.complete_task("t-0")  # other methods are not limited
        await report.exchange(read("r-1"))  # another identity has its own bucket

    message = refused.value.message
    assert message.startswith(f"rate limit exceeded: {BILLING_BOT} may make 0.01 exchanges")
    assert "bursts of 3" in message
    assert "[limits] exchanges_per_second" in message
    assert "retry in " in message
    retry_ms = int(refused.value.details["retry_after_ms"])
    assert 90_000 < retry_ms <= 100_000  # one token at 0.01/s: about 100 s
    assert refused.value.retry_after == dt.timedelta(milliseconds=retry_ms)
    exchange = "/taskpass.v1.CredentialService/Exchange"
    await metrics_once(
        limited.server.ports.http,
        {
            f'taskpass_rate_limited_total{{method="{exchange}"}}': 1,
            f'taskpass_grpc_requests_total{{code="RESOURCE_EXHAUSTED",method="{exchange}"}}': 1,
        },
    )


async def test_a_refused_call_leaves_no_trace_in_the_store(limited: Harness) -> None:
    async with limited.agent() as billing:
        for n in range(BURST):
            await billing.exchange(read(f"t-{n}"))
        before = await limited.server.store.audit.read(after_seq=0, limit=1000)
        with pytest.raises(ResourceExhausted):
            await billing.exchange(read("t-over"))
    after = await limited.server.store.audit.read(after_seq=0, limit=1000)
    assert after == before
    assert await limited.server.store.credentials.get_task(BILLING_BOT, "t-over") is None


async def test_a_message_over_the_size_limit_names_no_retry_time(harness: Harness) -> None:
    # Retrying the same call cannot succeed: the SDK's error says so by having no retry_after.
    async with harness.agent() as billing:
        with pytest.raises(ResourceExhausted) as refused:
            await billing.exchange(
                Task(task_id="t-big", audience="payments-api", action="read", reason="x" * 20_000)
            )
    assert "vs. 16384" in refused.value.message
    assert refused.value.retry_after is None


@pytest.fixture
async def raw(harness: Harness) -> AsyncIterator[pb_grpc.CredentialServiceAsyncStub]:
    cert, key = TestPki.write_identity(harness.directory, "raw", harness.pki.leaf(BILLING_BOT))
    creds = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(harness.mtls_target, creds) as channel:
        yield pb_grpc.CredentialServiceStub(channel)


def exchange(task_id: str, reason: str = "") -> pb.ExchangeRequest:
    return pb.ExchangeRequest(
        task=pb.TaskDescriptor(
            task_id=task_id,
            audience="payments-api",
            action="read",
            sensitivity=pb.SENSITIVITY_INTERNAL,
            requested_ttl_seconds=60,
            reason=reason,
        )
    )


async def test_a_message_over_the_size_limit_is_refused_naming_the_limit(
    raw: pb_grpc.CredentialServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await raw.Exchange(exchange("t-big", reason="x" * 20_000), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "vs. 16384" in (refused.value.details() or "")  # listen.max_message_bytes
    assert (await raw.Exchange(exchange("t-ok"), timeout=5)).credential.jti


async def test_metadata_over_the_size_limit_is_refused(
    raw: pb_grpc.CredentialServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await raw.Exchange(exchange("t-md"), metadata=(("x-padding", "p" * 20_000),), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metadata" in (refused.value.details() or "")
    assert (await raw.Exchange(exchange("t-ok"), timeout=5)).credential.jti
