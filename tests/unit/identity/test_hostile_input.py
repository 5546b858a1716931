"""Property tests: whatever bytes or tokens a caller sends, attestation fails cleanly or succeeds.

Any other exception would surface as an INTERNAL error, which the design forbids.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.identity.x509_svid import X509SvidVerifier
from tests.support.pki import AUDIENCE, NOW, TestPki

BILLING = "spiffe://example.org/agents/billing-bot"


@pytest.fixture(scope="module")
def module_bundles(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> TrustBundles:
    return TrustBundles(pki.write_bundles(tmp_path_factory.mktemp("bundles")))


@pytest.fixture(scope="module")
def chain(pki: TestPki) -> list[bytes]:
    return pki.chain_der(pki.leaf(BILLING, via_intermediate=True), pki.example.intermediate)


@given(
    index=st.integers(min_value=0, max_value=1),
    position=st.integers(min_value=0),
    value=st.integers(min_value=0, max_value=255),
)
@settings(max_examples=300, deadline=None)
def test_X0_corrupted_chain_bytes_never_escape_as_another_error(
    module_bundles: TrustBundles, chain: list[bytes], index: int, position: int, value: int
) -> None:
    corrupted = list(chain)
    der = bytearray(corrupted[index])
    der[position % len(der)] = value
    corrupted[index] = bytes(der)
    verifier = X509SvidVerifier(module_bundles, FixedClock(NOW))

    with contextlib.suppress(AttestationFailed):
        verifier.verify(corrupted)


@pytest.fixture(scope="module")
def mapped(pki: TestPki) -> tuple[MappedCertVerifier, bytes]:
    corp = pki.ca("corp CA")
    rule = CertMappingRule(issuer_ca=corp.cert, dns_san="a.corp.example", identity="corp:a")
    cert = pki.client_cert(corp, dns_sans=("a.corp.example",), common_name="a")
    return MappedCertVerifier([rule], FixedClock(NOW)), cert.der


@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
@settings(max_examples=300, deadline=None)
def test_M0_corrupted_mapped_cert_never_escapes_as_another_error(
    mapped: tuple[MappedCertVerifier, bytes], position: int, value: int
) -> None:
    verifier, der = mapped
    corrupted = bytearray(der)
    corrupted[position % len(der)] = value

    with contextlib.suppress(AttestationFailed):
        verifier.verify([bytes(corrupted)])


@given(blob=st.binary(max_size=2048))
@settings(max_examples=200, deadline=None)
def test_X0_random_bytes_and_pem_fail_attestation(
    module_bundles: TrustBundles, blob: bytes
) -> None:
    verifier = X509SvidVerifier(module_bundles, FixedClock(NOW))

    with pytest.raises(AttestationFailed):
        verifier.verify([blob])
    with pytest.raises(AttestationFailed):
        verifier.verify_pem(
            b"-----BEGIN CERTIFICATE-----\n" + blob + b"\n-----END CERTIFICATE-----\n"
        )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


# Plausible values mixed with junk, so generated tokens get past the early checks too.
_alg = st.sampled_from(["ES256", "RS256", "PS512", "none", "HS256", "EdDSA"]) | _json_values
_claim_value = st.sampled_from(
    [BILLING, "spiffe://other.org/x", "spiffe://EXAMPLE.org/a", AUDIENCE, [AUDIENCE], 2**40, 0]
)


@given(
    header=st.fixed_dictionaries(
        {"alg": _alg},
        optional={name: _json_values | st.just("JWT") for name in ["kid", "typ", "crit", "b64"]},
    ),
    claims=st.dictionaries(
        st.sampled_from(["sub", "aud", "exp", "nbf", "iat"]), _claim_value | _json_values
    ),
    signature=st.binary(max_size=80),
)
@settings(max_examples=300, deadline=None)
def test_J1_hostile_headers_and_claims_only_fail_attestation(
    module_bundles: TrustBundles,
    header: dict[str, object],
    claims: dict[str, object],
    signature: bytes,
) -> None:
    verifier = JwtSvidVerifier(module_bundles, AUDIENCE, FixedClock(NOW))

    with pytest.raises(AttestationFailed):
        verifier.verify(TestPki.raw_jws(header, claims, signature))


@given(token=st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_J1_random_text_only_fails_attestation(module_bundles: TrustBundles, token: str) -> None:
    verifier = JwtSvidVerifier(module_bundles, AUDIENCE, FixedClock(NOW))

    with pytest.raises(AttestationFailed):
        verifier.verify(token)
