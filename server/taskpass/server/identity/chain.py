"""Presented certificate chains: parsing untrusted bytes and RFC 5280 path validation.

Shared by the X.509-SVID and mapped-certificate verifiers. Path validation is cryptography's
(`cryptography.x509.verification`), with its Web PKI CA profile (signing certs need cA=true,
keyCertSign, and their pathLen is enforced) and a permissive end-entity profile, because each
verifier checks the leaf itself against its own rules and explains a failure by rule id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from taskpass.server.errors import AttestationFailed

log = logging.getLogger(__name__)

MAX_PRESENTED_CERTS = 8
"""Leaf plus intermediates a caller may present; bounds the work of chain building."""
MAX_CHAIN_DEPTH = 4
"""Intermediate CAs allowed between the leaf and a bundle CA."""
MAX_CERT_BYTES = 16 * 1024

PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,  # e.g. a subject attribute whose OID and string type disagree
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    # cryptography warns about some malformed input (a non-positive serial, a bad country name
    # length); where warnings are errors (the test suite) the warning is raised instead.
    UserWarning,
)
"""What cryptography raises for malformed certificates: none of these derive from one base."""

# cryptography warns (and will later refuse) on a non-positive serial; such a chain is rejected
# by path validation anyway, so the warning would only be noise driven by hostile input.
warnings.filterwarnings(
    "ignore", message="Parsed a serial number", category=CryptographyDeprecationWarning
)

_VALIDATION_ERRORS: tuple[type[Exception], ...] = (
    VerificationError,
    UnsupportedAlgorithm,
    *PARSE_ERRORS,
)

_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()
# Leaf rules are checked by the callers with precise messages; the library still rejects
# unknown critical extensions here.
_EE_POLICY = ExtensionPolicy.permit_all()


@dataclass(frozen=True, slots=True)
class PresentedChain:
    leaf: x509.Certificate
    leaf_der: bytes
    intermediates: tuple[x509.Certificate, ...]


@dataclass(frozen=True, slots=True)
class ValidatedPath:
    chain: tuple[x509.Certificate, ...]
    """Leaf first, bundle CA last, as built by path validation."""
    valid_from: dt.datetime
    """The latest notBefore in the chain."""
    valid_until: dt.datetime
    """The earliest notAfter in the chain: when the chain stops validating."""


def chain_cache_key(tag: bytes, parts: Sequence[bytes]) -> bytes:
    """SHA-256 over length-prefixed parts, so two different splits never share a key."""
    digest = hashlib.sha256(tag)
    for part in parts:
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.digest()


def thumbprint(leaf_der: bytes) -> str:
    """RFC 8705 `x5t#S256`: base64url(SHA-256(DER)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(leaf_der).digest()).rstrip(b"=").decode()


def parse_der_chain(chain: Sequence[bytes], *, rule: str) -> PresentedChain:
    """Parse leaf-first DER certificates; anything malformed is AttestationFailed(`rule`)."""
    if not chain:
        raise AttestationFailed(rule, "no client certificate was presented")
    if len(chain) > MAX_PRESENTED_CERTS:
        raise AttestationFailed(
            rule, f"{len(chain)} certificates presented; at most {MAX_PRESENTED_CERTS} accepted"
        )
    certs: list[x509.Certificate] = []
    for index, der in enumerate(chain):
        if not isinstance(der, bytes | bytearray) or len(der) > MAX_CERT_BYTES:
            raise AttestationFailed(rule, f"certificate #{index + 1} is not DER of a sane size")
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except PARSE_ERRORS:
            raise AttestationFailed(
                rule, f"certificate #{index + 1} could not be parsed as DER X.509"
            ) from None
    return PresentedChain(certs[0], bytes(chain[0]), tuple(certs[1:]))


def parse_pem_chain(leaf_pem: bytes, chain_pem: bytes | None, *, rule: str) -> PresentedChain:
    """Parse what gRPC's auth_context reports: the leaf PEM and, maybe, the peer chain PEM.

    The peer chain may repeat the leaf; it is dropped so it is never taken for an intermediate.
    """
    limit = MAX_CERT_BYTES * 2 * MAX_PRESENTED_CERTS
    if not isinstance(leaf_pem, bytes) or not isinstance(chain_pem, bytes | None):
        raise AttestationFailed(rule, "the client certificate PEM must be bytes")
    if not leaf_pem or len(leaf_pem) > limit or (chain_pem and len(chain_pem) > limit):
        raise AttestationFailed(rule, "no client certificate, or a PEM chain of insane size")
    try:
        leaf = x509.load_pem_x509_certificate(leaf_pem)
        rest = x509.load_pem_x509_certificates(chain_pem) if chain_pem else []
    except PARSE_ERRORS:
        raise AttestationFailed(rule, "the client certificate PEM could not be parsed") from None
    leaf_der = leaf.public_bytes(Encoding.DER)
    intermediates = tuple(c for c in rest if c.public_bytes(Encoding.DER) != leaf_der)
    if len(intermediates) + 1 > MAX_PRESENTED_CERTS:
        raise AttestationFailed(
            rule,
            f"{len(intermediates) + 1} certificates presented; at most {MAX_PRESENTED_CERTS} "
            "accepted",
        )
    # The same bound per certificate as for DER (parse_der_chain), certificate #1 the leaf.
    for index, der in enumerate((leaf_der, *(c.public_bytes(Encoding.DER) for c in intermediates))):
        if len(der) > MAX_CERT_BYTES:
            raise AttestationFailed(rule, f"certificate #{index + 1} is not DER of a sane size")
    return PresentedChain(leaf, leaf_der, intermediates)


def extensions_of(cert: x509.Certificate, *, what: str, rule: str) -> x509.Extensions:
    try:
        return cert.extensions
    except PARSE_ERRORS:
        # Duplicate or undecodable extensions.
        raise AttestationFailed(rule, f"{what} has malformed extensions") from None


def check_validity_window(
    cert: x509.Certificate, now: dt.datetime, *, what: str, rule: str
) -> None:
    if now < cert.not_valid_before_utc:
        raise AttestationFailed(
            rule,
            f"{what} is not valid until {cert.not_valid_before_utc.isoformat()} "
            f"(now {now.isoformat()}); check the issuer's clock",
        )
    if now > cert.not_valid_after_utc:
        raise AttestationFailed(
            rule,
            f"{what} expired at {cert.not_valid_after_utc.isoformat()}; fetch a fresh one",
        )


def check_signing_certs(
    intermediates: Sequence[x509.Certificate], *, rule: str, parse_rule: str
) -> None:
    """Every presented intermediate must be a CA that may sign certificates."""
    for index, cert in enumerate(intermediates):
        what = f"intermediate certificate #{index + 1}"
        exts = extensions_of(cert, what=what, rule=parse_rule)
        try:
            constraints = exts.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise AttestationFailed(
                rule, f"{what} is not a CA (cA=true missing); it cannot sign the chain"
            )
        try:
            usage = exts.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is None or not usage.key_cert_sign:
            raise AttestationFailed(
                rule, f"{what} lacks keyUsage keyCertSign; it may not sign certificates"
            )


def has_client_auth(eku: x509.ExtendedKeyUsage) -> bool:
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def validate_path(
    chain: PresentedChain,
    store: Store,
    now: dt.datetime,
    *,
    anchor: str,
    rule: str,
    signing_rule: str,
) -> ValidatedPath:
    """RFC 5280 path validation of `chain` to a CA in `store` at `now`.

    `anchor` names the store in messages ("the trust bundle of example.org"). Signing-cert
    failures (cA, keyCertSign, pathLen) raise `signing_rule`, everything else `rule`.
    """
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(chain.leaf, list(chain.intermediates))
    except _VALIDATION_ERRORS as exc:
        # Hostile input must end in a rule failure, never an internal error.
        reason = str(exc)
        log.debug("path validation failed against %s: %s", anchor, reason)
        raise _explain(reason, anchor=anchor, rule=rule, signing_rule=signing_rule) from None
    path = tuple(verified.chain)
    return ValidatedPath(
        chain=path,
        valid_from=max(c.not_valid_before_utc for c in path),
        valid_until=min(c.not_valid_after_utc for c in path),
    )


def _explain(reason: str, *, anchor: str, rule: str, signing_rule: str) -> AttestationFailed:
    # The library's text names certificates and internals; callers get a fixed explanation.
    if "path length constraint" in reason:
        return AttestationFailed(
            signing_rule,
            "a CA's pathLen constraint is exceeded: too many intermediates below it",
        )
    if "keyCertSign must be asserted" in reason or "cA must be asserted" in reason:
        return AttestationFailed(
            signing_rule, "a CA in the chain lacks cA=true or keyUsage keyCertSign"
        )
    if "exceeds max depth" in reason:
        return AttestationFailed(
            rule,
            f"the chain to {anchor} has more than {MAX_CHAIN_DEPTH} intermediate CAs; at most "
            f"{MAX_CHAIN_DEPTH} are accepted",
        )
    if "not valid at validation time" in reason:
        return AttestationFailed(
            rule, f"a CA certificate in the chain to {anchor} is expired or not yet valid"
        )
    if "unaccounted-for critical extensions" in reason:
        return AttestationFailed(rule, "a certificate carries an unsupported critical extension")
    return AttestationFailed(
        rule,
        f"the certificate chain does not validate to a CA in {anchor} (unknown issuer, bad "
        "signature, or a missing intermediate)",
    )
