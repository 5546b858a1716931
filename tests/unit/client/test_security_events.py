"""Identity patterns as the watcher matches them: the same syntax as groups and policy; SETs
that are not even text."""

from __future__ import annotations

from typing import Any, cast

import pytest

from taskpass.client.errors import InvalidRequest
from taskpass.client.jwks import JwksCache
from taskpass.client.security_events import (
    RejectedEvent,
    RejectReason,
    SecurityEventVerifier,
    pattern_matches,
)
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import SigningKey
from tests.unit.client.conftest import CountingJwks
from tests.unit.client.factories import jwks

AGENTS = "spiffe://example.org/agents"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/a", True, id="exact"),
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/ab", False, id="exact-is-not-a-prefix"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a", True, id="one-segment"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a/b", False, id="one-segment-not-deeper"),
        pytest.param(f"{AGENTS}/*", AGENTS, False, id="one-segment-not-the-base"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}/a/b/c", True, id="any-depth"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}x/a", False, id="a-sibling-with-the-same-prefix"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}/a//b", False, id="an-empty-segment"),
        pytest.param("legacy-batch", "legacy-batch", True, id="mapped-identity"),
    ],
)
def test_a_pattern_covers_exactly_the_identities_it_names(
    pattern: str, subject: str, matches: bool
) -> None:
    assert pattern_matches(pattern, subject) is matches


@pytest.mark.parametrize("token", [b"a.b.c", None, 7], ids=["bytes", "none", "a-number"])
async def test_a_set_that_is_not_a_string_is_rejected_as_malformed_without_a_fetch(
    clock: FixedClock, key: SigningKey, token: object
) -> None:
    # As the credential verifier does; before the checks were shared, bytes raised AttributeError.
    source = CountingJwks(jwks(key))
    verifier = SecurityEventVerifier(JwksCache(source, algorithms=("ES256",), clock=clock))

    with pytest.raises(RejectedEvent) as rejected:
        await verifier.verify(cast("Any", token))

    assert rejected.value.reason is RejectReason.MALFORMED
    assert str(rejected.value) == (
        "revocation event rejected (malformed): a SET is a compact JWS of 1..16384 B"
    )
    assert source.fetches == 0


@pytest.mark.parametrize("algorithms", [(), ("HS256",), ("ES256", "none")], ids=str)
def test_an_allow_list_it_cannot_verify_with_is_refused_at_construction(
    clock: FixedClock, key: SigningKey, algorithms: tuple[str, ...]
) -> None:
    keys = JwksCache(CountingJwks(jwks(key)), algorithms=("ES256",), clock=clock)

    with pytest.raises(InvalidRequest, match="algorithms: choose from ES256, EdDSA"):
        SecurityEventVerifier(keys, algorithms=algorithms)
