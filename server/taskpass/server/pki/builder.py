"""A small X.509 certificate builder with knobs, over `cryptography`.

The dev PKI uses it with sane defaults; tests use the same knobs to make hostile certificates
(a CA leaf, two URI SANs, no keyUsage, an intermediate without keyCertSign, ...).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


class KeyType(enum.Enum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    ED25519 = "ed25519"


class Usage(enum.Enum):
    """keyUsage bits, by their RFC 5280 names."""

    DIGITAL_SIGNATURE = "digitalSignature"
    CONTENT_COMMITMENT = "contentCommitment"
    KEY_ENCIPHERMENT = "keyEncipherment"
    DATA_ENCIPHERMENT = "dataEncipherment"
    KEY_AGREEMENT = "keyAgreement"
    KEY_CERT_SIGN = "keyCertSign"
    CRL_SIGN = "cRLSign"


LEAF_USAGES = frozenset({Usage.DIGITAL_SIGNATURE})
CA_USAGES = frozenset({Usage.DIGITAL_SIGNATURE, Usage.KEY_CERT_SIGN, Usage.CRL_SIGN})


def generate_key(key_type: KeyType = KeyType.EC_P256) -> PrivateKey:
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: dev and test keys only; files holding it must be 0600."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, kw_only=True)
class CertSpec:
    """What to put in a certificate. `None` for an extension means: leave it out."""

    not_before: dt.datetime
    not_after: dt.datetime
    common_name: str | None = None
    organization: str | None = None
    subject: x509.Name | None = None
    """The whole subject name, overriding common_name and organization."""
    uri_sans: Sequence[str] = ()
    dns_sans: Sequence[str] = ()
    ip_sans: Sequence[str] = ()
    ca: bool | None = False
    """basicConstraints cA; None leaves basicConstraints out."""
    path_length: int | None = None
    key_usage: frozenset[Usage] | None = LEAF_USAGES
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None = None
    key_type: KeyType = KeyType.EC_P256
    key: PrivateKey | None = None
    """Reuse this key instead of generating one."""
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = field(default=())
    """(extension, critical) pairs added as-is, e.g. an unknown critical extension."""


def ca_spec(
    common_name: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    trust_domain: str | None = None,
    path_length: int | None = None,
    key_type: KeyType = KeyType.EC_P256,
) -> CertSpec:
    """A signing CA; with `trust_domain` it carries the trust domain's SPIFFE ID, as SPIRE's do."""
    return CertSpec(
        not_before=not_before,
        not_after=not_after,
        common_name=common_name,
        organization="taskpass",
        uri_sans=(f"spiffe://{trust_domain}",) if trust_domain else (),
        ca=True,
        path_length=path_length,
        key_usage=CA_USAGES,
        key_type=key_type,
    )


def svid_spec(
    spiffe_id: str,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    dns_sans: Sequence[str] = (),
    ip_sans: Sequence[str] = (),
    server: bool = False,
    key_type: KeyType = KeyType.EC_P256,
) -> CertSpec:
    """An X.509-SVID leaf: one URI SAN, cA=false, digitalSignature, EKU clientAuth (+serverAuth)."""
    return CertSpec(
        not_before=not_before,
        not_after=not_after,
        organization="taskpass SVID",
        uri_sans=(spiffe_id,),
        dns_sans=dns_sans,
        ip_sans=ip_sans,
        ca=False,
        key_usage=LEAF_USAGES,
        extended_key_usage=(SERVER_AUTH, CLIENT_AUTH) if server else (CLIENT_AUTH,),
        key_type=key_type,
    )


def issue(spec: CertSpec, issuer: Issued | None = None) -> Issued:
    """Build and sign a certificate: self-signed when `issuer` is None."""
    key = spec.key or generate_key(spec.key_type)
    subject = _name(spec)
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if spec.ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
            critical=True,
        )
    if spec.key_usage is not None:
        builder = builder.add_extension(_key_usage(spec.key_usage), critical=True)
    if spec.extended_key_usage is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(spec.extended_key_usage)), critical=False
        )
    names = _general_names(spec)
    if names:
        # RFC 5280 4.2.1.6: with an empty subject the SAN extension must be critical.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=len(subject) == 0
        )
    for extension, critical in spec.extra_extensions:
        builder = builder.add_extension(extension, critical)
    cert = builder.sign(signer_key, _hash_for(signer_key))
    return Issued(cert=cert, key=key)


def _name(spec: CertSpec) -> x509.Name:
    if spec.subject is not None:
        return spec.subject
    attributes = []
    if spec.organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, spec.organization))
    if spec.common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
    return x509.Name(attributes)


def _general_names(spec: CertSpec) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uri_sans]
    names += [x509.DNSName(d) for d in spec.dns_sans]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ip_sans]
    return names


def _key_usage(usages: frozenset[Usage]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=Usage.DIGITAL_SIGNATURE in usages,
        content_commitment=Usage.CONTENT_COMMITMENT in usages,
        key_encipherment=Usage.KEY_ENCIPHERMENT in usages,
        data_encipherment=Usage.DATA_ENCIPHERMENT in usages,
        key_agreement=Usage.KEY_AGREEMENT in usages,
        key_cert_sign=Usage.KEY_CERT_SIGN in usages,
        crl_sign=Usage.CRL_SIGN in usages,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()
