from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ConfigError
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.pki.builder import Issued
from tests.support.pki import TestPki


@pytest.fixture(scope="module")
def corp_ca(pki: TestPki) -> Issued:
    return pki.ca("corp workload CA")


@pytest.fixture
def verifier(corp_ca: Issued, clock: FixedClock, tmp_path: Path) -> MappedCertVerifier:
    ca_file = tmp_path / "corp-ca.pem"
    ca_file.write_bytes(corp_ca.pem)
    rules = [
        CertMappingRule(
            issuer_ca=ca_file, dns_san="payments.corp.example", identity="corp:payments"
        ),
        CertMappingRule(issuer_ca=corp_ca.cert, subject_cn="batch-runner", identity="corp:batch"),
    ]
    return MappedCertVerifier(rules, clock)


def test_mapped_by_dns_san(pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier) -> None:
    cert = pki.client_cert(corp_ca, dns_sans=("Payments.corp.example",))

    workload = verifier.verify([cert.der])

    assert workload.id == "corp:payments"
    assert workload.method is AttestationMethod.MTLS_CERT
    assert workload.trust_domain == ""
    assert workload.path == ""
    assert workload.cert_thumbprint
    assert workload.expires_at == cert.cert.not_valid_after_utc


def test_mapped_by_subject_cn(pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier) -> None:
    cert = pki.client_cert(corp_ca, common_name="batch-runner")

    assert verifier.verify_pem(cert.pem).id == "corp:batch"


def test_mapped_cert_is_cached(pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier) -> None:
    cert = pki.client_cert(corp_ca, common_name="batch-runner")

    assert verifier.verify_pem(cert.pem) is verifier.verify_pem(cert.pem)


def test_unmatched_certificate_is_rejected(
    pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp_ca, dns_sans=("unknown.corp.example",), common_name="nobody")

    with pytest.raises(AttestationFailed, match="no certificate mapping rule") as caught:
        verifier.verify([cert.der])
    assert caught.value.rule == "M-2"


def test_wrong_issuer_is_rejected_even_when_names_match(
    pki: TestPki, verifier: MappedCertVerifier
) -> None:
    impostor_ca = pki.ca("corp workload CA")  # same name, different key
    cert = pki.client_cert(impostor_ca, dns_sans=("payments.corp.example",))

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify([cert.der])
    assert caught.value.rule == "M-1"


def test_expired_certificate_is_rejected(pki: TestPki, corp_ca: Issued, tmp_path: Path) -> None:
    rules = [CertMappingRule(issuer_ca=corp_ca.cert, subject_cn="batch-runner", identity="b")]
    verifier = MappedCertVerifier(rules, FixedClock(pki.now + dt.timedelta(days=3)))
    cert = pki.client_cert(corp_ca, common_name="batch-runner")

    with pytest.raises(AttestationFailed, match="expired") as caught:
        verifier.verify([cert.der])
    assert caught.value.rule == "M-1"


def test_ca_certificate_is_not_a_client(
    pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier
) -> None:
    cert = pki.client_cert(corp_ca, common_name="batch-runner", ca=True)

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify([cert.der])
    assert caught.value.rule == "M-3"


def test_ambiguous_subject_with_two_cns_never_matches(
    pki: TestPki, corp_ca: Issued, verifier: MappedCertVerifier
) -> None:
    cn = NameOID.COMMON_NAME
    subject = x509.Name(
        [x509.NameAttribute(cn, "batch-runner"), x509.NameAttribute(cn, "payments-admin")]
    )
    cert = pki.client_cert(corp_ca, subject=subject)

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify([cert.der])
    assert caught.value.rule == "M-2"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"identity": "corp:x"}, "dns_san or subject_cn", id="no-matcher"),
        pytest.param(
            {"identity": "spiffe://example.org/admin", "subject_cn": "x"},
            "looks like a SPIFFE ID",
            id="identity-impersonates-spiffe",
        ),
        pytest.param({"identity": "", "subject_cn": "x"}, "1..2048", id="empty-identity"),
        pytest.param({"identity": "a b", "subject_cn": "x"}, "spaces", id="identity-with-space"),
    ],
)
def test_bad_rules_are_config_errors(corp_ca: Issued, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CertMappingRule(issuer_ca=corp_ca.cert, **kwargs)


def test_unreadable_issuer_file_is_a_config_error(clock: FixedClock, tmp_path: Path) -> None:
    rule = CertMappingRule(issuer_ca=tmp_path / "missing.pem", subject_cn="x", identity="corp:x")

    with pytest.raises(ConfigError, match=r"missing\.pem"):
        MappedCertVerifier([rule], clock)


def test_no_rules_is_a_config_error(clock: FixedClock) -> None:
    with pytest.raises(ConfigError, match="no rules"):
        MappedCertVerifier([], clock)
