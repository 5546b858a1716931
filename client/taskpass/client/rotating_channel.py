"""A gRPC channel whose TLS identity follows a source that changes (a rotating SVID).

grpcio's channel credentials are fixed when a channel is made, so following a rotation means a
new channel. `RotatingChannel` stands in for one `grpc.aio.Channel`: stubs are built on it once,
and each call goes to the channel built from the current material. `invalidate()` (thread-safe:
the SPIFFE Workload API delivers updates on its own thread) marks the material as possibly
changed; the next call, on the event loop, reads it and, if it differs, builds a new channel.
The previous channel is closed after `retire_grace`, so calls in flight (streams included) can
finish on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import grpc

log = logging.getLogger(__name__)

M = TypeVar("M")


class RotatingChannel(grpc.aio.Channel, Generic[M]):
    """`material()` returns the current material (compared with ==); `build(material)` makes a
    channel from it. Both run on the event loop thread, at the first call after a change."""

    def __init__(
        self,
        *,
        material: Callable[[], M],
        build: Callable[[M], grpc.aio.Channel],
        on_close: Callable[[], None] | None = None,
        retire_grace: float = 30.0,
    ) -> None:
        self._material = material
        self._build = build
        self._on_close = on_close
        self._retire_grace = retire_grace
        self._lock = threading.Lock()
        self._version = 0
        self._built_version = -1
        self._built: tuple[M, grpc.aio.Channel] | None = None
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        self._callables: dict[tuple[str, str], tuple[grpc.aio.Channel, Any]] = {}
        self._closed = False
        self.rebuilds = 0
        """How many channels were built after the first (for tests and metrics)."""

    def invalidate(self) -> None:
        """The material may have changed: re-read it at the next call. Any thread."""
        with self._lock:
            self._version += 1

    def current(self) -> grpc.aio.Channel:
        """The channel for the current material, built now if the material changed."""
        if self._closed:
            raise RuntimeError("the channel is closed")
        with self._lock:
            version = self._version
        if self._built is not None and version == self._built_version:
            return self._built[1]
        material = self._material()
        self._built_version = version
        if self._built is not None and self._built[0] == material:
            return self._built[1]
        channel = self._build(material)
        if self._built is not None:
            self.rebuilds += 1
            self._retire(self._built[1])
        self._built = (material, channel)
        return channel

    def _retire(self, old: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(old.close(self._retire_grace))
        self._retiring[task] = old
        task.add_done_callback(self._retiring.pop)

    def _callable(self, kind: str, method: str, make: Callable[[grpc.aio.Channel], Any]) -> Any:
        channel = self.current()
        cached = self._callables.get((kind, method))
        if cached is not None and cached[0] is channel:
            return cached[1]
        multicallable = make(channel)
        self._callables[(kind, method)] = (channel, multicallable)
        return multicallable

    # --- grpc.aio.Channel --------------------------------------------------------------------

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            return channel.unary_unary(method, request_serializer, response_deserializer)

        return cast(
            "grpc.aio.UnaryUnaryMultiCallable[Any, Any]",
            _Proxy(lambda: self._callable("unary_unary", method, make)),
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryStreamMultiCallable[Any, Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            return channel.unary_stream(method, request_serializer, response_deserializer)

        return cast(
            "grpc.aio.UnaryStreamMultiCallable[Any, Any]",
            _Proxy(lambda: self._callable("unary_stream", method, make)),
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamUnaryMultiCallable[Any, Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            return channel.stream_unary(method, request_serializer, response_deserializer)

        return cast(
            "grpc.aio.StreamUnaryMultiCallable[Any, Any]",
            _Proxy(lambda: self._callable("stream_unary", method, make)),
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
        def make(channel: grpc.aio.Channel) -> Any:
            return channel.stream_stream(method, request_serializer, response_deserializer)

        return cast(
            "grpc.aio.StreamStreamMultiCallable[Any, Any]",
            _Proxy(lambda: self._callable("stream_stream", method, make)),
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._on_close is not None:
                self._on_close()
        finally:
            for task, old in list(self._retiring.items()):
                task.cancel()  # its grace period is cut short: closing the client ends all calls
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await old.close(None)
            if self._built is not None:
                await self._built[1].close(grace)

    async def __aenter__(self) -> RotatingChannel[M]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        await self.close()
        return None


class _Proxy:
    """A multicallable that forwards each call to the current channel's multicallable."""

    __slots__ = ("_resolve",)

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self._resolve = resolve

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)
