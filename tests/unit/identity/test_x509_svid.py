from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from taskpass.server.clock import FixedClock
from taskpass.server.errors import AttestationFailed, ErrorCode
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.identity.x509_svid import X509SvidVerifier
from taskpass.server.pki.builder import Issued, Usage
from tests.support.pki import TestPki, replace_file

BILLING = "spiffe://example.org/agents/billing-bot"


@pytest.fixture
def verifier(bundles: TrustBundles, clock: FixedClock) -> X509SvidVerifier:
    return X509SvidVerifier(bundles, clock)


def rule_of(verifier: X509SvidVerifier, chain: list[bytes]) -> str:
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(chain)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED
    return caught.value.rule


# --- passing cases ---------------------------------------------------------------------------


def test_X9_svid_signed_by_its_trust_domain_root_is_accepted(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING)

    workload = verifier.verify(pki.chain_der(leaf))

    assert workload.id == BILLING
    assert workload.trust_domain == "example.org"
    assert workload.path == "/agents/billing-bot"
    assert workload.method is AttestationMethod.X509_SVID
    assert workload.expires_at == leaf.cert.not_valid_after_utc
    digest = hashlib.sha256(leaf.der).digest()
    assert workload.cert_thumbprint == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_X6_X9_leaf_plus_intermediate_chain_is_accepted(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)

    workload = verifier.verify(pki.chain_der(leaf, pki.example.intermediate))

    assert workload.id == BILLING


def test_X9_svid_of_the_second_trust_domain_is_accepted_with_its_own_bundle(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf("spiffe://other.org/agents/x")

    assert verifier.verify(pki.chain_der(leaf)).trust_domain == "other.org"


def test_X7_leaf_without_eku_is_accepted(pki: TestPki, verifier: X509SvidVerifier) -> None:
    leaf = pki.leaf(BILLING, extended_key_usage=None)

    assert verifier.verify(pki.chain_der(leaf)).id == BILLING


def test_X4_leaf_with_key_encipherment_besides_digital_signature_is_accepted(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, key_usage=frozenset({Usage.DIGITAL_SIGNATURE, Usage.KEY_ENCIPHERMENT}))

    assert verifier.verify(pki.chain_der(leaf)).id == BILLING


def test_X9_verify_pem_accepts_a_peer_chain_that_repeats_the_leaf(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)

    # grpc's x509_pem_cert_chain holds the whole peer chain, leaf included.
    workload = verifier.verify_pem(leaf.pem, pki.chain_pem(leaf, pki.example.intermediate))

    assert workload.id == BILLING


def test_X9_verify_pem_without_chain(pki: TestPki, verifier: X509SvidVerifier) -> None:
    leaf = pki.leaf(BILLING)

    assert verifier.verify_pem(leaf.pem, None).id == BILLING


# --- failing cases: one per rule, each named in the test id ----------------------------------

LeafFactory = Callable[[TestPki], list[bytes]]


def _leaf(**knobs: Any) -> LeafFactory:
    return lambda pki: pki.chain_der(pki.leaf(BILLING, **knobs))


def _leaf_with_uri(uri: str) -> LeafFactory:
    return lambda pki: pki.chain_der(pki.leaf(uri, trust_domain="example.org"))


@pytest.mark.parametrize(
    ("make_chain", "rule"),
    [
        pytest.param(lambda pki: [b"\x30\x82garbage"], "X-0", id="X-0-garbage-bytes"),
        pytest.param(lambda pki: [], "X-0", id="X-0-empty-chain"),
        pytest.param(lambda pki: [pki.leaf(BILLING).der[:-10]], "X-0", id="X-0-truncated-der"),
        pytest.param(
            lambda pki: [pki.leaf(BILLING).der, b"not a cert"], "X-0", id="X-0-garbage-intermediate"
        ),
        pytest.param(_leaf(uri_sans=()), "X-1", id="X-1-no-uri-san"),
        pytest.param(
            _leaf(uri_sans=(), dns_sans=("billing.example.org",)), "X-1", id="X-1-dns-san-only"
        ),
        pytest.param(
            _leaf(uri_sans=(BILLING, "spiffe://example.org/agents/report-bot")),
            "X-1",
            id="X-1-two-uri-sans",
        ),
        pytest.param(
            _leaf_with_uri("https://example.org/agents/x"), "X-2", id="X-2-non-spiffe-uri"
        ),
        pytest.param(_leaf_with_uri("spiffe://example.org"), "X-2", id="X-2-root-path"),
        pytest.param(
            _leaf_with_uri("spiffe://EXAMPLE.org/agents/x"), "X-2", id="X-2-upper-case-trust-domain"
        ),
        pytest.param(_leaf_with_uri("spiffe://example.org/a/../b"), "X-2", id="X-2-dot-segment"),
        pytest.param(_leaf(ca=True), "X-3", id="X-3-leaf-is-ca"),
        pytest.param(
            _leaf(key_usage=frozenset({Usage.KEY_ENCIPHERMENT})),
            "X-4",
            id="X-4-no-digital-signature",
        ),
        pytest.param(
            _leaf(key_usage=frozenset({Usage.DIGITAL_SIGNATURE, Usage.KEY_CERT_SIGN})),
            "X-4",
            id="X-4-key-cert-sign",
        ),
        pytest.param(
            _leaf(key_usage=frozenset({Usage.DIGITAL_SIGNATURE, Usage.CRL_SIGN})),
            "X-4",
            id="X-4-crl-sign",
        ),
        pytest.param(_leaf(key_usage=None), "X-5", id="X-5-no-key-usage"),
        pytest.param(
            _leaf(extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,)),
            "X-7",
            id="X-7-eku-without-client-auth",
        ),
        pytest.param(
            _leaf(
                extra_extensions=(
                    (
                        x509.UnrecognizedExtension(
                            x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"
                        ),
                        True,
                    ),
                )
            ),
            "X-9",
            id="X-9-unknown-critical-extension",
        ),
    ],
)
def test_leaf_violations_are_rejected_naming_the_rule(
    pki: TestPki, verifier: X509SvidVerifier, make_chain: LeafFactory, rule: str
) -> None:
    assert rule_of(verifier, make_chain(pki)) == rule


def test_X3_message_explains_the_problem(pki: TestPki, verifier: X509SvidVerifier) -> None:
    with pytest.raises(AttestationFailed, match=r"cA=true.*must have cA=false"):
        verifier.verify(pki.chain_der(pki.leaf(BILLING, ca=True)))


def test_X9_ca_of_another_trust_domain_cannot_vouch_for_an_id(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    # other.org's root signs an example.org ID: the root is trusted, but not for example.org.
    leaf = pki.leaf(BILLING, issuer=pki.other.root)

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(pki.chain_der(leaf))

    assert caught.value.rule == "X-9"
    assert "example.org" in caught.value.message


def test_X9_intermediate_of_another_trust_domain_cannot_vouch_for_an_id(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING, issuer=pki.other.intermediate)

    assert rule_of(verifier, pki.chain_der(leaf, pki.other.intermediate)) == "X-9"


def test_X9_rogue_ca_is_rejected(pki: TestPki, verifier: X509SvidVerifier) -> None:
    rogue = pki.ca("rogue", trust_domain="example.org")

    assert rule_of(verifier, pki.chain_der(pki.leaf(BILLING, issuer=rogue))) == "X-9"


def test_X9_trust_domain_without_bundle_is_rejected(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    rogue = pki.ca("rogue")
    leaf = pki.leaf("spiffe://unknown.org/a", issuer=rogue)

    with pytest.raises(AttestationFailed, match=r"no X\.509 trust bundle") as caught:
        verifier.verify(pki.chain_der(leaf))
    assert caught.value.rule == "X-9"


def test_X9_missing_intermediate_is_rejected(pki: TestPki, verifier: X509SvidVerifier) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)

    assert rule_of(verifier, pki.chain_der(leaf)) == "X-9"


@pytest.mark.parametrize(
    ("shift", "match"),
    [
        pytest.param(dt.timedelta(days=2), "expired", id="X-9-expired-leaf"),
        pytest.param(-dt.timedelta(days=2), "not valid until", id="X-9-not-yet-valid-leaf"),
    ],
)
def test_X9_validity_dates_are_enforced(
    pki: TestPki, bundles: TrustBundles, shift: dt.timedelta, match: str
) -> None:
    leaf = pki.leaf(BILLING)
    verifier = X509SvidVerifier(bundles, FixedClock(pki.now + shift))

    with pytest.raises(AttestationFailed, match=match) as caught:
        verifier.verify(pki.chain_der(leaf))
    assert caught.value.rule == "X-9"


def test_X9_expired_intermediate_is_rejected(pki: TestPki, verifier: X509SvidVerifier) -> None:
    expired = pki.ca(
        "expired intermediate",
        issuer=pki.example.root,
        not_before=pki.now - dt.timedelta(days=3),
        not_after=pki.now - dt.timedelta(days=1),
    )
    leaf = pki.leaf(BILLING, issuer=expired)

    assert rule_of(verifier, pki.chain_der(leaf, expired)) == "X-9"


def test_X9_expired_bundle_root_is_rejected(
    pki: TestPki, clock: FixedClock, tmp_path: Path
) -> None:
    old_root = pki.ca(
        "expired root",
        trust_domain="example.org",
        not_before=pki.now - dt.timedelta(days=3),
        not_after=pki.now - dt.timedelta(minutes=1),
    )
    (tmp_path / "root.pem").write_bytes(old_root.pem)
    verifier = X509SvidVerifier(TrustBundles({"example.org": [tmp_path / "root.pem"]}), clock)

    with pytest.raises(AttestationFailed, match="expired or not yet valid") as caught:
        verifier.verify(pki.chain_der(pki.leaf(BILLING, issuer=old_root)))
    assert caught.value.rule == "X-9"


def _sub_ca(pki: TestPki, name: str, issuer: Issued, **knobs: object) -> Issued:
    return pki.ca(name, issuer=issuer, trust_domain="example.org", **knobs)


def test_X6_intermediate_without_key_cert_sign_is_rejected(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    weak = _sub_ca(
        pki, "no keyCertSign", pki.example.root, key_usage=frozenset({Usage.DIGITAL_SIGNATURE})
    )
    leaf = pki.leaf(BILLING, issuer=weak)

    with pytest.raises(AttestationFailed, match="keyCertSign") as caught:
        verifier.verify(pki.chain_der(leaf, weak))
    assert caught.value.rule == "X-6"


def test_X6_intermediate_that_is_not_a_ca_is_rejected(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    not_ca = _sub_ca(pki, "not a CA", pki.example.root, ca=False)
    leaf = pki.leaf(BILLING, issuer=not_ca)

    assert rule_of(verifier, pki.chain_der(leaf, not_ca)) == "X-6"


def test_X6_path_length_exceeded_is_rejected(pki: TestPki, verifier: X509SvidVerifier) -> None:
    # example.org's intermediate has pathLen=0: it may not sign another CA.
    below = _sub_ca(pki, "too deep", pki.example.intermediate)
    leaf = pki.leaf(BILLING, issuer=below)

    with pytest.raises(AttestationFailed, match="pathLen") as caught:
        verifier.verify(pki.chain_der(leaf, below, pki.example.intermediate))
    assert caught.value.rule == "X-6"


def test_X6_path_length_allows_what_it_promises(pki: TestPki, verifier: X509SvidVerifier) -> None:
    first = _sub_ca(pki, "pathLen 1", pki.example.root, path_length=1)
    second = _sub_ca(pki, "below", first, path_length=0)
    leaf = pki.leaf(BILLING, issuer=second)

    assert verifier.verify(pki.chain_der(leaf, second, first)).id == BILLING


def test_X0_garbage_pem_is_rejected(verifier: X509SvidVerifier) -> None:
    with pytest.raises(AttestationFailed) as caught:
        verifier.verify_pem(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    assert caught.value.rule == "X-0"


def test_X0_too_many_certificates_are_refused(pki: TestPki, verifier: X509SvidVerifier) -> None:
    leaf = pki.leaf(BILLING)

    assert rule_of(verifier, [leaf.der] * 9) == "X-0"


# --- cache -----------------------------------------------------------------------------------


def test_cache_returns_the_same_workload_for_the_same_chain(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    chain = pki.chain_der(pki.leaf(BILLING))

    first = verifier.verify(chain)
    second = verifier.verify(chain)

    # Identity, not equality: a fresh verification would build a new Workload.
    assert second is first


def test_cache_pem_and_der_entries_are_both_served(
    pki: TestPki, verifier: X509SvidVerifier
) -> None:
    leaf = pki.leaf(BILLING)

    assert verifier.verify_pem(leaf.pem) is verifier.verify_pem(leaf.pem)


def test_cache_is_invalidated_by_a_bundle_reload(
    pki: TestPki, clock: FixedClock, bundle_sources: dict[str, list[Path]]
) -> None:
    bundles = TrustBundles(bundle_sources)
    verifier = X509SvidVerifier(bundles, clock)
    chain = pki.chain_der(pki.leaf(BILLING))
    verifier.verify(chain)

    # Security replaces example.org's root: the cached chain must no longer be accepted.
    pem = bundle_sources["example.org"][0]
    replace_file(pem, pki.ca("replacement root", trust_domain="example.org").pem)
    assert bundles.reload_if_changed().reloaded

    with pytest.raises(AttestationFailed) as caught:
        verifier.verify(chain)
    assert caught.value.rule == "X-9"


def test_cache_entry_is_reverified_after_an_unrelated_reload(
    pki: TestPki, clock: FixedClock, bundle_sources: dict[str, list[Path]]
) -> None:
    bundles = TrustBundles(bundle_sources)
    verifier = X509SvidVerifier(bundles, clock)
    chain = pki.chain_der(pki.leaf(BILLING))
    first = verifier.verify(chain)

    pem = bundle_sources["other.org"][0]
    replace_file(pem, pem.read_bytes() + pki.ca("second other root").pem)
    assert bundles.reload_if_changed().reloaded

    again = verifier.verify(chain)
    assert again == first and again is not first


def test_cache_is_invalidated_by_expiry(pki: TestPki, bundles: TrustBundles) -> None:
    clock = FixedClock(pki.now)
    verifier = X509SvidVerifier(bundles, clock)
    leaf = pki.leaf(BILLING)
    chain = pki.chain_der(leaf)
    verifier.verify(chain)

    clock.advance(leaf.cert.not_valid_after_utc - pki.now + dt.timedelta(seconds=1))

    with pytest.raises(AttestationFailed, match="expired") as caught:
        verifier.verify(chain)
    assert caught.value.rule == "X-9"


def test_cache_expires_with_the_shortest_lived_certificate_of_the_chain(
    pki: TestPki, bundles: TrustBundles
) -> None:
    short = pki.ca(
        "short-lived intermediate",
        issuer=pki.example.root,
        trust_domain="example.org",
        not_after=pki.now + dt.timedelta(hours=1),
    )
    leaf = pki.leaf(BILLING, issuer=short)
    clock = FixedClock(pki.now)
    verifier = X509SvidVerifier(bundles, clock)
    workload = verifier.verify(pki.chain_der(leaf, short))
    assert workload.expires_at == short.cert.not_valid_after_utc

    clock.advance(dt.timedelta(hours=2))

    assert rule_of(verifier, pki.chain_der(leaf, short)) == "X-9"


def test_cache_is_bounded_and_evicts_the_least_recently_used(
    pki: TestPki, bundles: TrustBundles, clock: FixedClock
) -> None:
    verifier = X509SvidVerifier(bundles, clock, cache_size=2)
    chains = [pki.chain_der(pki.leaf(f"spiffe://example.org/agents/a{i}")) for i in range(3)]
    first = verifier.verify(chains[0])
    verifier.verify(chains[1])
    verifier.verify(chains[2])

    assert verifier.verify(chains[0]) is not first


def test_cache_never_serves_a_failed_chain(pki: TestPki, verifier: X509SvidVerifier) -> None:
    chain = pki.chain_der(pki.leaf(BILLING, ca=True))

    assert rule_of(verifier, chain) == "X-3"
    assert rule_of(verifier, chain) == "X-3"


def test_cache_key_distinguishes_chain_splits(pki: TestPki, verifier: X509SvidVerifier) -> None:
    leaf = pki.leaf(BILLING, via_intermediate=True)
    good = pki.chain_der(leaf, pki.example.intermediate)
    verifier.verify(good)

    # The same bytes split differently are not the chain that was verified.
    assert rule_of(verifier, [good[0] + good[1]]) == "X-0"
