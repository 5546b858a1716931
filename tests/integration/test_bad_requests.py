"""Bad task descriptors and oversized messages: INVALID_ARGUMENT / RESOURCE_EXHAUSTED naming the
problem, never INTERNAL, and the server keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from tests.integration.harness import BILLING_BOT, Harness
from tests.support.pki import TestPki


@pytest.fixture
async def stub(harness: Harness) -> AsyncIterator[pb_grpc.CredentialServiceAsyncStub]:
    cert, key = TestPki.write_identity(harness.directory, "raw", harness.pki.leaf(BILLING_BOT))
    creds = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    async with grpc.aio.secure_channel(harness.mtls_target, creds) as channel:
        yield pb_grpc.CredentialServiceStub(channel)


def task(**overrides: object) -> pb.TaskDescriptor:
    fields: dict[str, object] = {
        "task_id": "t-1",
        "audience": "payments-api",
        "action": "read",
        "sensitivity": pb.SENSITIVITY_INTERNAL,
        "requested_ttl_seconds": 300,
    }
    fields.update(overrides)
    return pb.TaskDescriptor(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("descriptor", "field"),
    [
        pytest.param(task(task_id=""), "task.task_id", id="missing-task-id"),
        pytest.param(task(audience=""), "task.audience", id="missing-audience"),
        pytest.param(task(action=""), "task.action", id="missing-action"),
        pytest.param(task(task_id="x" * 129), "task.task_id", id="oversized-task-id"),
        pytest.param(task(audience="a" * 300), "task.audience", id="oversized-audience"),
        pytest.param(task(action="re ad"), "task.action", id="action-with-space"),
        pytest.param(task(sensitivity=0), "task.sensitivity", id="sensitivity-unspecified"),
        pytest.param(task(sensitivity=42), "task.sensitivity", id="sensitivity-unknown-enum"),
        pytest.param(task(requested_ttl_seconds=0), "task.requested_ttl_seconds", id="ttl-zero"),
        pytest.param(
            task(requested_ttl_seconds=10**6), "task.requested_ttl_seconds", id="ttl-too-long"
        ),
        pytest.param(task(reason="r" * 2000), "task.reason", id="oversized-reason"),
        pytest.param(task(reason="two\nlines"), "task.reason", id="reason-control-chars"),
        pytest.param(
            task(attributes={f"k{i}": "v" for i in range(40)}),
            "task.attributes",
            id="too-many-attrs",
        ),
        pytest.param(
            task(attributes={"Bad Key": "v"}), "task.attributes[Bad Key]", id="bad-attribute-key"
        ),
        pytest.param(task(tool="t" * 129), "task.tool", id="oversized-tool"),
        pytest.param(task(tool="a b"), "task.tool", id="tool-with-space"),
        pytest.param(task(environment="e" * 65), "task.environment", id="oversized-environment"),
        pytest.param(
            task(attributes={"k" * 65: "v"}), f"task.attributes[{'k' * 64}]", id="long-attr-key"
        ),
        pytest.param(
            task(attributes={"k": "v" * 513}), "task.attributes[k]", id="oversized-attr-value"
        ),
        pytest.param(task(attributes={"k": "a\x00b"}), "task.attributes[k]", id="attr-value-nul"),
        # A regex anchored with $ matches before a final newline: "prod\n" would pass as a valid
        # environment and miss every policy rule that says "prod" (its TTL cap, say).
        *(
            pytest.param(task(**{name: value}), f"task.{name}", id=f"{name}-trailing-newline")
            for name, value in [
                ("task_id", "t-1\n"),
                ("audience", "payments-api\n"),
                ("action", "read\n"),
                ("tool", "psql\n"),
                ("environment", "prod\n"),
            ]
        ),
        pytest.param(
            task(attributes={"ticket\n": "v"}), "task.attributes[ticket\\n]", id="attr-key-newline"
        ),
    ],
)
async def test_invalid_task_field_is_named(
    stub: pb_grpc.CredentialServiceAsyncStub, descriptor: pb.TaskDescriptor, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Exchange(pb.ExchangeRequest(task=descriptor), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(f"{field}:")
    trailers: dict[str, object] = dict(info.value.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailers.get("taskpass-field") == field
    # and the server still serves
    ok = await stub.Exchange(pb.ExchangeRequest(task=task(task_id="t-ok")), timeout=5)
    assert ok.credential.jti


async def test_missing_task_is_invalid(stub: pb_grpc.CredentialServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Exchange(pb.ExchangeRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "task: is required"


async def test_message_over_the_size_limit_is_resource_exhausted(
    stub: pb_grpc.CredentialServiceAsyncStub,
) -> None:
    huge = task(reason="x" * 20_000)  # the harness limit is 16 KiB
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Exchange(pb.ExchangeRequest(task=huge), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await stub.Exchange(pb.ExchangeRequest(task=task(task_id="t-ok")), timeout=5)
    assert ok.credential.jti
