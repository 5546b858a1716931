"""The observability interceptor on a real gRPC server with stand-in handlers: request ids, a
bug answered INTERNAL without its text, unparseable bytes, both stream styles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.api.observability import Observability
from taskpass.server.api.pipeline import CallPipeline
from taskpass.server.metrics import Metrics
from taskpass.server.request_id import METADATA_KEY, current_request_id

SERVICE = "test.Probe"
Context = grpc.aio.ServicerContext[Any, Any]


async def echo(request: pb.ExchangeRequest, context: Context) -> pb.ExchangeRequest:
    # the handler sees the call's request id, as audit entries and log lines do
    return pb.ExchangeRequest(task=pb.TaskDescriptor(task_id=current_request_id() or ""))


async def broken(request: pb.ExchangeRequest, context: Context) -> pb.ExchangeRequest:
    raise ValueError("secret internal detail")


async def generated(
    request: pb.ExchangeRequest, context: Context
) -> AsyncIterator[pb.ExchangeRequest]:
    for n in range(3):
        yield pb.ExchangeRequest(wait_for_approval_seconds=n)


async def written(request: pb.ExchangeRequest, context: Context) -> None:
    for n in range(2):
        await context.write(pb.ExchangeRequest(wait_for_approval_seconds=n))


def _unary(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=pb.ExchangeRequest.FromString,
        response_serializer=pb.ExchangeRequest.SerializeToString,
    )


def _stream(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_stream_rpc_method_handler(
        fn,
        request_deserializer=pb.ExchangeRequest.FromString,
        response_serializer=pb.ExchangeRequest.SerializeToString,
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def channel(metrics: Metrics) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(
        interceptors=[
            CallPipeline(
                observability=Observability(metrics=metrics, exchange_method=f"/{SERVICE}/Echo")
            )
        ]
    )
    handlers = {
        "Echo": _unary(echo),
        "Broken": _unary(broken),
        "Generated": _stream(generated),
        "Written": _stream(written),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(None)


def unary(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{name}",
        request_serializer=pb.ExchangeRequest.SerializeToString,
        response_deserializer=pb.ExchangeRequest.FromString,
    )


def stream(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_stream(
        f"/{SERVICE}/{name}",
        request_serializer=pb.ExchangeRequest.SerializeToString,
        response_deserializer=pb.ExchangeRequest.FromString,
    )


async def test_the_request_id_is_current_in_the_handler_and_returned(
    channel: grpc.aio.Channel,
) -> None:
    call = unary(channel, "Echo")(pb.ExchangeRequest(), metadata=((METADATA_KEY, "abc-1"),))
    response = await call
    assert response.task.task_id == "abc-1"
    assert (METADATA_KEY, "abc-1") in tuple(await call.trailing_metadata())


async def test_a_bug_is_internal_with_the_request_id_and_never_its_text(
    channel: grpc.aio.Channel, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await unary(channel, "Broken")(pb.ExchangeRequest(), metadata=((METADATA_KEY, "r-9"),))
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == "internal error; the server log has details (request id r-9)"
    assert "secret" not in str(failed.value.debug_error_string())
    trailers: dict[str, Any] = dict(failed.value.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailers[METADATA_KEY] == "r-9"
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and logged[0].exc_info is not None  # the cause is in the log
    counted = 'taskpass_grpc_requests_total{code="INTERNAL",method="/test.Probe/Broken"} 1.0'
    async with asyncio.timeout(5):  # grpcio sends an aborted call's status before it ends
        while counted not in (await metrics.render()).decode():
            await asyncio.sleep(0.01)


async def test_bytes_that_do_not_parse_are_invalid_argument_naming_the_message(
    channel: grpc.aio.Channel,
) -> None:
    raw = channel.unary_unary(f"/{SERVICE}/Echo", None, None)  # bytes as they are
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await raw(b"\xff\xff\xff\xff")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert METADATA_KEY in dict(refused.value.trailing_metadata() or ())  # type: ignore[arg-type]
    assert refused.value.details() == (
        "message: the request bytes are not a valid taskpass.v1.ExchangeRequest; "
        "send the message the generated client stub builds"
    )


@pytest.mark.parametrize(
    ("name", "count"),
    [pytest.param("Generated", 3, id="async-generator"), pytest.param("Written", 2, id="writes")],
)
async def test_both_server_stream_styles_pass_through(
    channel: grpc.aio.Channel, metrics: Metrics, name: str, count: int
) -> None:
    call = stream(channel, name)(pb.ExchangeRequest())
    items = [item.wait_for_approval_seconds async for item in call]
    assert items == list(range(count))
    assert (await call.code()) == grpc.StatusCode.OK
    rendered = (await metrics.render()).decode()
    assert f'taskpass_grpc_requests_total{{code="OK",method="/test.Probe/{name}"}} 1.0' in rendered


async def test_exchange_outcomes_and_latency_are_recorded_for_the_exchange_method(
    channel: grpc.aio.Channel, metrics: Metrics
) -> None:
    await unary(channel, "Echo")(pb.ExchangeRequest())
    rendered = (await metrics.render()).decode()
    assert 'taskpass_exchanges_total{code="OK",outcome="allow"} 1.0' in rendered
    assert 'taskpass_exchange_duration_seconds_count{outcome="allow"} 1.0' in rendered
