from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import grpc
import pytest

from taskpass.client import TaskpassClient
from taskpass.client.errors import Unavailable
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import SigningKey
from tests.support.pki import NOW
from tests.unit.client.factories import signing_key


class CountingJwks:
    """A JWKS source whose document tests change, counting fetches; `fail` makes fetches fail."""

    name = "a test JWKS"

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        self.fail = False

    async def fetch(self) -> Mapping[str, Any]:
        self.fetches += 1
        if self.fail:
            raise Unavailable("the test JWKS is down")
        return self.document


class FakeChannel:
    """Stands in for a grpc.aio.Channel (the SDK's injectable transport): each method a test
    names, by its full name ("/taskpass.v1.CredentialService/GetJwks"), is answered by its handler
    (request -> what the call returns); calling any other fails the test."""

    def __init__(self, handlers: Mapping[str, Callable[[Any], Any]]) -> None:
        self._handlers = handlers

    def _method(self, name: str, *_: Any, **__: Any) -> Callable[..., Any]:
        def call(request: Any, **_: Any) -> Any:
            if name not in self._handlers:
                raise AssertionError(f"the test did not expect a call to {name}")
            return self._handlers[name](request)

        return call

    unary_unary = unary_stream = stream_unary = stream_stream = _method

    def client(self) -> TaskpassClient:
        return TaskpassClient(cast("grpc.aio.Channel", self))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return signing_key()
