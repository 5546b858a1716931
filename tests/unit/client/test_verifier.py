from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from taskpass.client.errors import InvalidRequest, Unavailable
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason
from taskpass.server.clock import FixedClock
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.issuer.jws import b64url, header_segment, json_segment, sign_segments
from taskpass.server.issuer.keys import KeyRing, SigningKey
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor
from tests.support.pki import NOW, TestPki
from tests.unit.client.conftest import CountingJwks
from tests.unit.client.factories import (
    AGENT,
    AGENT_CERT,
    AUDIENCE,
    BINDING,
    ISSUER,
    OTHER_CERT,
    claims,
    jwks,
    mint,
    signing_key,
)


class RevokedSet:
    def __init__(self, *jtis: str) -> None:
        self.revoked = set(jtis)
        self.asked: list[str] = []

    def is_revoked(self, jti: str) -> bool:
        self.asked.append(jti)
        return jti in self.revoked


@pytest.fixture
def source(key: SigningKey) -> CountingJwks:
    return CountingJwks(jwks(key))


@pytest.fixture
def verifier(source: CountingJwks, clock: FixedClock) -> CredentialVerifier:
    return CredentialVerifier(source, issuer=ISSUER, audience=AUDIENCE, clock=clock)


async def refused(
    verifier: CredentialVerifier, token: str, *, peer: Any = AGENT_CERT.der
) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token, peer_certificate=peer)
    assert not token or token not in info.value.message
    return info.value


async def test_a_credential_verifies_against_the_certificate_its_caller_presented(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    credential = await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    assert credential.subject == credential.client_id == AGENT
    assert credential.audience == (AUDIENCE,)
    assert credential.scopes == ("payments:read", "payments:list")
    assert credential.has_scope("payments:read")
    assert not credential.has_scope("payments:write")
    assert credential.task_id == "task-42"
    assert credential.task["action"] == "read"
    assert credential.bound_to == BINDING
    assert credential.kid == key.kid
    assert credential.expires_at == NOW + dt.timedelta(minutes=10)
    assert credential.claims["jti"] == "jti-1"


async def test_a_token_the_real_issuer_signed_verifies(tmp_path: Path, clock: FixedClock) -> None:
    ring = KeyRing.load_or_create(tmp_path / "keys", algorithm="ES256", clock=clock)
    issuer = TokenIssuer(issuer=ISSUER, keys=ring, clock=clock)
    issued = issuer.issue(
        workload=Workload(
            id=AGENT,
            method=AttestationMethod.X509_SVID,
            trust_domain="example.org",
            expires_at=NOW + dt.timedelta(hours=1),
            cert_thumbprint=BINDING,
        ),
        task=TaskDescriptor(
            task_id="t-1",
            audience=AUDIENCE,
            action="read",
            sensitivity=Sensitivity.INTERNAL,
            requested_ttl=dt.timedelta(minutes=5),
        ),
        decision=Decision(
            outcome=Outcome.ALLOW,
            policy_version="sha256:x",
            matched_rules=("r",),
            ttl=dt.timedelta(minutes=5),
            scopes=("payments:read",),
        ),
    )
    verifier = CredentialVerifier(
        CountingJwks(ring.jwks()), issuer=ISSUER, audience=AUDIENCE, clock=clock
    )
    credential = await verifier.verify(issued.token, peer_certificate=AGENT_CERT.der)
    assert credential.jti == issued.jti
    assert credential.task_id == "t-1"


@pytest.mark.parametrize(
    "peer",
    [
        AGENT_CERT.der,
        AGENT_CERT.pem,
        AGENT_CERT.pem.decode(),
        x509.load_der_x509_certificate(AGENT_CERT.der),
        AGENT_CERT.pem + OTHER_CERT.pem,
    ],
    ids=["der", "pem-bytes", "pem-text", "x509-object", "pem-chain-leaf-first"],
)
async def test_the_peer_certificate_may_be_der_pem_or_a_certificate_object(
    verifier: CredentialVerifier, key: SigningKey, peer: Any
) -> None:
    credential = await verifier.verify(mint(key), peer_certificate=peer)
    assert credential.bound_to == BINDING


@pytest.mark.parametrize(
    "peer",
    ["-----BEGIN CERTIFICATE-----\n!!", b"-----BEGIN CERTIFICATE-----\n!!", "MIIB...base64"],
    ids=["broken-pem-text", "broken-pem-bytes", "text-not-pem"],
)
async def test_a_peer_certificate_that_is_not_pem_is_a_bad_request(
    verifier: CredentialVerifier, key: SigningKey, peer: str | bytes
) -> None:
    with pytest.raises(InvalidRequest, match="not a PEM certificate"):
        await verifier.verify(mint(key), peer_certificate=peer)


def _swap_payload(key: SigningKey) -> str:
    header, _, signature = mint(key).split(".")
    forged = json_segment(claims(sub="spiffe://example.org/agents/admin")).decode()
    return f"{header}.{forged}.{signature}"


def _other_key_same_kid(key: SigningKey) -> str:
    impostor = signing_key()
    return sign_segments(
        impostor, header_segment("ES256", key.kid, "at+jwt"), json_segment(claims())
    )


def _ed25519_signature_under_es256_header(_: SigningKey) -> str:
    # the Ed25519 key is published too (see the test); only the header lies about the alg
    return sign_segments(
        ED_KEY, header_segment("ES256", ED_KEY.kid, "at+jwt"), json_segment(claims())
    )


ED_KEY = signing_key("EdDSA")
Minter = Callable[[SigningKey], str]

REFUSALS: list[tuple[str, Minter, Reason]] = [
    ("empty", lambda k: "", Reason.MALFORMED),
    ("not-a-jws", lambda k: "not.a.jwt", Reason.MALFORMED),
    ("two-segments", lambda k: mint(k).rsplit(".", 1)[0], Reason.MALFORMED),
    ("oversized", lambda k: "a" * 20_000, Reason.MALFORMED),
    ("non-ascii", lambda k: mint(k) + "é", Reason.MALFORMED),
    ("payload-not-json", lambda k: _payload_bytes(k, b"not json"), Reason.MALFORMED),
    ("payload-a-list", lambda k: _payload_bytes(k, b"[1]"), Reason.MALFORMED),
    ("typ-jwt", lambda k: mint(k, typ="JWT"), Reason.WRONG_TYPE),
    ("typ-secevent", lambda k: mint(k, typ="secevent+jwt"), Reason.WRONG_TYPE),
    ("typ-empty", lambda k: mint(k, typ=""), Reason.WRONG_TYPE),
    (
        "alg-none",
        lambda k: TestPki.raw_jws({"alg": "none", "typ": "at+jwt", "kid": k.kid}, claims(), b""),
        Reason.ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg-hs256-with-the-public-key",
        lambda k: TestPki.hs256_jws(
            {"alg": "HS256", "typ": "at+jwt", "kid": k.kid}, claims(), str(k.public_jwk()).encode()
        ),
        Reason.ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg-es384",
        lambda k: TestPki.raw_jws({"alg": "ES384", "typ": "at+jwt", "kid": k.kid}, claims(), b"x"),
        Reason.ALGORITHM_NOT_ALLOWED,
    ),
    ("no-kid", lambda k: _no_kid(k), Reason.MALFORMED),
    ("forged-payload", _swap_payload, Reason.BAD_SIGNATURE),
    ("other-key-same-kid", _other_key_same_kid, Reason.BAD_SIGNATURE),
    ("key-does-not-fit-alg", _ed25519_signature_under_es256_header, Reason.BAD_SIGNATURE),
    (
        "wrong-issuer",
        lambda k: mint(k, body=claims(iss="https://evil.example")),
        Reason.WRONG_ISSUER,
    ),
    ("issuer-not-a-string", lambda k: mint(k, body=claims(iss=7)), Reason.WRONG_ISSUER),
    ("wrong-audience", lambda k: mint(k, body=claims(aud="billing-api")), Reason.WRONG_AUDIENCE),
    (
        "audience-list-without-ours",
        lambda k: mint(k, body=claims(aud=["billing-api", "reports-api"])),
        Reason.WRONG_AUDIENCE,
    ),
    (
        "expired",
        lambda k: mint(k, body=claims(now=NOW - dt.timedelta(minutes=11))),
        Reason.EXPIRED,
    ),
    (
        "nbf-in-the-future",
        lambda k: mint(k, body=claims(nbf=int(NOW.timestamp()) + 60)),
        Reason.NOT_YET_VALID,
    ),
    (
        "issued-in-the-future",
        lambda k: mint(k, body=claims(now=NOW + dt.timedelta(seconds=60))),
        Reason.NOT_YET_VALID,
    ),
    ("no-client-id", lambda k: mint(k, body=claims(omit=["client_id"])), Reason.MISSING_CLAIM),
    ("no-exp", lambda k: mint(k, body=claims(omit=["exp"])), Reason.MISSING_CLAIM),
    ("no-jti", lambda k: mint(k, body=claims(omit=["jti"])), Reason.MISSING_CLAIM),
    ("exp-a-string", lambda k: mint(k, body=claims(exp="tomorrow")), Reason.INVALID_CLAIM),
    ("jti-a-number", lambda k: mint(k, body=claims(jti=7)), Reason.INVALID_CLAIM),
    ("client-id-a-list", lambda k: mint(k, body=claims(client_id=["a"])), Reason.INVALID_CLAIM),
    ("scope-a-list", lambda k: mint(k, body=claims(scope=["a"])), Reason.INVALID_CLAIM),
    (
        "cnf-without-x5t",
        lambda k: mint(k, body=claims(cnf={"jkt": "abc"})),
        Reason.CERTIFICATE_MISMATCH,
    ),
]


def _payload_bytes(key: SigningKey, payload: bytes) -> str:
    return sign_segments(key, header_segment("ES256", key.kid, "at+jwt"), b64url(payload))


def _no_kid(key: SigningKey) -> str:
    return sign_segments(
        key, json_segment({"typ": "at+jwt", "alg": "ES256"}), json_segment(claims())
    )


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in REFUSALS], ids=[i for i, _, _ in REFUSALS]
)
async def test_a_bad_token_is_refused_with_its_reason(
    clock: FixedClock, key: SigningKey, make: Minter, reason: Reason
) -> None:
    verifier = CredentialVerifier(
        CountingJwks(jwks(key, ED_KEY)), issuer=ISSUER, audience=AUDIENCE, clock=clock
    )
    error = await refused(verifier, make(key))
    assert error.reason is reason
    assert error.details == {"reason": reason.value}


async def test_the_typ_may_be_the_full_media_type_in_any_case(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    credential = await verifier.verify(
        mint(key, typ="Application/AT+JWT"), peer_certificate=AGENT_CERT.der
    )
    assert credential.subject == AGENT


async def test_an_audience_list_holding_ours_is_accepted(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    token = mint(key, body=claims(aud=["billing-api", AUDIENCE]))
    credential = await verifier.verify(token, peer_certificate=AGENT_CERT.der)
    assert credential.audience == ("billing-api", AUDIENCE)


async def test_a_verifier_may_serve_several_audiences(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    verifier = CredentialVerifier(
        source, issuer=ISSUER, audience=["billing-api", AUDIENCE], clock=clock
    )
    credential = await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    assert credential.audience == (AUDIENCE,)


@pytest.mark.parametrize(
    ("expired_for", "accepted"),
    [(dt.timedelta(seconds=4), True), (dt.timedelta(seconds=5), False)],
    ids=["within-leeway", "at-leeway"],
)
async def test_expiry_allows_a_small_leeway(
    verifier: CredentialVerifier,
    key: SigningKey,
    clock: FixedClock,
    expired_for: dt.timedelta,
    accepted: bool,
) -> None:
    token = mint(key)
    clock.advance(dt.timedelta(minutes=10) + expired_for)
    if accepted:
        await verifier.verify(token, peer_certificate=AGENT_CERT.der)
    else:
        assert (await refused(verifier, token)).reason is Reason.EXPIRED


async def test_a_token_replayed_by_another_workload_fails_the_certificate_binding(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    error = await refused(verifier, mint(key), peer=OTHER_CERT.der)
    assert error.reason is Reason.CERTIFICATE_MISMATCH
    assert "replayed" in error.message


async def test_a_bound_token_without_the_callers_certificate_is_refused(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    error = await refused(verifier, mint(key), peer=None)
    assert error.reason is Reason.CERTIFICATE_REQUIRED


async def test_bearer_tokens_are_refused_unless_the_verifier_accepts_them(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    bearer = mint(key, body=claims(bound=False))
    strict = CredentialVerifier(source, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert (await refused(strict, bearer, peer=None)).reason is Reason.NOT_BOUND
    lenient = CredentialVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, require_binding=False
    )
    credential = await lenient.verify(bearer)
    assert credential.bound_to is None


async def test_a_bound_token_is_checked_even_when_bearer_tokens_are_accepted(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    verifier = CredentialVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, require_binding=False
    )
    error = await refused(verifier, mint(key), peer=OTHER_CERT.der)
    assert error.reason is Reason.CERTIFICATE_MISMATCH


async def test_a_revoked_credential_is_refused(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    revocations = RevokedSet("jti-1")
    verifier = CredentialVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, revocation=revocations
    )
    assert (await refused(verifier, mint(key))).reason is Reason.REVOKED
    other = mint(key, body=claims(jti="jti-2"))
    assert (await verifier.verify(other, peer_certificate=AGENT_CERT.der)).jti == "jti-2"
    assert revocations.asked == ["jti-1", "jti-2"]


async def test_the_revocation_checker_is_asked_only_about_otherwise_valid_tokens(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    revocations = RevokedSet()
    verifier = CredentialVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, revocation=revocations
    )
    await refused(verifier, _swap_payload(key))
    await refused(verifier, mint(key), peer=OTHER_CERT.der)
    assert revocations.asked == []


async def test_a_checker_that_knows_tasks_is_asked_with_the_tokens_claims(
    source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    class CompletedTasks:
        def __init__(self) -> None:
            self.asked: list[tuple[object, object]] = []

        def is_revoked(self, jti: str) -> bool:
            raise AssertionError("is_token_revoked is preferred when a checker has both")

        def is_token_revoked(self, claims: Mapping[str, Any]) -> bool:
            self.asked.append((claims["sub"], claims["txn"]))
            return bool(claims["txn"] == "task-42")

    checker = CompletedTasks()
    verifier = CredentialVerifier(
        source, issuer=ISSUER, audience=AUDIENCE, clock=clock, revocation=checker
    )
    assert (await refused(verifier, mint(key))).reason is Reason.REVOKED
    await verifier.verify(mint(key, body=claims(txn="task-43")), peer_certificate=AGENT_CERT.der)
    assert checker.asked == [(AGENT, "task-42"), (AGENT, "task-43")]


async def test_an_eddsa_credential_verifies_without_a_warning(clock: FixedClock) -> None:
    verifier = CredentialVerifier(
        CountingJwks(jwks(ED_KEY)), issuer=ISSUER, audience=AUDIENCE, clock=clock
    )
    credential = await verifier.verify(mint(ED_KEY), peer_certificate=AGENT_CERT.der)
    assert credential.kid == ED_KEY.kid


async def test_a_narrowed_allow_list_refuses_the_other_algorithm(clock: FixedClock) -> None:
    verifier = CredentialVerifier(
        CountingJwks(jwks(ED_KEY)),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=clock,
        algorithms=["ES256"],
    )
    assert (await refused(verifier, mint(ED_KEY))).reason is Reason.ALGORITHM_NOT_ALLOWED


# --- keys: cache, unknown kid, cooldown ------------------------------------------------------


async def test_an_unknown_kid_triggers_one_refetch_and_then_waits_for_the_cooldown(
    verifier: CredentialVerifier, source: CountingJwks, clock: FixedClock, key: SigningKey
) -> None:
    await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    token = mint(signing_key())
    assert (await refused(verifier, token)).reason is Reason.UNKNOWN_KEY
    assert source.fetches == 2  # the first fetch, and one refetch for the unknown kid
    for _ in range(3):
        await refused(verifier, token)
    assert source.fetches == 2
    clock.advance(dt.timedelta(seconds=30))
    await refused(verifier, token)
    assert source.fetches == 3


async def test_on_a_cold_cache_an_unknown_kid_costs_one_fetch_not_two(
    verifier: CredentialVerifier, source: CountingJwks
) -> None:
    assert (await refused(verifier, mint(signing_key()))).reason is Reason.UNKNOWN_KEY
    assert source.fetches == 1


async def test_a_key_published_after_the_first_fetch_is_found_by_the_refetch(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey
) -> None:
    await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    rotated = signing_key()
    source.document = jwks(key, rotated)
    credential = await verifier.verify(mint(rotated), peer_certificate=AGENT_CERT.der)
    assert credential.kid == rotated.kid
    assert source.fetches == 2


async def test_keys_are_refetched_once_they_are_older_than_max_age(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey, clock: FixedClock
) -> None:
    await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    clock.advance(dt.timedelta(minutes=4))
    await verifier.verify(mint(key, body=claims(now=clock.now())), peer_certificate=AGENT_CERT.der)
    assert source.fetches == 1
    clock.advance(dt.timedelta(minutes=1))
    await verifier.verify(mint(key, body=claims(now=clock.now())), peer_certificate=AGENT_CERT.der)
    assert source.fetches == 2


async def test_a_failed_refresh_keeps_the_keys_already_fetched(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey, clock: FixedClock
) -> None:
    await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    source.fail = True
    clock.advance(dt.timedelta(minutes=6))
    token = mint(key, body=claims(now=clock.now()))
    assert (await verifier.verify(token, peer_certificate=AGENT_CERT.der)).kid == key.kid
    assert source.fetches == 2
    with pytest.raises(Unavailable):
        await verifier.refresh()  # an explicit refresh says it failed


async def test_no_keys_at_all_is_unavailable_rather_than_an_invalid_token(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey
) -> None:
    source.fail = True
    with pytest.raises(Unavailable, match="test JWKS is down"):
        await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)


async def test_while_the_first_fetch_keeps_failing_it_is_retried_once_per_cooldown(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey, clock: FixedClock
) -> None:
    source.fail = True
    for _ in range(100):
        with pytest.raises(Unavailable, match="test JWKS is down"):
            await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    assert source.fetches == 1  # not one fetch per token
    clock.advance(dt.timedelta(seconds=30))
    source.fail = False
    await verifier.verify(mint(key, body=claims(now=clock.now())), peer_certificate=AGENT_CERT.der)
    assert source.fetches == 2


async def test_an_explicit_refresh_fetches_even_within_the_cooldown(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey
) -> None:
    source.fail = True
    with pytest.raises(Unavailable):
        await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    source.fail = False
    await verifier.refresh()  # an operator's or a startup check's "try now"
    assert source.fetches == 2
    await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)


async def test_a_malformed_jwks_entry_does_not_break_verification(
    source: CountingJwks, verifier: CredentialVerifier, key: SigningKey
) -> None:
    source.document = {"keys": [{"kid": "junk", "kty": "EC", "crv": []}, key.public_jwk()]}
    credential = await verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    assert credential.kid == key.kid


async def test_concurrent_verifications_share_one_fetch(
    verifier: CredentialVerifier, source: CountingJwks, key: SigningKey
) -> None:
    token = mint(key)
    results = await asyncio.gather(
        *(verifier.verify(token, peer_certificate=AGENT_CERT.der) for _ in range(10))
    )
    assert {r.jti for r in results} == {"jti-1"}
    assert source.fetches == 1


@pytest.mark.parametrize(
    "options",
    [
        {"issuer": ""},
        {"audience": ""},
        {"audience": []},
        {"algorithms": ["HS256"]},
        {"algorithms": []},
        {"leeway": dt.timedelta(hours=1)},
    ],
    ids=["no-issuer", "empty-audience", "no-audience", "hs256", "no-algorithms", "huge-leeway"],
)
def test_a_misconfigured_verifier_is_refused_at_construction(
    source: CountingJwks, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequest):
        CredentialVerifier(source, **{"issuer": ISSUER, "audience": AUDIENCE, **options})


@pytest.mark.parametrize(
    "issuer", ["https://taskpass.example.org", "https://taskpass.example.org/"], ids=["", "slash"]
)
def test_for_issuer_reads_the_keys_taskpass_publishes_under_its_issuer_url(issuer: str) -> None:
    verifier = CredentialVerifier.for_issuer(issuer, audience=AUDIENCE)
    assert verifier.keys.source.name == "https://taskpass.example.org/.well-known/jwks.json"


# Claim values RFC 7519 rules out, which only a signing key's holder could have put in a token.
ODD_CLAIMS: list[tuple[str, dict[str, Any], Reason]] = [
    ("audience-list-with-a-non-string", {"aud": [AUDIENCE, 7]}, Reason.WRONG_AUDIENCE),
    ("audience-empty-list", {"aud": []}, Reason.WRONG_AUDIENCE),
    ("issuer-empty", {"iss": ""}, Reason.WRONG_ISSUER),
    ("exp-nan", {"exp": float("nan")}, Reason.INVALID_CLAIM),
    ("exp-true", {"exp": True}, Reason.INVALID_CLAIM),
    ("exp-infinite", {"exp": float("inf")}, Reason.INVALID_CLAIM),
    ("sub-empty", {"sub": ""}, Reason.INVALID_CLAIM),
    ("jti-empty", {"jti": ""}, Reason.INVALID_CLAIM),
    ("nbf-a-string", {"nbf": "soon"}, Reason.NOT_YET_VALID),
    ("iat-true", {"iat": True}, Reason.NOT_YET_VALID),
    ("iss-null", {"iss": None}, Reason.MISSING_CLAIM),
]


@pytest.mark.parametrize(
    ("changes", "reason"), [(c, r) for _, c, r in ODD_CLAIMS], ids=[i for i, _, _ in ODD_CLAIMS]
)
async def test_claim_values_outside_rfc_7519_are_refused_with_their_reason(
    verifier: CredentialVerifier, key: SigningKey, changes: dict[str, Any], reason: Reason
) -> None:
    # json.dumps, not the issuer's encoder, which refuses NaN and infinities as it should
    payload = json.dumps({**claims(), **changes}).encode()
    assert (await refused(verifier, _payload_bytes(key, payload))).reason is reason


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param("exp", 10**12, id="exp-after-year-9999"),
        pytest.param("exp", 1e300, id="exp-a-huge-float"),
        pytest.param("iat", -(10**13), id="iat-before-year-1"),
        pytest.param("nbf", -(10**13), id="nbf-before-year-1"),
    ],
)
async def test_a_numeric_date_no_datetime_can_hold_is_an_invalid_claim_naming_it(
    verifier: CredentialVerifier, key: SigningKey, claim: str, value: float
) -> None:
    # Signed, so only the key's holder could send it; it passed the time checks, then crashed.
    body = {**claims(), claim: value}
    error = await refused(verifier, mint(key, body=body))
    assert error.reason is Reason.INVALID_CLAIM
    assert f"the token's {claim} " in error.message


async def test_a_float_exp_in_the_future_is_a_valid_numeric_date(
    verifier: CredentialVerifier, key: SigningKey
) -> None:
    exp = (NOW + dt.timedelta(minutes=5)).timestamp() + 0.5
    credential = await verifier.verify(
        mint(key, body=claims(exp=exp)), peer_certificate=AGENT_CERT.der
    )
    assert credential.jti == "jti-1"


async def test_missing_claims_are_all_named(verifier: CredentialVerifier, key: SigningKey) -> None:
    error = await refused(verifier, mint(key, body=claims(omit=["sub", "exp", "aud"])))
    assert error.reason is Reason.MISSING_CLAIM
    assert error.message == "the token lacks required claims (aud,exp,sub)"
