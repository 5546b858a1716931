"""TokenVerifier: our own at+jwt only; expiry checked unless the caller explains it itself."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from tests.unit.issuer.factories import ISSUER, make_decision, make_task, make_workload


@pytest.fixture
def verifier(ring: KeyRing, clock: FixedClock) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, jwks=ring.jwks, clock=clock)


def test_an_expired_token_verifies_only_when_lifetime_is_not_checked(
    issuer: TokenIssuer, verifier: TokenVerifier, clock: FixedClock
) -> None:
    token = issuer.issue(workload=make_workload(), task=make_task(), decision=make_decision()).token
    clock.advance(dt.timedelta(hours=1))

    assert verifier.verify(token) is None
    claims = verifier.verify(token, check_lifetime=False)
    assert claims is not None
    assert claims["txn"] == "task-42"


def test_another_issuers_token_fails_even_without_the_lifetime_check(
    ring: KeyRing, clock: FixedClock, verifier: TokenVerifier
) -> None:
    other = TokenIssuer(issuer="https://someone.else", keys=ring, clock=clock)
    token = other.issue(workload=make_workload(), task=make_task(), decision=make_decision()).token

    assert verifier.verify(token, check_lifetime=False) is None
