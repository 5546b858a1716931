"""The innermost interceptor: requests that do not parse, and the per-identity rate limit.

- grpcio answers bytes that do not parse as the method's message with UNKNOWN and the parser's
  exception text; here they get INVALID_ARGUMENT naming the expected message instead.
- Rate-limited methods take a token from the caller's bucket (limits.py) after attestation
  (this interceptor runs inside AuthorizationInterceptor, so the caller is known) and before
  the handler: a refused call costs no policy evaluation, signature or write.

Oversized messages never get here: grpcio refuses them with RESOURCE_EXHAUSTED first, naming
the limit (`listen.max_message_bytes`).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import grpc

from taskpass.server.api.authz import current_workload
from taskpass.server.api.status import abort_with
from taskpass.server.errors import InvalidRequest, TaskpassError
from taskpass.server.limits import RateLimiter
from taskpass.server.metrics import Metrics

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


class _Unparsed:
    """What the deserializer hands on instead of raising (which grpcio answers UNKNOWN)."""

    __slots__ = ("error",)

    def __init__(self, error: TaskpassError) -> None:
        self.error = error


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request message"))


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    name = _message_name(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or anything its parser trips on
            return _Unparsed(
                InvalidRequest(
                    "message",
                    f"the request bytes are not a valid {name}; send the message the "
                    "generated client stub builds",
                )
            )

    return deserialize


class GuardInterceptor(_Interceptor):
    def __init__(
        self,
        *,
        limiter: RateLimiter | None,
        limited_methods: Collection[str],
        metrics: Metrics,
    ) -> None:
        self._limiter = limiter
        self._limited = frozenset(limited_methods) if limiter is not None else frozenset()
        self._metrics = metrics
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}  # built once per method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        limited = method in self._limited
        if handler.unary_unary is not None:
            wrapped = self._unary(handler, method, limited)
        elif handler.unary_stream is not None:
            wrapped = self._stream(handler, method, limited)
        else:
            return handler
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _admit(self, method: str) -> None:
        assert self._limiter is not None
        try:
            self._limiter.admit(current_workload().id)
        except TaskpassError:
            self._metrics.rate_limited.labels(method).inc()
            raise

    def _check(self, request: Any, method: str, limited: bool) -> None:
        if isinstance(request, _Unparsed):
            raise request.error
        if limited:
            self._admit(method)

    def _unary(self, handler: Handler, method: str, limited: bool) -> Handler:
        return grpc.unary_unary_rpc_method_handler(
            self._awaiting(handler.unary_unary, method, limited),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _stream(self, handler: Handler, method: str, limited: bool) -> Handler:
        inner: Any = handler.unary_stream
        behaviour = (
            self._iterating(inner, method, limited)
            if inspect.isasyncgenfunction(inner)
            else self._awaiting(inner, method, limited)  # writes with context.write
        )
        return grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _awaiting(self, inner: Any, method: str, limited: bool) -> Any:
        async def behaviour(request: Any, context: Context) -> Any:
            try:
                self._check(request, method, limited)
            except TaskpassError as error:
                await abort_with(context, error)
            return await inner(request, context)

        return behaviour

    def _iterating(self, inner: Any, method: str, limited: bool) -> Any:
        async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                self._check(request, method, limited)
            except TaskpassError as error:
                await abort_with(context, error)
            async for item in inner(request, context):
                yield item

        return behaviour
