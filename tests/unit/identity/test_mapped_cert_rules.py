"""Mapped mTLS workload certificates, rule by rule (M-0..M-3 in mapped_cert.py): each refusal
names its rule and says what is wrong; the certificates just inside each rule are accepted."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ErrorCode
from taskpass.server.identity.chain import MAX_PRESENTED_CERTS
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.pki.builder import Issued, Usage
from tests.support.pki import TestPki

CN = "batch-runner"
DNS = "payments.corp.example"
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


@dataclass(frozen=True, slots=True)
class CorpPki:
    root: Issued
    intermediate: Issued
    """Signed by `root`, pathLen=0."""
    issuer_name: str
    """How messages name `root`: its subject, RFC 4514."""


@pytest.fixture(scope="module")
def corp(pki: TestPki) -> CorpPki:
    root = pki.ca("corp rules CA")
    intermediate = pki.ca("corp rules intermediate", root, path_length=0)
    return CorpPki(root, intermediate, root.cert.subject.rfc4514_string())


@pytest.fixture
def verifier(corp: CorpPki, clock: FixedClock) -> MappedCertVerifier:
    rules = [
        CertMappingRule(issuer_ca=corp.root.cert, subject_cn=CN, identity="corp:batch"),
        CertMappingRule(issuer_ca=corp.root.cert, dns_san=DNS, identity="corp:payments"),
    ]
    return MappedCertVerifier(rules, clock)


def refusal(verifier: MappedCertVerifier, chain: list[bytes]) -> AttestationFailed:
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(chain)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value


# --- M-3: the leaf must be a client end-entity certificate -----------------------------------


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        pytest.param({"ca": True}, "the client certificate is a CA (cA=true)", id="M-3-ca-true"),
        pytest.param(
            {"key_usage": frozenset({Usage.KEY_ENCIPHERMENT})},
            "the client certificate lacks digitalSignature",
            id="M-3-no-digital-signature",
        ),
        pytest.param(
            {"extended_key_usage": (SERVER_AUTH,)},
            "the client certificate's EKU excludes clientAuth",
            id="M-3-eku-server-auth-only",
        ),
    ],
)
def test_M3_leaf_that_is_not_a_client_certificate_is_refused(
    pki: TestPki,
    corp: CorpPki,
    verifier: MappedCertVerifier,
    knobs: dict[str, Any],
    message: str,
) -> None:
    cert = pki.client_cert(corp.root, common_name=CN, **knobs)

    error = refusal(verifier, [cert.der])

    assert error.rule == "M-3"
    assert error.message == f"attestation failed [M-3]: {message}"


def test_M3_is_checked_before_the_names_so_an_unmapped_server_cert_still_says_M3(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp.root, common_name="nobody", extended_key_usage=(SERVER_AUTH,))

    assert refusal(verifier, [cert.der]).rule == "M-3"


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"extended_key_usage": (SERVER_AUTH, CLIENT_AUTH)}, id="eku-both"),
        pytest.param({"extended_key_usage": None}, id="no-eku"),
        pytest.param(
            {"key_usage": frozenset({Usage.DIGITAL_SIGNATURE, Usage.KEY_ENCIPHERMENT})},
            id="digital-signature-and-key-encipherment",
        ),
        pytest.param({"ca": None}, id="no-basic-constraints"),
    ],
)
def test_M3_client_certificates_inside_the_rule_are_accepted(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier, knobs: dict[str, Any]
) -> None:
    cert = pki.client_cert(corp.root, common_name=CN, **knobs)

    assert verifier.verify([cert.der]).id == "corp:batch"


# --- M-2: the certificate's names must match a rule ------------------------------------------


def test_M2_rule_with_dns_san_and_cn_needs_both(
    pki: TestPki, corp: CorpPki, clock: FixedClock
) -> None:
    rule = CertMappingRule(issuer_ca=corp.root.cert, dns_san=DNS, subject_cn=CN, identity="c:b")
    verifier = MappedCertVerifier([rule], clock)
    dns_only = pki.client_cert(corp.root, dns_sans=(DNS,), common_name="someone-else")

    error = refusal(verifier, [dns_only.der])

    assert error.rule == "M-2"
    assert error.message == (
        "attestation failed [M-2]: no certificate mapping rule matches the certificate's DNS SANs "
        "or subject CN; ask the security team to add a rule for this workload"
    )
    both = pki.client_cert(corp.root, dns_sans=(DNS,), common_name=CN)
    assert verifier.verify([both.der]).id == "c:b"


def test_M2_cn_rule_is_not_matched_by_a_dns_san_of_that_name(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp.root, dns_sans=(CN,), common_name="not-it")

    assert refusal(verifier, [cert.der]).rule == "M-2"


# --- M-1: the chain must validate to the rule's issuer CA ------------------------------------


def test_M1_chain_through_an_intermediate_is_accepted(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp.intermediate, dns_sans=(DNS,))

    assert verifier.verify(pki.chain_der(cert, corp.intermediate)).id == "corp:payments"


def test_M1_certificate_from_another_ca_is_refused_naming_the_rules_issuer(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(pki.ca("corp rules CA"), common_name=CN)  # same name, other key

    error = refusal(verifier, [cert.der])

    assert error.rule == "M-1"
    assert error.message == (
        "attestation failed [M-1]: the certificate chain does not validate to a CA in the "
        f"mapping rule's issuer CA ({corp.issuer_name}) (unknown issuer, bad signature, or a "
        "missing intermediate)"
    )


def test_M1_not_yet_valid_certificate_is_refused(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    starts = pki.now + dt.timedelta(hours=1)
    cert = pki.client_cert(corp.root, common_name=CN, not_before=starts)

    error = refusal(verifier, [cert.der])

    assert error.rule == "M-1"
    assert error.message == (
        f"attestation failed [M-1]: the client certificate is not valid until "
        f"{starts.isoformat()} (now {pki.now.isoformat()}); check the issuer's clock"
    )


def test_M1_expired_certificate_is_refused_with_its_expiry(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    ended = pki.now - dt.timedelta(seconds=1)
    cert = pki.client_cert(corp.root, common_name=CN, not_after=ended)

    error = refusal(verifier, [cert.der])

    assert error.rule == "M-1"
    assert error.message == (
        f"attestation failed [M-1]: the client certificate expired at {ended.isoformat()}; "
        "fetch a fresh one"
    )


def test_M1_expired_intermediate_is_refused(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    old = pki.ca("corp old intermediate", corp.root, not_after=pki.now - dt.timedelta(hours=1))
    cert = pki.client_cert(old, common_name=CN)

    error = refusal(verifier, pki.chain_der(cert, old))

    assert error.rule == "M-1"
    assert error.message == (
        "attestation failed [M-1]: a CA certificate in the chain to the mapping rule's issuer "
        f"CA ({corp.issuer_name}) is expired or not yet valid"
    )


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"key_usage": frozenset({Usage.DIGITAL_SIGNATURE})}, id="no-keyCertSign"),
        pytest.param({"ca": False}, id="cA-false"),
    ],
)
def test_M1_intermediate_that_may_not_sign_is_refused(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier, knobs: dict[str, Any]
) -> None:
    weak = pki.ca("corp weak intermediate", corp.root, **knobs)
    cert = pki.client_cert(weak, common_name=CN)

    error = refusal(verifier, pki.chain_der(cert, weak))

    assert error.rule == "M-1"
    assert error.message == (
        "attestation failed [M-1]: a CA in the chain lacks cA=true or keyUsage keyCertSign"
    )


def test_M1_intermediate_path_length_is_enforced(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    # corp.intermediate has pathLen=0: the CA below it may not sign anything.
    below = pki.ca("corp too deep", corp.intermediate)
    cert = pki.client_cert(below, common_name=CN)

    error = refusal(verifier, pki.chain_der(cert, below, corp.intermediate))

    assert error.rule == "M-1"
    assert error.message == (
        "attestation failed [M-1]: a CA's pathLen constraint is exceeded: too many "
        "intermediates below it"
    )


def test_M1_the_rule_whose_issuer_validates_wins_among_matching_rules(
    pki: TestPki, corp: CorpPki, clock: FixedClock
) -> None:
    decoy = pki.ca("corp decoy CA")
    rules = [
        CertMappingRule(issuer_ca=decoy.cert, subject_cn=CN, identity="corp:decoy"),
        CertMappingRule(issuer_ca=corp.root.cert, subject_cn=CN, identity="corp:batch"),
    ]
    verifier = MappedCertVerifier(rules, clock)

    assert verifier.verify([pki.client_cert(corp.root, common_name=CN).der]).id == "corp:batch"
    assert verifier.verify([pki.client_cert(decoy, common_name=CN).der]).id == "corp:decoy"


# --- M-0: malformed or oversized input -------------------------------------------------------


def test_M0_no_certificate_is_refused(verifier: MappedCertVerifier) -> None:
    error = refusal(verifier, [])

    assert error.rule == "M-0"
    assert error.message == "attestation failed [M-0]: no client certificate was presented"


def test_M0_bytes_that_are_not_der_are_refused(verifier: MappedCertVerifier) -> None:
    error = refusal(verifier, [b"\x30\x03\x02\x01\x00"])

    assert error.rule == "M-0"
    assert error.message == (
        "attestation failed [M-0]: certificate #1 could not be parsed as DER X.509"
    )


def test_M0_more_than_max_presented_certificates_are_refused(
    pki: TestPki, corp: CorpPki, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp.intermediate, common_name=CN)

    error = refusal(verifier, pki.chain_der(cert, *[corp.intermediate] * MAX_PRESENTED_CERTS))

    assert error.rule == "M-0"
    assert error.message == (
        f"attestation failed [M-0]: {MAX_PRESENTED_CERTS + 1} certificates presented; at most "
        f"{MAX_PRESENTED_CERTS} accepted"
    )


def test_M0_garbage_pem_is_refused(verifier: MappedCertVerifier) -> None:
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")

    assert caught.value.rule == "M-0"
    assert caught.value.message == (
        "attestation failed [M-0]: the client certificate PEM could not be parsed"
    )
