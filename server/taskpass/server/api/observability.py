"""The outermost interceptor: a request id, metrics and one access log line for every RPC.

For each call it
- answers bytes that do not parse as the method's message INVALID_ARGUMENT naming the message
  (see parsing.py), before anything else runs;
- takes the caller's `x-request-id` if well-formed (else makes one), makes it current for the
  call (log lines and audit records pick it up, see request_id.py) and returns it in the
  trailing metadata (status.abort_with keeps it when an error adds its own trailers);
- counts the call by method and status code, and for Exchange by outcome with its latency;
- logs `rpc` on `taskpass.access` with method, workload, code and duration_ms;
- turns an exception that escaped every handler (a bug) into INTERNAL with a generic message
  naming the request id, never the exception's text, and logs the cause.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from taskpass.server.api.authz import current_workload
from taskpass.server.api.parsing import Unparsed, tolerant
from taskpass.server.api.status import DETAIL_PREFIX, abort_with
from taskpass.server.metrics import Metrics, outcome_of
from taskpass.server.request_id import METADATA_KEY, accept_request_id, bind_request_id

log = logging.getLogger("taskpass.api")
ACCESS_LOGGER = "taskpass.access"
access_log = logging.getLogger(ACCESS_LOGGER)

Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor

_PENDING_MARK = DETAIL_PREFIX + "decision-id"  # only ApprovalRequired sends it with this code


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return accept_request_id(value)
    return accept_request_id(None)


def _workload_id() -> str | None:
    try:
        return current_workload().id
    except LookupError:  # public method, or refused before attestation finished
        return None


class _Call:
    """One call's bookkeeping, finished exactly once."""

    __slots__ = ("context", "method", "request_id", "started")

    def __init__(self, method: str, context: Context) -> None:
        self.started = time.perf_counter()
        self.method = method
        self.context = context
        self.request_id = request_id = _request_id(context)
        bind_request_id(request_id)
        context.set_trailing_metadata(((METADATA_KEY, request_id),))

    def aborted_code(self) -> str:
        code = self.context.code()
        return code.name if code is not None else "UNKNOWN"

    async def internal(self, error: BaseException) -> None:
        log.error("unexpected error in %s", self.method, exc_info=error)
        await self.context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; the server log has details (request id {self.request_id})",
            trailing_metadata=((METADATA_KEY, self.request_id),),
        )


class ObservabilityInterceptor(_Interceptor):
    def __init__(self, *, metrics: Metrics, exchange_method: str) -> None:
        self._metrics = metrics
        self._exchange = exchange_method
        # method -> (handler, its wrapper), built once per registered method (as authz does)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

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
        if handler.unary_unary is not None:
            wrapped = self._unary(handler, method)
        elif handler.unary_stream is not None:
            wrapped = self._stream(handler, method)
        else:
            return handler  # client streaming: not used by taskpass services (reflection only)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _finish(self, call: _Call, code: str) -> None:
        seconds = time.perf_counter() - call.started
        self._metrics.rpc_done(call.method, code)
        if call.method == self._exchange:
            pending = code == "FAILED_PRECONDITION" and any(
                k == _PENDING_MARK for k, _ in call.context.trailing_metadata() or ()
            )
            self._metrics.exchange_done(outcome_of(code, approval_pending=pending), code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "rpc",
                extra={
                    "request_id": call.request_id,
                    "method": call.method,
                    "workload": _workload_id(),
                    "code": code,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )

    def _unary(self, handler: Handler, method: str) -> Handler:
        return grpc.unary_unary_rpc_method_handler(
            self._awaiting(handler.unary_unary, method),
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _stream(self, handler: Handler, method: str) -> Handler:
        inner: Any = handler.unary_stream
        behaviour = (
            self._iterating(inner, method)
            if inspect.isasyncgenfunction(inner)
            else self._awaiting(inner, method)  # writes with context.write
        )
        return grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _awaiting(self, inner: Any, method: str) -> Any:
        async def behaviour(request: Any, context: Context) -> Any:
            call = _Call(method, context)
            code = "OK"
            try:
                if isinstance(request, Unparsed):
                    await abort_with(context, request.error)
                return await inner(request, context)
            except grpc.aio.AbortError:
                code = call.aborted_code()
                raise
            except BaseException as error:
                if not isinstance(error, Exception):  # cancelled: the caller went away
                    code = "CANCELLED"
                    raise
                code = "INTERNAL"
                await call.internal(error)
            finally:
                self._finish(call, code)

        return behaviour

    def _iterating(self, inner: Any, method: str) -> Any:
        async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(method, context)
            code = "OK"
            try:
                if isinstance(request, Unparsed):
                    await abort_with(context, request.error)
                async for item in inner(request, context):
                    yield item
            except grpc.aio.AbortError:
                code = call.aborted_code()
                raise
            except BaseException as error:
                if not isinstance(error, Exception):
                    code = "CANCELLED"
                    raise
                code = "INTERNAL"
                await call.internal(error)
            finally:
                self._finish(call, code)

        return behaviour
