"""The size limits on presented chains (taskpass.server.identity.chain): chain depth, bytes per
certificate, certificates per chain. Each is refused with its rule id and a fixed message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ErrorCode
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.chain import MAX_CERT_BYTES, MAX_CHAIN_DEPTH, MAX_PRESENTED_CERTS
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.identity.workload import Workload
from taskpass.server.identity.x509_svid import X509SvidVerifier
from taskpass.server.pki.builder import Issued
from tests.support.pki import EXAMPLE, TestPki

BILLING = f"spiffe://{EXAMPLE}/agents/billing-bot"
PADDING_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")


@pytest.fixture
def verifier(bundles: TrustBundles, clock: FixedClock) -> X509SvidVerifier:
    return X509SvidVerifier(bundles, clock)


def refusal(verify: Callable[..., Workload], *args: object) -> AttestationFailed:
    with pytest.raises(AttestationFailed) as caught:
        verify(*args)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value


def padding(size: int) -> list[tuple[x509.ExtensionType, bool]]:
    """A non-critical private extension of `size` bytes: makes a certificate as large as asked."""
    return [(x509.UnrecognizedExtension(PADDING_OID, b"A" * size), False)]


def intermediates_below_root(pki: TestPki, count: int) -> list[Issued]:
    """`count` CAs below example.org's root, none with a pathLen limit; nearest the leaf first."""
    issuer = pki.example.root
    chain: list[Issued] = []
    for depth in range(count):
        issuer = pki.ca(f"depth {depth + 1} CA", issuer, trust_domain=EXAMPLE)
        chain.insert(0, issuer)
    return chain


# --- chain depth -----------------------------------------------------------------------------


def test_X9_chain_of_max_depth_intermediates_is_accepted(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    intermediates = intermediates_below_root(pki, MAX_CHAIN_DEPTH)
    leaf = pki.leaf(BILLING, issuer=intermediates[0])

    assert verifier.verify(pki.chain_der(leaf, *intermediates)).id == BILLING


def test_X9_chain_deeper_than_max_depth_is_refused(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    # No CA sets pathLen, so only the depth limit stands between this chain and a workload.
    intermediates = intermediates_below_root(pki, MAX_CHAIN_DEPTH + 1)
    leaf = pki.leaf(BILLING, issuer=intermediates[0])

    error = refusal(verifier.verify, pki.chain_der(leaf, *intermediates))

    assert error.rule == "X-9"
    assert error.message == (
        f"attestation failed [X-9]: the chain to the trust bundle of example.org has more than "
        f"{MAX_CHAIN_DEPTH} intermediate CAs; at most {MAX_CHAIN_DEPTH} are accepted"
    )


# --- bytes per certificate -------------------------------------------------------------------


def test_X0_certificate_just_under_max_cert_bytes_is_accepted(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, extra_extensions=padding(MAX_CERT_BYTES - 1024))
    assert len(leaf.der) <= MAX_CERT_BYTES

    assert verifier.verify(pki.chain_der(leaf)).id == BILLING


def test_X0_leaf_larger_than_max_cert_bytes_is_refused(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, extra_extensions=padding(MAX_CERT_BYTES))
    assert len(leaf.der) > MAX_CERT_BYTES

    error = refusal(verifier.verify, pki.chain_der(leaf))

    assert error.rule == "X-0"
    assert error.message == "attestation failed [X-0]: certificate #1 is not DER of a sane size"


def test_X0_intermediate_larger_than_max_cert_bytes_is_refused_naming_it(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    root = pki.example.root
    fat = pki.ca("fat CA", root, trust_domain=EXAMPLE, extra_extensions=padding(MAX_CERT_BYTES))
    leaf = pki.leaf(BILLING, issuer=fat)

    error = refusal(verifier.verify, pki.chain_der(leaf, fat))

    assert error.rule == "X-0"
    assert error.message == "attestation failed [X-0]: certificate #2 is not DER of a sane size"


def test_X0_pem_leaf_larger_than_max_cert_bytes_is_refused(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, extra_extensions=padding(MAX_CERT_BYTES))

    error = refusal(verifier.verify_pem, leaf.pem)

    assert error.message == "attestation failed [X-0]: certificate #1 is not DER of a sane size"


# --- certificates per chain ------------------------------------------------------------------


def test_X0_more_than_max_presented_certificates_are_refused(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)
    chain = pki.chain_der(leaf, *[pki.example.intermediate] * MAX_PRESENTED_CERTS)

    error = refusal(verifier.verify, chain)

    assert error.rule == "X-0"
    assert error.message == (
        f"attestation failed [X-0]: {MAX_PRESENTED_CERTS + 1} certificates presented; at most "
        f"{MAX_PRESENTED_CERTS} accepted"
    )


def test_X0_pem_chain_of_more_than_max_presented_certificates_is_refused(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)
    others = [pki.ca(f"spare CA {n}", trust_domain=EXAMPLE) for n in range(MAX_PRESENTED_CERTS)]

    error = refusal(verifier.verify_pem, leaf.pem, pki.chain_pem(leaf, *others))

    assert error.rule == "X-0"
    assert error.message == (
        f"attestation failed [X-0]: {MAX_PRESENTED_CERTS + 1} certificates presented; at most "
        f"{MAX_PRESENTED_CERTS} accepted"
    )


# --- the same limits on mapped (non-SPIFFE) certificates -------------------------------------


@pytest.fixture(scope="module")
def corp_ca(pki: TestPki) -> Issued:
    return pki.ca("corp limits CA")


@pytest.fixture
def mapped(corp_ca: Issued, clock: FixedClock) -> MappedCertVerifier:
    rule = CertMappingRule(issuer_ca=corp_ca.cert, subject_cn="batch-runner", identity="corp:b")
    return MappedCertVerifier([rule], clock)


def test_M0_mapped_certificate_larger_than_max_cert_bytes_is_refused(
    pki: TestPki, corp_ca: Issued, mapped: MappedCertVerifier
) -> None:
    cert = pki.client_cert(
        corp_ca, common_name="batch-runner", extra_extensions=padding(MAX_CERT_BYTES)
    )

    error = refusal(mapped.verify, [cert.der])

    assert error.rule == "M-0"
    assert error.message == "attestation failed [M-0]: certificate #1 is not DER of a sane size"


def test_M0_pem_mapped_certificate_larger_than_max_cert_bytes_is_refused(
    pki: TestPki, corp_ca: Issued, mapped: MappedCertVerifier
) -> None:
    cert = pki.client_cert(
        corp_ca, common_name="batch-runner", extra_extensions=padding(MAX_CERT_BYTES)
    )

    error = refusal(mapped.verify_pem, cert.pem)

    assert error.message == "attestation failed [M-0]: certificate #1 is not DER of a sane size"


def test_M1_mapped_chain_deeper_than_max_depth_is_refused(pki: TestPki, clock: FixedClock) -> None:
    corp_root = pki.ca("corp deep root")
    issuer = corp_root
    intermediates: list[Issued] = []
    for depth in range(MAX_CHAIN_DEPTH + 1):
        issuer = pki.ca(f"corp depth {depth + 1} CA", issuer)
        intermediates.insert(0, issuer)
    rule = CertMappingRule(issuer_ca=corp_root.cert, subject_cn="batch-runner", identity="corp:b")
    verifier = MappedCertVerifier([rule], clock)
    cert = pki.client_cert(intermediates[0], common_name="batch-runner")

    error = refusal(verifier.verify, pki.chain_der(cert, *intermediates))

    assert error.rule == "M-1"
    assert f"has more than {MAX_CHAIN_DEPTH} intermediate CAs" in error.message
    # One intermediate fewer is within the limit, so the refusal above is the depth limit's.
    shallower = pki.client_cert(intermediates[1], common_name="batch-runner")
    assert verifier.verify(pki.chain_der(shallower, *intermediates[1:])).id == "corp:b"
