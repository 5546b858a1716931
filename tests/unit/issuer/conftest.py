from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import Algorithm, KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from tests.unit.issuer.factories import ISSUER, START, RingFactory


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def make_ring(key_dir: Path, clock: FixedClock) -> RingFactory:
    def make(
        algorithm: Algorithm = "ES256",
        expiry_reservation: dt.timedelta = dt.timedelta(0),
    ) -> KeyRing:
        return KeyRing.load_or_create(
            key_dir, algorithm=algorithm, clock=clock, expiry_reservation=expiry_reservation
        )

    return make


@pytest.fixture
def ring(make_ring: RingFactory) -> KeyRing:
    return make_ring()


@pytest.fixture
def issuer(ring: KeyRing, clock: FixedClock) -> TokenIssuer:
    return TokenIssuer(issuer=ISSUER, keys=ring, clock=clock)
