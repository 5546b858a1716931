"""Observability over the real server: Prometheus metrics at /metrics, request ids returned to
the caller and written into the audit record, one JSON access line per call."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from taskpass._proto.v1 import revocation_pb2 as rpb
from taskpass._proto.v1 import revocation_pb2_grpc as rpb_grpc
from taskpass.client import (
    ApprovalPending,
    AttestationFailed,
    Denied,
    InvalidRequest,
    Task,
)
from taskpass.server.logs import JsonFormatter
from taskpass.server.request_id import METADATA_KEY
from tests.integration.harness import AUDIENCE, BILLING_BOT, SIDECAR, Harness
from tests.integration.serving import metrics_once, scrape_metrics
from tests.support.pki import TestPki

EXCHANGE = "/taskpass.v1.CredentialService/Exchange"


async def metrics(harness: Harness) -> dict[str, float]:
    return await asyncio.to_thread(scrape_metrics, harness.server.ports.http)


async def until(
    stream: grpc.aio.UnaryStreamCall[rpb.WatchRequest, rpb.WatchResponse], kind: str
) -> None:
    while True:
        item = await asyncio.wait_for(stream.read(), timeout=10)
        assert isinstance(item, rpb.WatchResponse), "the stream ended early"
        if item.WhichOneof("item") == kind:
            return


def read(task_id: str) -> Task:
    return Task(task_id=task_id, audience="payments-api", action="read")


@pytest.fixture
async def channel(harness: Harness) -> AsyncIterator[grpc.aio.Channel]:
    """A raw mTLS channel as billing-bot, to send metadata and read trailers."""
    cert, key = TestPki.write_identity(harness.directory, "raw", harness.pki.leaf(BILLING_BOT))
    creds = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(harness.mtls_target, creds) as opened:
        yield opened


def exchange_request(task_id: str, action: str = "read") -> pb.ExchangeRequest:
    return pb.ExchangeRequest(
        task=pb.TaskDescriptor(
            task_id=task_id,
            audience="payments-api",
            action=action,
            sensitivity=pb.SENSITIVITY_INTERNAL,
            requested_ttl_seconds=300,
        )
    )


async def test_exchanges_are_counted_by_outcome_and_code_with_latency_and_policy_time(
    harness: Harness,
) -> None:
    async with harness.agent() as agent:
        await agent.exchange(read("t-allow"))
        with pytest.raises(Denied):
            await agent.exchange(Task(task_id="t-deny", audience="payments-api", action="delete"))
        with pytest.raises(ApprovalPending):
            await agent.exchange(Task(task_id="t-pend", audience="payments-api", action="write"))
        with pytest.raises(InvalidRequest):
            await agent.exchange(
                Task(task_id="t-bad", audience="payments-api", action="read", ttl=dt.timedelta(0))
            )

    outcomes = {
        'taskpass_exchanges_total{code="OK",outcome="allow"}': 1.0,
        'taskpass_exchanges_total{code="PERMISSION_DENIED",outcome="deny"}': 1.0,
        'taskpass_exchanges_total{code="FAILED_PRECONDITION",outcome="pending"}': 1.0,
        'taskpass_exchanges_total{code="INVALID_ARGUMENT",outcome="error"}': 1.0,
    }
    m = await metrics_once(harness.server.ports.http, outcomes)

    assert m['taskpass_exchange_duration_seconds_count{outcome="allow"}'] == 1
    assert m['taskpass_exchange_duration_seconds_sum{outcome="allow"}'] > 0
    assert m["taskpass_policy_evaluation_seconds_count"] == 3  # the invalid one never got there
    assert m[f'taskpass_grpc_requests_total{{code="OK",method="{EXCHANGE}"}}'] == 1
    assert m["taskpass_store_write_batch_size_count"] >= 3  # issuance, decisions, approval
    assert m["taskpass_store_write_batch_seconds_sum"] > 0
    assert m["taskpass_approvals_pending"] == 1
    assert m["taskpass_ready"] == 1


async def test_attestation_failures_are_counted_by_rule(harness: Harness) -> None:
    wrong_audience = harness.pki.jwt(BILLING_BOT, audience="someone-else")
    expired = harness.pki.jwt(BILLING_BOT, audience=AUDIENCE, ttl=-dt.timedelta(minutes=10))
    for token, rule in ((wrong_audience, "J-7"), (expired, "J-8")):
        async with harness.bearer(token) as client:
            with pytest.raises(AttestationFailed) as info:
                await client.exchange(read("t"))
            assert info.value.rule == rule

    refused = f'taskpass_grpc_requests_total{{code="UNAUTHENTICATED",method="{EXCHANGE}"}}'
    m = await metrics_once(harness.server.ports.http, {refused: 2})

    assert m['taskpass_attestation_failures_total{rule="J-7"}'] == 1
    assert m['taskpass_attestation_failures_total{rule="J-8"}'] == 1


async def test_live_subscribers_and_fan_out_latency_are_measured(harness: Harness) -> None:
    async with harness.agent(SIDECAR) as sidecar, harness.agent() as agent:
        watch = rpb_grpc.RevocationServiceStub(sidecar.channel).Watch(rpb.WatchRequest(since=0))
        await until(watch, "heartbeat")
        assert (await metrics(harness))["taskpass_revocation_subscribers"] == 1

        await agent.exchange(read("t-1"))
        await agent.complete_task("t-1")
        await until(watch, "event")
        m = await metrics_once(
            harness.server.ports.http, {"taskpass_revocation_fanout_seconds_count": 1}
        )
        watch.cancel()

    assert 0 < m["taskpass_revocation_fanout_seconds_sum"] < 5


async def test_a_callers_request_id_comes_back_and_is_in_the_audit_record(
    harness: Harness, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.CredentialServiceStub(channel)
    call = stub.Exchange(exchange_request("t-rid"), metadata=((METADATA_KEY, "req-abc.123"),))
    await call
    assert (METADATA_KEY, "req-abc.123") in tuple(await call.trailing_metadata() or ())

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.Exchange(
            exchange_request("t-del", action="delete"), metadata=((METADATA_KEY, "req-deny"),)
        )
    trailers: dict[str, object] = dict(denied.value.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailers[METADATA_KEY] == "req-deny"
    assert str(trailers["taskpass-decision-id"]).startswith("dec_")  # the error's own too

    records = await harness.server.store.audit.read(after_seq=0, limit=100)
    by_request = {r.payload.get("request_id"): r for r in records}
    assert by_request["req-abc.123"].kind == "issuance"
    task = by_request["req-abc.123"].payload["task"]
    assert isinstance(task, dict)
    assert task["task_id"] == "t-rid"
    assert by_request["req-deny"].kind == "decision"
    assert by_request["req-deny"].payload["outcome"] == "deny"


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param(None, id="none-sent"),
        pytest.param("has space", id="malformed"),
        pytest.param("x" * 200, id="too-long"),
    ],
)
async def test_a_missing_or_malformed_request_id_is_replaced_by_a_fresh_one(
    channel: grpc.aio.Channel, offered: str | None
) -> None:
    metadata = () if offered is None else ((METADATA_KEY, offered),)
    call = pb_grpc.CredentialServiceStub(channel).Exchange(
        exchange_request("t-fresh"), metadata=metadata
    )
    await call
    returned = dict(tuple(await call.trailing_metadata() or ()))[METADATA_KEY]
    assert returned != offered
    assert len(returned) == 24
    int(returned, 16)


async def test_every_call_logs_one_json_access_line(
    harness: Harness, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskpass.access")
    await pb_grpc.CredentialServiceStub(channel).Exchange(
        exchange_request("t-log"), metadata=((METADATA_KEY, "req-log"),)
    )
    async with harness.bearer("not-a-jwt") as stranger:
        with pytest.raises(AttestationFailed):
            await stranger.exchange(read("t"))

    def access_lines() -> list[dict[str, Any]]:
        return [
            json.loads(JsonFormatter().format(r))
            for r in caplog.records
            if r.name == "taskpass.access"
        ]

    async with asyncio.timeout(5):  # an aborted call's status reaches the client first
        while len(access_lines()) < 2:
            await asyncio.sleep(0.01)
    lines = access_lines()

    assert len(lines) == 2
    ok, refused = lines
    assert set(ok) == {
        "ts",
        "level",
        "logger",
        "msg",
        "request_id",
        "method",
        "workload",
        "code",
        "duration_ms",
    }
    assert (ok["level"], ok["logger"], ok["msg"]) == ("info", "taskpass.access", "rpc")
    assert (ok["request_id"], ok["method"], ok["code"]) == ("req-log", EXCHANGE, "OK")
    assert ok["workload"] == BILLING_BOT
    assert ok["duration_ms"] > 0
    assert refused["code"] == "UNAUTHENTICATED"
    assert "workload" not in refused  # never attested
    assert "not-a-jwt" not in json.dumps(refused)  # credentials never reach the log
