from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from taskpass.server.pki.builder import (
    CA_USAGES,
    CertSpec,
    KeyType,
    Usage,
    ca_spec,
    issue,
    svid_spec,
)

NOT_BEFORE = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
NOT_AFTER = NOT_BEFORE + dt.timedelta(days=1)


def leaf_spec(spiffe_id: str = "spiffe://example.org/a", **knobs: Any) -> CertSpec:
    return svid_spec(spiffe_id, not_before=NOT_BEFORE, not_after=NOT_AFTER, **knobs)


def root_spec(name: str = "root", **knobs: Any) -> CertSpec:
    return ca_spec(name, not_before=NOT_BEFORE, not_after=NOT_AFTER, **knobs)


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_svid_spec_builds_a_spiffe_compliant_leaf() -> None:
    root = issue(root_spec("root", trust_domain="example.org"))

    leaf = issue(leaf_spec("spiffe://example.org/a"), root).cert

    san = ext(leaf, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/a"]
    assert ext(leaf, x509.BasicConstraints).value == x509.BasicConstraints(False, None)
    usage = ext(leaf, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [  # type: ignore[call-overload]
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert leaf.issuer == root.cert.subject
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    leaf.verify_directly_issued_by(root.cert)


def test_server_svid_has_server_and_client_auth_and_its_dns_and_ip_names() -> None:
    leaf = issue(
        leaf_spec(
            "spiffe://example.org/taskpass/server",
            dns_sans=("localhost",),
            ip_sans=("127.0.0.1",),
            server=True,
        )
    ).cert

    san = ext(leaf, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert set(ext(leaf, x509.ExtendedKeyUsage).value) == {  # type: ignore[call-overload]
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }


def test_ca_spec_builds_a_signing_ca_with_path_length() -> None:
    ca = issue(root_spec("int", path_length=0, trust_domain="example.org")).cert

    constraints = ext(ca, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(True, 0)
    usage = ext(ca, x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage)
    assert usage.key_cert_sign and usage.crl_sign


@pytest.mark.parametrize(
    ("knobs", "missing"),
    [
        pytest.param({"ca": None}, x509.BasicConstraints, id="no-basic-constraints"),
        pytest.param({"key_usage": None}, x509.KeyUsage, id="no-key-usage"),
        pytest.param({"extended_key_usage": None}, x509.ExtendedKeyUsage, id="no-eku"),
        pytest.param({"uri_sans": ()}, x509.SubjectAlternativeName, id="no-san"),
    ],
)
def test_none_knobs_leave_the_extension_out(
    knobs: dict[str, object], missing: type[x509.ExtensionType]
) -> None:
    spec = dataclasses.replace(leaf_spec("spiffe://example.org/a"), **knobs)  # type: ignore[arg-type]

    with pytest.raises(x509.ExtensionNotFound):
        ext(issue(spec).cert, missing)


def test_hostile_knobs_are_honoured() -> None:
    spec = dataclasses.replace(
        leaf_spec("spiffe://example.org/a"),
        uri_sans=("spiffe://example.org/a", "spiffe://example.org/b"),
        ca=True,
        key_usage=CA_USAGES | {Usage.KEY_ENCIPHERMENT},
    )

    cert = issue(spec).cert

    san = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert len(san.get_values_for_type(x509.UniformResourceIdentifier)) == 2
    assert ext(cert, x509.BasicConstraints).value == x509.BasicConstraints(True, None)


def test_empty_subject_makes_the_san_critical() -> None:
    spec = dataclasses.replace(leaf_spec("spiffe://example.org/a"), organization=None, subject=None)

    cert = issue(spec).cert

    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical


def test_subject_knob_overrides_the_name() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom")])
    spec = dataclasses.replace(leaf_spec("spiffe://example.org/a"), subject=name)

    assert issue(spec).cert.subject == name


@pytest.mark.parametrize(
    ("key_type", "key_class", "hash_name"),
    [
        pytest.param(KeyType.EC_P256, ec.EllipticCurvePublicKey, "sha256", id="ec-p256"),
        pytest.param(KeyType.EC_P384, ec.EllipticCurvePublicKey, "sha384", id="ec-p384"),
        pytest.param(KeyType.RSA_2048, rsa.RSAPublicKey, "sha256", id="rsa-2048"),
        pytest.param(KeyType.ED25519, ed25519.Ed25519PublicKey, None, id="ed25519"),
    ],
)
def test_key_types_sign_with_a_matching_hash(
    key_type: KeyType, key_class: type, hash_name: str | None
) -> None:
    cert = issue(root_spec("root", key_type=key_type)).cert

    assert isinstance(cert.public_key(), key_class)
    algorithm = cert.signature_hash_algorithm
    assert (algorithm.name if isinstance(algorithm, hashes.HashAlgorithm) else None) == hash_name


def test_validity_window_is_what_was_asked() -> None:
    cert = issue(leaf_spec("spiffe://example.org/a")).cert

    assert cert.not_valid_before_utc == NOT_BEFORE
    assert cert.not_valid_after_utc == NOT_AFTER


def test_reused_key_is_used() -> None:
    first = issue(leaf_spec("spiffe://example.org/a"))
    spec = dataclasses.replace(leaf_spec("spiffe://example.org/b"), key=first.key)

    assert issue(spec).cert.public_key() == first.cert.public_key()
