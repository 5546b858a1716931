"""CredentialVerifier's memory of tokens whose signature checked out (cache_size): the same
credential on its holder's next call skips the JOSE checks, never the claims, binding or
revocation, and never outlives the key object that verified it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jws

from taskpass.client.errors import InvalidRequest
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import SigningKey
from tests.unit.client.conftest import CountingJwks
from tests.unit.client.factories import (
    AGENT_CERT,
    AUDIENCE,
    ISSUER,
    OTHER_CERT,
    claims,
    jwks,
    mint,
    signing_key,
)


class SignatureChecks:
    """Counts joserfc's signature checks (the work the cache saves)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real: Callable[..., bool] = jws.validate_compact

        def counting(*args: Any, **kwargs: Any) -> bool:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jws, "validate_compact", counting)  # as _jws.py calls it


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> SignatureChecks:
    return SignatureChecks(monkeypatch)


@pytest.fixture
def source(key: SigningKey) -> CountingJwks:
    return CountingJwks(jwks(key))


def verifier(source: CountingJwks, clock: FixedClock, **options: Any) -> CredentialVerifier:
    return CredentialVerifier(source, issuer=ISSUER, audience=AUDIENCE, clock=clock, **options)


async def verify(verifier: CredentialVerifier, token: str, peer: bytes = AGENT_CERT.der) -> str:
    return (await verifier.verify(token, peer_certificate=peer)).jti


async def refused(verifier: CredentialVerifier, token: str, peer: bytes = AGENT_CERT.der) -> Reason:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token, peer_certificate=peer)
    return info.value.reason


async def test_the_same_token_again_skips_the_signature_check(
    source: CountingJwks, clock: FixedClock, key: SigningKey, checks: SignatureChecks
) -> None:
    cached = verifier(source, clock)
    token = mint(key)

    assert [await verify(cached, token) for _ in range(3)] == ["jti-1"] * 3
    assert checks.count == 1


async def test_without_a_cache_every_call_checks_the_signature(
    source: CountingJwks, clock: FixedClock, key: SigningKey, checks: SignatureChecks
) -> None:
    uncached = verifier(source, clock, cache_size=0)
    token = mint(key)

    await verify(uncached, token)
    await verify(uncached, token)
    assert checks.count == 2


async def test_a_remembered_token_still_expires(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    cached = verifier(source, clock)
    token = mint(key)
    await verify(cached, token)

    clock.advance(dt.timedelta(minutes=10, seconds=6))  # past exp and the 5 s leeway
    assert await refused(cached, token) is Reason.EXPIRED


async def test_a_remembered_token_is_still_bound_to_its_callers_certificate(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    cached = verifier(source, clock)
    token = mint(key)
    await verify(cached, token)

    assert await refused(cached, token, OTHER_CERT.der) is Reason.CERTIFICATE_MISMATCH


async def test_a_remembered_token_revoked_since_is_refused(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    revoked: set[str] = set()
    cached = verifier(source, clock, revocation=_Revoked(revoked))
    token = mint(key)
    await verify(cached, token)

    revoked.add("jti-1")
    assert await refused(cached, token) is Reason.REVOKED


async def test_a_token_whose_key_was_unpublished_is_refused_after_the_next_key_refresh(
    source: CountingJwks, clock: FixedClock, key: SigningKey, checks: SignatureChecks
) -> None:
    cached = verifier(source, clock)
    token = mint(key)
    await verify(cached, token)

    source.document = jwks(signing_key())  # the issuer pulled the key (compromised, say)
    clock.advance(dt.timedelta(minutes=5))  # the keys' max_age: the next lookup refetches
    assert await refused(cached, token) is Reason.UNKNOWN_KEY
    assert checks.count == 1  # refused at the kid, before any signature check


async def test_a_key_refresh_sends_a_remembered_token_through_every_check_again(
    source: CountingJwks, clock: FixedClock, key: SigningKey, checks: SignatureChecks
) -> None:
    cached = verifier(source, clock)
    token = mint(key, body=claims(ttl=dt.timedelta(minutes=30)))
    await verify(cached, token)

    clock.advance(dt.timedelta(minutes=5))  # same keys, fetched anew: new key objects
    await verify(cached, token)
    await verify(cached, token)
    assert source.fetches == 2
    assert checks.count == 2


async def test_the_least_recently_used_token_is_forgotten_first(
    source: CountingJwks, clock: FixedClock, key: SigningKey, checks: SignatureChecks
) -> None:
    cached = verifier(source, clock, cache_size=2)
    a, b, c = (mint(key, body=claims(jti=jti)) for jti in ("a", "b", "c"))
    for token in (a, b, a, c):  # c pushes out b, used less recently than a
        await verify(cached, token)
    assert checks.count == 3

    await verify(cached, a)
    await verify(cached, c)
    assert checks.count == 3
    await verify(cached, b)
    assert checks.count == 4


async def test_each_call_gets_claims_of_its_own(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    cached = verifier(source, clock)
    token = mint(key)
    first = await cached.verify(token, peer_certificate=AGENT_CERT.der)
    first.claims["task"]["action"] = "write"  # what a caller holding the dicts could do

    again = await cached.verify(token, peer_certificate=AGENT_CERT.der)
    assert again.claims is not first.claims
    assert again.claims["task"]["action"] == "read"


async def test_a_forged_copy_of_a_remembered_token_is_still_refused(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    cached = verifier(source, clock)
    token = mint(key)
    await verify(cached, token)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    assert await refused(cached, forged) is Reason.BAD_SIGNATURE


def test_a_negative_cache_size_is_refused(source: CountingJwks, clock: FixedClock) -> None:
    with pytest.raises(InvalidRequest, match="cache_size"):
        verifier(source, clock, cache_size=-1)


class _Revoked:
    def __init__(self, jtis: set[str]) -> None:
        self._jtis = jtis

    def is_revoked(self, jti: str) -> bool:
        return jti in self._jtis


async def test_a_token_forgotten_while_its_key_is_fetched_still_verifies(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    cached = verifier(source, clock, cache_size=1)
    token = mint(key)
    await verify(cached, token)
    clock.advance(dt.timedelta(minutes=5))  # the next lookup fetches the keys again
    fetching = source.fetch

    async def fetch_while_another_call_fills_the_cache() -> Any:
        source.fetch = fetching  # type: ignore[method-assign]
        await verify(cached, mint(key, body=claims(jti="other", now=clock.now())))
        return await fetching()

    source.fetch = fetch_while_another_call_fills_the_cache  # type: ignore[method-assign]
    assert await verify(cached, token) == "jti-1"
