"""J-8: the leeway a JwtSvidVerifier is built with, and only that one, bends `exp` and `nbf`."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ErrorCode
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import DEFAULT_LEEWAY, JwtSvidVerifier
from tests.support.pki import AUDIENCE, TestPki

BILLING = "spiffe://example.org/agents/billing-bot"
SECOND = dt.timedelta(seconds=1)


def verifier_with(
    bundles: TrustBundles, clock: FixedClock, leeway: dt.timedelta
) -> JwtSvidVerifier:
    return JwtSvidVerifier(bundles, AUDIENCE, clock, leeway)


def test_J8_zero_leeway_refuses_a_token_expired_one_second_ago(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(0))
    token = pki.jwt(BILLING, ttl=-SECOND)

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(token)

    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    assert caught.value.rule == "J-8"
    expired_at = (pki.now - SECOND).isoformat()
    assert caught.value.message == (
        f"attestation failed [J-8]: the token expired at {expired_at}; fetch a fresh JWT-SVID"
    )


def test_J8_zero_leeway_accepts_a_token_expiring_this_instant(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(0))

    assert verifier.verify(pki.jwt(BILLING, ttl=dt.timedelta(0))).id == BILLING


@pytest.mark.parametrize(
    "expired_for",
    [
        pytest.param(dt.timedelta(seconds=30), id="expired-30s-ago"),
        # Beyond DEFAULT_LEEWAY: only a verifier honouring its own 60 s accepts this one.
        pytest.param(DEFAULT_LEEWAY + 29 * SECOND, id="expired-beyond-the-default-leeway"),
    ],
)
def test_J8_leeway_of_60s_accepts_a_token_expired_within_it(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock, expired_for: dt.timedelta
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(seconds=60))

    workload = verifier.verify(pki.jwt(BILLING, ttl=-expired_for))

    assert workload.id == BILLING
    assert workload.expires_at == pki.now - expired_for


def test_J8_leeway_of_60s_refuses_a_token_expired_61s_ago(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(seconds=60))

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(pki.jwt(BILLING, ttl=-61 * SECOND))

    assert caught.value.rule == "J-8"


def test_J8_zero_leeway_refuses_a_token_not_valid_for_another_second(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(0))
    not_before = pki.now + SECOND
    token = pki.jwt(BILLING, claims={"nbf": int(not_before.timestamp())})

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(token)

    assert caught.value.rule == "J-8"
    assert caught.value.message == (
        f"attestation failed [J-8]: the token is not valid before {not_before.isoformat()}"
    )


def test_J8_leeway_of_60s_accepts_a_token_valid_in_30s(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = verifier_with(bundles, clock, dt.timedelta(seconds=60))
    not_before = pki.now + dt.timedelta(seconds=30)
    token = pki.jwt(BILLING, claims={"nbf": int(not_before.timestamp())})

    assert verifier.verify(token).id == BILLING
