"""Blocking versions of the SDK for code without an event loop: the async objects, run on a
private event loop thread. Not a second implementation: every method forwards to the async one of
the same name (signatures included), so the two cannot drift apart.

    with SyncTaskpassClient.from_files("localhost:8443", ca=..., cert=..., key=...) as client:
        with client.task("t-42", audience="payments-api", action="read") as task:
            call_api(task.token)
        # a sub-agent, under its parent's token (every refresh too), as TaskpassClient.task
        with client.task("t-42", audience="payments-api", action="read",
                         on_behalf_of=parent_token, scopes=["payments:read"]) as task:
            call_api(task.token)

    verifier = SyncCredentialVerifier.from_jwks_url(url, issuer=..., audience="payments-api")
    credential = verifier.verify(token, peer_certificate=der)

Each object owns one daemon thread running its loop; `close()` (or `with`) stops it. Calling
these from inside a running event loop is refused: use the async API there.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Collection, Coroutine
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from taskpass.client.client import TaskpassClient
from taskpass.client.models import TaskCredential
from taskpass.client.task_handle import TaskHandle
from taskpass.client.verifier import CredentialVerifier
from taskpass.client.workload_api import from_workload_api

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


class _LoopThread:
    """An event loop running forever on its own daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="taskpass-sync", daemon=True
        )
        self._thread.start()
        self._closed = False

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            work.close()
            raise RuntimeError("this synchronous taskpass object is closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop in this thread: blocking is fine
        else:
            work.close()
            raise RuntimeError(
                "the synchronous taskpass API was called from a running event loop, which it "
                "would block: use the async API (TaskpassClient, CredentialVerifier) there"
            )
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Blocking(Generic[S, P, T]):
    """`name = _Blocking(Async.name)`: the wrapper's method runs the async method on the loop."""

    def __init__(self, method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]]) -> None:
        self._method = method

    def __get__(self, wrapper: _Wrapper[S], owner: object = None) -> Callable[P, T]:
        method, target, runner = self._method, wrapper.target, wrapper.runner

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return runner.run(method(target, *args, **kwargs))

        call.__doc__ = method.__doc__
        return call


class _Wrapper(Generic[S]):
    def __init__(self, runner: _LoopThread, target: S) -> None:
        self.runner = runner
        self.target = target
        """The async object underneath; use it only from the wrapper's loop."""


async def _built(make: Callable[[], S | Awaitable[S]]) -> S:
    # Built on the loop thread: a gRPC aio channel belongs to the loop it was created on.
    made = make()
    return await made if inspect.isawaitable(made) else made


def _open(make: Callable[[], S | Awaitable[S]]) -> tuple[_LoopThread, S]:
    runner = _LoopThread()
    try:
        return runner, runner.run(_built(make))
    except BaseException:
        runner.close()
        raise


class SyncTaskHandle(_Wrapper[TaskHandle]):
    """`TaskHandle` as a blocking context manager: exchange on entry, CompleteTask on exit."""

    credential = _Blocking(TaskHandle.credential)
    complete = _Blocking(TaskHandle.complete)

    @property
    def current(self) -> TaskCredential:
        return self.target.current

    @property
    def token(self) -> str:
        return self.target.token

    @property
    def revoked_jtis(self) -> tuple[str, ...]:
        return self.target.revoked_jtis

    def __enter__(self) -> SyncTaskHandle:
        self.runner.run(self.target.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.runner.run(self.target.__aexit__(exc_type, exc, tb))


class _TaskMethod(Generic[P]):
    def __init__(self, method: Callable[Concatenate[TaskpassClient, P], TaskHandle]) -> None:
        self._method = method

    def __get__(
        self, wrapper: SyncTaskpassClient, owner: object = None
    ) -> Callable[P, SyncTaskHandle]:
        method = self._method

        def task(*args: P.args, **kwargs: P.kwargs) -> SyncTaskHandle:
            return SyncTaskHandle(wrapper.runner, method(wrapper.target, *args, **kwargs))

        task.__doc__ = method.__doc__
        return task


def _factory(
    make: Callable[P, TaskpassClient | Awaitable[TaskpassClient]],
) -> Callable[P, SyncTaskpassClient]:
    def build(*args: P.args, **kwargs: P.kwargs) -> SyncTaskpassClient:
        return SyncTaskpassClient(lambda: make(*args, **kwargs))

    build.__doc__ = make.__doc__
    return build


class SyncTaskpassClient(_Wrapper[TaskpassClient]):
    """`TaskpassClient` without `await`. Build with `from_files`, `with_jwt_svid` or
    `from_workload_api` (the same arguments as the async ones)."""

    exchange = _Blocking(TaskpassClient.exchange)
    complete_task = _Blocking(TaskpassClient.complete_task)
    introspect = _Blocking(TaskpassClient.introspect)
    jwks = _Blocking(TaskpassClient.jwks)
    task = _TaskMethod(TaskpassClient.task)

    def __init__(self, make: Callable[[], TaskpassClient | Awaitable[TaskpassClient]]) -> None:
        """`make` builds the async client; it runs on the private loop."""
        super().__init__(*_open(make))

    # The async factories, blocking: same arguments, a SyncTaskpassClient back.
    from_files = staticmethod(_factory(TaskpassClient.from_files))
    with_jwt_svid = staticmethod(_factory(TaskpassClient.with_jwt_svid))
    from_workload_api = staticmethod(_factory(from_workload_api))

    def close(self) -> None:
        try:
            self.runner.run(self.target.aclose())
        finally:
            self.runner.close()

    def __enter__(self) -> SyncTaskpassClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncCredentialVerifier(_Wrapper[CredentialVerifier]):
    """`CredentialVerifier` without `await`, for WSGI apps and other blocking code."""

    verify = _Blocking(CredentialVerifier.verify)
    refresh = _Blocking(CredentialVerifier.refresh)

    def __init__(self, make: Callable[[], CredentialVerifier]) -> None:
        super().__init__(*_open(make))

    @staticmethod
    def from_jwks_url(url: str, **options: Any) -> SyncCredentialVerifier:
        """See `CredentialVerifier.from_jwks_url`."""
        return SyncCredentialVerifier(lambda: CredentialVerifier.from_jwks_url(url, **options))

    @staticmethod
    def for_issuer(
        issuer: str, *, audience: str | Collection[str], **options: Any
    ) -> SyncCredentialVerifier:
        """See `CredentialVerifier.for_issuer`."""
        return SyncCredentialVerifier(
            lambda: CredentialVerifier.for_issuer(issuer, audience=audience, **options)
        )

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> SyncCredentialVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
