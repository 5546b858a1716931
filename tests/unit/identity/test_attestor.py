from __future__ import annotations

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.attestor import Attestor
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.identity.x509_svid import X509SvidVerifier
from taskpass.server.pki.builder import Issued
from tests.support.pki import AUDIENCE, TestPki

BILLING = "spiffe://example.org/agents/billing-bot"


@pytest.fixture(scope="module")
def corp_ca(pki: TestPki) -> Issued:
    return pki.ca("corp CA")


def make_attestor(
    bundles: TrustBundles,
    clock: FixedClock,
    *,
    jwt: bool = True,
    mapped_ca: Issued | None = None,
) -> Attestor:
    mapped = None
    if mapped_ca is not None:
        rule = CertMappingRule(
            issuer_ca=mapped_ca.cert, subject_cn="legacy", identity="corp:legacy"
        )
        mapped = MappedCertVerifier([rule], clock)
    return Attestor(
        X509SvidVerifier(bundles, clock),
        JwtSvidVerifier(bundles, AUDIENCE, clock) if jwt else None,
        mapped,
    )


def test_svid_peer_certificate_is_attested(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock, corp_ca: Issued
) -> None:
    attestor = make_attestor(bundles, clock, mapped_ca=corp_ca)
    leaf = pki.leaf(BILLING, via_intermediate=True)

    workload = attestor.attest_peer_certificate(leaf.pem, pki.chain_pem(pki.example.intermediate))

    assert workload.method is AttestationMethod.X509_SVID
    assert workload.id == BILLING


def test_non_spiffe_cert_is_mapped_when_mapping_is_enabled(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock, corp_ca: Issued
) -> None:
    attestor = make_attestor(bundles, clock, mapped_ca=corp_ca)
    cert = pki.client_cert(corp_ca, common_name="legacy")

    workload = attestor.attest_peer_certificate(cert.pem, None)

    assert workload.method is AttestationMethod.MTLS_CERT
    assert workload.id == "corp:legacy"


def test_X1_non_spiffe_cert_is_rejected_when_mapping_is_off(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock, corp_ca: Issued
) -> None:
    attestor = make_attestor(bundles, clock)
    cert = pki.client_cert(corp_ca, common_name="legacy")

    with pytest.raises(AttestationFailed) as caught:
        attestor.attest_peer_certificate(cert.pem, None)
    assert caught.value.rule == "X-1"


@pytest.mark.parametrize(
    ("knobs", "rule"),
    [
        pytest.param(
            {"uri_sans": ("spiffe://EXAMPLE.org/a",), "trust_domain": "example.org"},
            "X-2",
            id="X-2-invalid-spiffe-id-is-not-mapped",
        ),
        pytest.param({"ca": True}, "X-3", id="X-3-bad-svid-is-not-mapped"),
    ],
)
def test_failing_svid_is_never_handed_to_the_mapper(
    pki: TestPki,
    bundles: TrustBundles,
    clock: FixedClock,
    corp_ca: Issued,
    knobs: dict[str, object],
    rule: str,
) -> None:
    attestor = make_attestor(bundles, clock, mapped_ca=corp_ca)
    leaf = pki.leaf(BILLING, common_name="legacy", **knobs)  # type: ignore[arg-type]

    with pytest.raises(AttestationFailed) as caught:
        attestor.attest_peer_certificate(leaf.pem, None)
    assert caught.value.rule == rule


def test_bearer_jwt_svid_is_attested(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    attestor = make_attestor(bundles, clock)

    workload = attestor.attest_bearer(f"Bearer {pki.jwt(BILLING)}")

    assert workload.method is AttestationMethod.JWT_SVID
    assert workload.id == BILLING


def test_bearer_scheme_is_case_insensitive(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    attestor = make_attestor(bundles, clock)

    assert attestor.attest_bearer(f"bearer {pki.jwt(BILLING)}").id == BILLING


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="J-0-basic-auth"),
        pytest.param("Bearer ", id="J-0-empty-token"),
        pytest.param("", id="J-0-empty-header"),
        pytest.param("Bearertoken", id="J-0-no-space"),
    ],
)
def test_non_bearer_authorization_is_rejected(
    bundles: TrustBundles, clock: FixedClock, header: str
) -> None:
    with pytest.raises(AttestationFailed) as caught:
        make_attestor(bundles, clock).attest_bearer(header)
    assert caught.value.rule == "J-0"


def test_bearer_is_rejected_when_jwt_svids_are_disabled(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    attestor = make_attestor(bundles, clock, jwt=False)

    with pytest.raises(AttestationFailed, match="not enabled") as caught:
        attestor.attest_bearer(f"Bearer {pki.jwt(BILLING)}")
    assert caught.value.rule == "J-0"


def test_bearer_token_failures_keep_their_rule(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    attestor = make_attestor(bundles, clock)

    with pytest.raises(AttestationFailed) as caught:
        attestor.attest_bearer(f"Bearer {pki.jwt(BILLING, audience='elsewhere')}")
    assert caught.value.rule == "J-7"
