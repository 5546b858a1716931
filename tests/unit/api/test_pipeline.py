"""The server's one interceptor on a real gRPC server with stand-in handlers: every stage in the
chain's order, one wrapper per method, and which calls get an access line."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.api.authz import PUBLIC, Access, Authorization, current_workload
from taskpass.server.api.observability import ACCESS_LOGGER, Observability
from taskpass.server.api.pipeline import CallPipeline
from taskpass.server.api.rate_limit import RateLimiting
from taskpass.server.config import AccessLog
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.limits import RateLimit, RateLimiter
from taskpass.server.metrics import Metrics
from taskpass.server.request_id import METADATA_KEY, current_request_id

SERVICE = "test.Pipeline"
ALICE = "spiffe://example.org/agents/alice"
BOB = "spiffe://example.org/agents/bob"
Context = grpc.aio.ServicerContext[Any, Any]


class BearerIsTheId:
    """Attests `authorization: Bearer <SPIFFE ID>` as that ID (there are no certificates here)."""

    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload:
        raise AttestationFailed("X-0", "not in this test")

    def attest_bearer(self, authorization: str) -> Workload:
        workload_id = authorization.removeprefix("Bearer ")
        if not workload_id.startswith("spiffe://"):
            raise AttestationFailed("J-0", "not a workload")
        return Workload(
            id=workload_id,
            method=AttestationMethod.JWT_SVID,
            trust_domain="example.org",
            expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        )


async def whoami(request: pb.ExchangeRequest, context: Context) -> pb.ExchangeRequest:
    return pb.ExchangeRequest(
        task=pb.TaskDescriptor(task_id=current_workload().id, reason=current_request_id() or "")
    )


async def open_to_all(request: pb.ExchangeRequest, context: Context) -> pb.ExchangeRequest:
    return pb.ExchangeRequest(subject_token=current_request_id() or "")


async def counted(request: pb.ExchangeRequest, context: Context) -> AsyncIterator[Any]:
    for n in range(2):
        yield pb.ExchangeRequest(wait_for_approval_seconds=n)


HANDLERS: dict[str, Callable[..., Any]] = {
    "Limited": whoami,
    "Admins": whoami,
    "Public": open_to_all,
    "Stream": counted,
}
TABLE = {
    f"/{SERVICE}/Limited": Access.any_workload(),
    f"/{SERVICE}/Admins": Access.members_of("admins"),
    f"/{SERVICE}/Public": PUBLIC,
    f"/{SERVICE}/Stream": Access.any_workload(),
}


def _handler(fn: Callable[..., Any]) -> grpc.RpcMethodHandler[Any, Any]:
    make: Any = (
        grpc.unary_stream_rpc_method_handler
        if fn is counted
        else grpc.unary_unary_rpc_method_handler
    )
    handler: grpc.RpcMethodHandler[Any, Any] = make(
        fn,
        request_deserializer=pb.ExchangeRequest.FromString,
        response_serializer=pb.ExchangeRequest.SerializeToString,
    )
    return handler


def _pipeline(metrics: Metrics, access_log: AccessLog, denied: list[Any]) -> CallPipeline:
    async def on_denied(workload: Workload, method: str, why: str) -> None:
        denied.append((workload.id, method, current_request_id()))

    return CallPipeline(
        observability=Observability(
            metrics=metrics, exchange_method=f"/{SERVICE}/Limited", access_log=access_log
        ),
        authorization=Authorization(
            attestor=BearerIsTheId(),
            table=TABLE,
            groups=Groups({"admins": [ALICE]}),
            on_denied=on_denied,
        ),
        rate_limit=RateLimiting(
            limiter=RateLimiter(RateLimit(per_second=0.001, burst=1), what="calls", setting="t"),
            limited_methods={f"/{SERVICE}/Limited"},
            metrics=metrics,
        ),
    )


Serve = Callable[[AccessLog], Awaitable[grpc.aio.Channel]]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def denied() -> list[Any]:
    return []


@pytest.fixture
async def serve(metrics: Metrics, denied: list[Any]) -> AsyncIterator[Serve]:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(access_log: AccessLog) -> grpc.aio.Channel:
        server = grpc.aio.server(interceptors=[_pipeline(metrics, access_log, denied)])
        handlers = {name: _handler(fn) for name, fn in HANDLERS.items()}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        return channels[-1]

    try:
        yield start
    finally:
        for channel in channels:
            await channel.close(None)
        for server in servers:
            await server.stop(None)


def call(channel: grpc.aio.Channel, name: str, caller: str | None = None, rid: str = "r") -> Any:
    metadata = [(METADATA_KEY, rid)]
    if caller is not None:
        metadata.append(("authorization", f"Bearer {caller}"))
    stub = channel.unary_unary(
        f"/{SERVICE}/{name}",
        request_serializer=pb.ExchangeRequest.SerializeToString,
        response_deserializer=pb.ExchangeRequest.FromString,
    )
    return stub(pb.ExchangeRequest(), metadata=tuple(metadata))


async def refused(pending: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await pending
    code: grpc.StatusCode = failed.value.code()
    return code


async def eventually(check: Callable[[], bool]) -> bool:
    """Whether `check` holds within 2 s. grpcio sends an aborted call's status before the
    server has finished the call, so what the end of a refused call records (its count, its
    access line) can land just after the client has its answer."""
    for _ in range(200):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str | None]]:
    return [
        (r.__dict__["method"].rsplit("/", 1)[-1], r.__dict__["code"], r.__dict__["workload"])
        for r in caplog.records
        if r.name == ACCESS_LOGGER
    ]


async def test_every_stage_runs_in_the_chains_order_on_one_call(
    serve: Serve, metrics: Metrics
) -> None:
    channel = await serve("failures")

    answer = await call(channel, "Limited", ALICE, rid="req-1")

    assert (answer.task.task_id, answer.task.reason) == (ALICE, "req-1")  # attested, id bound
    # the rate limit comes after attestation: it counts the attested caller's own bucket
    assert await refused(call(channel, "Limited", ALICE)) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await call(channel, "Limited", BOB)).task.task_id == BOB
    rendered = (await metrics.render()).decode()
    assert f'taskpass_rate_limited_total{{method="/{SERVICE}/Limited"}} 1.0' in rendered
    assert 'taskpass_exchanges_total{code="OK",outcome="allow"} 2.0' in rendered


async def test_bytes_that_do_not_parse_are_refused_before_attestation(serve: Serve) -> None:
    channel = await serve("failures")
    raw = channel.unary_unary(f"/{SERVICE}/Admins", None, None)  # bytes as they are, no caller

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await raw(b"\xff\xff\xff\xff")

    assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_refusal_is_audited_under_the_calls_request_id_and_counted(
    serve: Serve, metrics: Metrics, denied: list[Any]
) -> None:
    channel = await serve("failures")

    code = await refused(call(channel, "Admins", BOB, rid="req-denied"))

    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert denied == [(BOB, f"/{SERVICE}/Admins", "req-denied")]
    expected = (
        f'taskpass_grpc_requests_total{{code="PERMISSION_DENIED",method="/{SERVICE}/Admins"}}'
    )
    # grpcio sends an aborted call's status before the server finishes the call, so the count
    # lands just after the client has its answer: wait for it (bounded).
    for _ in range(200):
        if f"{expected} 1.0" in (await metrics.render()).decode():
            break
        await asyncio.sleep(0.01)
    assert f"{expected} 1.0" in (await metrics.render()).decode()


async def test_a_public_method_is_observed_without_attestation(serve: Serve) -> None:
    channel = await serve("failures")

    answer = await call(channel, "Public", caller=None, rid="req-public")

    assert answer.subject_token == "req-public"


async def test_a_stream_passes_every_stage(serve: Serve) -> None:
    channel = await serve("failures")
    stub = channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=pb.ExchangeRequest.SerializeToString,
        response_deserializer=pb.ExchangeRequest.FromString,
    )

    allowed = stub(pb.ExchangeRequest(), metadata=(("authorization", f"Bearer {ALICE}"),))
    assert [item.wait_for_approval_seconds async for item in allowed] == [0, 1]
    unattested = stub(pb.ExchangeRequest())
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        [item async for item in unattested]
    assert failed.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("access_log", "expected"),
    [
        pytest.param(
            "failures",
            [("Admins", "PERMISSION_DENIED", BOB), ("Admins", "UNAUTHENTICATED", None)],
            id="failures-only-by-default",  # attested and refused: named; unattested: not
        ),
        pytest.param(
            "all",
            [
                ("Admins", "OK", ALICE),
                ("Admins", "PERMISSION_DENIED", BOB),
                ("Admins", "UNAUTHENTICATED", None),
            ],
            id="all",
        ),
    ],
)
async def test_which_calls_get_an_access_line(
    serve: Serve,
    caplog: pytest.LogCaptureFixture,
    access_log: AccessLog,
    expected: list[tuple[str, str, str | None]],
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    channel = await serve(access_log)

    await call(channel, "Admins", ALICE)
    await refused(call(channel, "Admins", BOB))
    await refused(call(channel, "Admins", "not-a-workload"))

    assert await eventually(lambda: len(access_lines(caplog)) >= len(expected))
    assert access_lines(caplog) == expected


async def test_a_method_no_stage_applies_to_is_handed_on_untouched() -> None:
    pipeline = CallPipeline(
        authorization=Authorization(attestor=BearerIsTheId(), table=TABLE, groups=Groups({}))
    )
    handler = _handler(open_to_all)

    assert pipeline.wrap(f"/{SERVICE}/Public", handler) is handler
    assert pipeline.wrap(f"/{SERVICE}/Limited", handler) is not handler


async def test_each_method_is_wrapped_once() -> None:
    pipeline = _pipeline(Metrics(), "failures", [])
    handler = _handler(whoami)

    async def continuation(details: Any) -> Any:
        return handler

    class Details(grpc.HandlerCallDetails):
        method = f"/{SERVICE}/Limited"
        invocation_metadata = ()

    first = await pipeline.intercept_service(continuation, Details())
    again = await pipeline.intercept_service(continuation, Details())
    assert first is not handler
    assert again is first
