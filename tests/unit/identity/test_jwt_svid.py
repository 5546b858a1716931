from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ErrorCode
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.pki.builder import private_key_pem
from taskpass.server.pki.devpki import spiffe_bundle_json
from tests.support.pki import AUDIENCE, TestPki

BILLING = "spiffe://example.org/agents/billing-bot"
LEEWAY = dt.timedelta(seconds=30)


@pytest.fixture
def verifier(bundles: TrustBundles, clock: FixedClock) -> JwtSvidVerifier:
    return JwtSvidVerifier(bundles, AUDIENCE, clock, LEEWAY)


def rule_of(verifier: JwtSvidVerifier, token: str) -> str:
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(token)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value.rule


def _claims(pki: TestPki, **extra: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": BILLING,
        "aud": [AUDIENCE],
        "exp": int((pki.now + dt.timedelta(minutes=5)).timestamp()),
    }
    claims.update(extra)
    return claims


# --- passing cases ---------------------------------------------------------------------------


def test_valid_jwt_svid_yields_a_workload(pki: TestPki, verifier: JwtSvidVerifier) -> None:
    workload = verifier.verify(pki.jwt(BILLING))

    assert workload.id == BILLING
    assert workload.trust_domain == "example.org"
    assert workload.method is AttestationMethod.JWT_SVID
    assert workload.cert_thumbprint is None
    assert workload.expires_at == pki.now + dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"audience": AUDIENCE}, id="J-7-aud-as-string"),
        pytest.param({"audience": ["other-api", AUDIENCE]}, id="J-7-aud-list-with-ours"),
        pytest.param({"header": {"typ": "JOSE"}}, id="J-5-typ-JOSE"),
        pytest.param({"ttl": -LEEWAY + dt.timedelta(seconds=1)}, id="J-8-expired-within-leeway"),
    ],
)
def test_acceptable_variants_pass(
    pki: TestPki, verifier: JwtSvidVerifier, knobs: dict[str, object]
) -> None:
    assert verifier.verify(pki.jwt(BILLING, **knobs)).id == BILLING  # type: ignore[arg-type]


def test_J5_typ_absent_passes(pki: TestPki, verifier: JwtSvidVerifier) -> None:
    token = _resign(pki, {"alg": "ES256", "kid": pki.example.jwt_kid}, _claims(pki))

    assert verifier.verify(token).id == BILLING


def test_J9_token_of_the_second_trust_domain_verifies_with_its_own_key(
    pki: TestPki, verifier: JwtSvidVerifier
) -> None:
    assert verifier.verify(pki.jwt("spiffe://other.org/agents/x")).trust_domain == "other.org"


# --- failing cases ---------------------------------------------------------------------------

TokenFactory = Callable[[TestPki], str]


def _resign(pki: TestPki, header: dict[str, object], claims: dict[str, object]) -> str:
    """Sign arbitrary header/claims with example.org's real JWT key."""
    key = ECKey.import_key(private_key_pem(pki.example.jwt_key))
    registry = jws.JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    return jws.serialize_compact(header, json.dumps(claims), key, registry=registry)


def _hs256_with_public_key(pki: TestPki) -> str:
    header = {"alg": "HS256", "kid": pki.example.jwt_kid, "typ": "JWT"}
    return pki.hs256_jws(header, _claims(pki), pki.jwt_public_pem())


@pytest.mark.parametrize(
    ("make_token", "rule"),
    [
        pytest.param(lambda pki: "", "J-1", id="J-1-empty"),
        pytest.param(lambda pki: "a.b", "J-1", id="J-1-two-parts"),
        pytest.param(lambda pki: "a.b.c.d.e", "J-1", id="J-1-jwe-five-parts"),
        pytest.param(
            lambda pki: json.dumps({"payload": "e30", "signatures": []}),
            "J-1",
            id="J-1-json-serialization",
        ),
        pytest.param(lambda pki: "!!!.e30.c2ln", "J-1", id="J-1-not-base64url"),
        pytest.param(lambda pki: "bm90anNvbg.e30.c2ln", "J-1", id="J-1-header-not-json"),
        pytest.param(
            lambda pki: pki.raw_jws({"alg": "ES256"}, ["not", "an", "object"], b"sig"),
            "J-1",
            id="J-1-claims-not-an-object",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"pad": "x" * 9000}), "J-1", id="J-1-oversized"
        ),
        pytest.param(
            lambda pki: pki.raw_jws({"alg": "none"}, _claims(pki), b""), "J-2", id="J-2-alg-none"
        ),
        pytest.param(_hs256_with_public_key, "J-2", id="J-2-hs256-public-key-as-secret"),
        pytest.param(
            lambda pki: pki.raw_jws({"kid": "k"}, _claims(pki), b"sig"), "J-2", id="J-2-no-alg"
        ),
        pytest.param(
            lambda pki: pki.raw_jws({"alg": "EdDSA"}, _claims(pki), b"sig"),
            "J-2",
            id="J-2-alg-not-allowed",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, header={"x5u": "https://evil.example/key"}),
            "J-3",
            id="J-3-extra-header-x5u",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, header={"jwk": {"kty": "EC"}}),
            "J-3",
            id="J-3-embedded-jwk",
        ),
        pytest.param(
            lambda pki: pki.raw_jws(
                {"alg": "ES256", "b64": False, "crit": ["b64"]}, _claims(pki), b"s"
            ),
            "J-3",
            id="J-3-crit-b64",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, header={"typ": "at+jwt"}), "J-5", id="J-5-wrong-typ"
        ),
        pytest.param(
            lambda pki: pki.raw_jws({"alg": "ES256", "typ": ["JWT"]}, _claims(pki), b"sig"),
            "J-5",
            id="J-5-typ-not-a-string",
        ),
        pytest.param(lambda pki: pki.jwt(BILLING, omit=("sub",)), "J-6", id="J-6-no-sub"),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"sub": "billing-bot"}), "J-6", id="J-6-not-spiffe"
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"sub": "spiffe://EXAMPLE.org/a"}),
            "J-6",
            id="J-6-upper-case-trust-domain",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"sub": "spiffe://example.org"}),
            "J-6",
            id="J-6-root-id",
        ),
        pytest.param(lambda pki: pki.jwt(BILLING, omit=("aud",)), "J-7", id="J-7-no-aud"),
        pytest.param(
            lambda pki: pki.jwt(BILLING, audience="someone-else"), "J-7", id="J-7-wrong-audience"
        ),
        pytest.param(lambda pki: pki.jwt(BILLING, claims={"aud": 7}), "J-7", id="J-7-aud-number"),
        pytest.param(lambda pki: pki.jwt(BILLING, omit=("exp",)), "J-8", id="J-8-no-exp"),
        pytest.param(
            lambda pki: pki.jwt(BILLING, ttl=-dt.timedelta(minutes=1)), "J-8", id="J-8-expired"
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"exp": "tomorrow"}), "J-8", id="J-8-exp-not-number"
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, claims={"exp": 10**20}), "J-8", id="J-8-exp-out-of-range"
        ),
        pytest.param(
            lambda pki: pki.jwt(
                BILLING, claims={"nbf": int((pki.now + dt.timedelta(minutes=2)).timestamp())}
            ),
            "J-8",
            id="J-8-not-yet-valid",
        ),
        pytest.param(lambda pki: pki.jwt(BILLING, kid="unknown-kid"), "J-9", id="J-9-unknown-kid"),
        pytest.param(
            lambda pki: _resign(pki, {"alg": "ES256", "typ": "JWT"}, _claims(pki)),
            "J-9",
            id="J-9-no-kid",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, signer="other.org"),
            "J-9",
            id="J-9-signed-by-other-trust-domain-key",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING, signer="other.org", kid=pki.example.jwt_kid),
            "J-9",
            id="J-9-other-key-claiming-our-kid",
        ),
        pytest.param(
            lambda pki: pki.jwt("spiffe://third.org/agents/x", signer="example.org"),
            "J-9",
            id="J-9-trust-domain-without-jwt-bundle",
        ),
        pytest.param(
            lambda pki: pki.raw_jws(
                {"alg": "RS256", "kid": pki.example.jwt_kid}, _claims(pki), b"\x00" * 256
            ),
            "J-9",
            id="J-9-alg-does-not-fit-key",
        ),
        pytest.param(
            lambda pki: pki.jwt(BILLING).rsplit(".", 1)[0] + ".",
            "J-9",
            id="J-9-empty-signature",
        ),
    ],
)
def test_violations_are_rejected_naming_the_rule(
    pki: TestPki, verifier: JwtSvidVerifier, make_token: TokenFactory, rule: str
) -> None:
    assert rule_of(verifier, make_token(pki)) == rule


def test_J9_tampered_claims_fail_the_signature(pki: TestPki, verifier: JwtSvidVerifier) -> None:
    header, _, signature = pki.jwt(BILLING).split(".")
    forged = json.dumps(_claims(pki, sub="spiffe://example.org/security/admin")).encode()
    body = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()

    assert rule_of(verifier, f"{header}.{body}.{signature}") == "J-9"


def test_J9_rsa_signed_token_verifies_with_an_rsa_authority(
    pki: TestPki, clock: FixedClock, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bundle = tmp_path / "rsa.json"
    bundle.write_bytes(spiffe_bundle_json(x509_authorities=[], jwt_keys={"rsa-1": private}))
    verifier = JwtSvidVerifier(TrustBundles({"example.org": [bundle]}), AUDIENCE, clock)
    key = RSAKey.import_key(private_key_pem(private))
    token = jwt.encode({"alg": "PS256", "kid": "rsa-1"}, _claims(pki), key, algorithms=["PS256"])

    assert verifier.verify(token).id == BILLING


def test_error_messages_never_contain_the_token(pki: TestPki, verifier: JwtSvidVerifier) -> None:
    token = pki.jwt(BILLING, audience="someone-else")

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(token)

    assert token not in caught.value.message
    assert token.split(".")[2] not in caught.value.message


def test_leeway_must_not_be_negative(bundles: TrustBundles, clock: FixedClock) -> None:
    with pytest.raises(ValueError, match="leeway"):
        JwtSvidVerifier(bundles, AUDIENCE, clock, -dt.timedelta(seconds=1))
