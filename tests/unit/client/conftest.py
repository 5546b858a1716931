from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

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


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return signing_key()
