"""The per-identity rate limit (limits.py) on the methods it applies to (Exchange).

This interceptor runs inside AuthorizationInterceptor, so the caller is attested and known; a
call over the limit is refused before its handler runs: no policy evaluation, signature or
write. Other methods are handed on untouched. Present only when `[limits]` sets a rate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import grpc

from taskpass.server.api.authz import current_workload
from taskpass.server.api.status import abort_with
from taskpass.server.errors import TaskpassError
from taskpass.server.limits import RateLimiter
from taskpass.server.metrics import Metrics

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


class RateLimitInterceptor(_Interceptor):
    def __init__(
        self, *, limiter: RateLimiter, limited_methods: Collection[str], metrics: Metrics
    ) -> None:
        self._limiter = limiter
        self._limited = frozenset(limited_methods)
        self._metrics = metrics
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}  # built once per method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method not in self._limited:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._limit(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _limit(self, inner: Any, method: str) -> Any:
        rate_limited = self._metrics.rate_limited.labels(method)

        async def behaviour(request: Any, context: Context) -> Any:
            try:
                self._limiter.admit(current_workload().id)
            except TaskpassError as error:
                rate_limited.inc()
                await abort_with(context, error)
            return await inner(request, context)

        return behaviour
