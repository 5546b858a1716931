"""Authorization declared in tables (full method -> who may call), enforced by one interceptor.

Every RPC is attested first (see authn.py); the attested Workload is then available to the
servicer through `current_workload()`. A method that is not in any table is denied, and so is a
caller outside the groups a method names; denials are reported to `on_denied` (the audit log).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from taskpass.server.api.authn import PeerAttestor, authenticate
from taskpass.server.api.status import abort_with
from taskpass.server.errors import PermissionDenied, TaskpassError
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import Workload


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a method: anyone (no attestation), any attested workload, or group members."""

    public: bool = False
    groups: frozenset[str] | None = None  # None: any attested workload

    @classmethod
    def any_workload(cls) -> Access:
        return cls()

    @classmethod
    def members_of(cls, *groups: str) -> Access:
        return cls(groups=frozenset(groups))


PUBLIC = Access(public=True)
ANY_WORKLOAD = Access()

_current: contextvars.ContextVar[Workload] = contextvars.ContextVar("taskpass_workload")


def current_workload() -> Workload:
    """The attested caller of the RPC being served."""
    return _current.get()


Context = grpc.aio.ServicerContext[Any, Any]
DeniedHook = Callable[[Workload, str], Awaitable[None]]
if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor


class AuthorizationInterceptor(_Interceptor):
    def __init__(
        self,
        *,
        attestor: PeerAttestor,
        table: Mapping[str, Access],
        groups: Groups,
        on_denied: DeniedHook | None = None,
    ) -> None:
        self._attestor = attestor
        self._table = dict(table)
        self._groups = groups
        self._on_denied = on_denied
        # method -> (handler, its wrapper): built once per method, not on every call. Bounded
        # by the registered methods (an unknown method has no handler and is never cached).
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        access = self._table.get(method)
        if handler is None or (access is not None and access.public):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, functools.partial(self._admit, method, access))
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _admit(self, method: str, access: Access | None, context: Context) -> None:
        workload = authenticate(self._attestor, context)
        if access is None:
            raise PermissionDenied(f"{method} is not open to any caller")
        if access.groups is not None and not self._groups.member_of_any(workload.id, access.groups):
            if self._on_denied is not None:
                await self._on_denied(workload, method)
            needed = ", ".join(sorted(access.groups))
            raise PermissionDenied(
                f"{workload.id} may not call {method.rsplit('/', 1)[-1]}: it needs membership "
                f"of {needed} (groups are set by the security team in the server config)"
            )
        _current.set(workload)


def _wrap(handler: Handler, admit: Callable[[Context], Awaitable[None]]) -> Handler:
    """A copy of `handler` whose behaviour runs `admit` first and aborts on its error."""
    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            try:
                await admit(context)
            except TaskpassError as error:
                await abort_with(context, error)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                await admit(context)
            except TaskpassError as error:
                await abort_with(context, error)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    raise TypeError("client-streaming methods are not used by taskpass")
