"""Non-SPIFFE mTLS workload certificates, mapped to identities by configured rules (off by default).

A rule names an issuer CA and a DNS SAN and/or subject CN; a certificate whose names match a rule
and whose chain validates to that rule's CA gets the rule's identity. Rule ids for errors (not in
DESIGN.md): M-0 malformed, M-1 chain does not validate to the rule's issuer, M-2 no rule matches
the certificate's names, M-3 the leaf is not a client end-entity certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Store

from taskpass.server.clock import Clock
from taskpass.server.errors import AttestationFailed, ConfigError
from taskpass.server.identity.chain import (
    PARSE_ERRORS,
    PresentedChain,
    chain_cache_key,
    check_validity_window,
    extensions_of,
    has_client_auth,
    parse_der_chain,
    parse_pem_chain,
    thumbprint,
    validate_path,
)
from taskpass.server.identity.verification_cache import VerificationCache
from taskpass.server.identity.workload import AttestationMethod, Workload

MAX_IDENTITY_BYTES = 2048
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, *PARSE_ERRORS)


@dataclass(frozen=True, slots=True)
class CertMappingRule:
    """Map a certificate issued by `issuer_ca` with these names to `identity`."""

    issuer_ca: Path | x509.Certificate
    """The CA (PEM file, or certificate) the workload's chain must validate to."""
    identity: str
    """What policy sees as the workload id. Never a SPIFFE ID: that would impersonate an SVID."""
    dns_san: str | None = None
    """A DNS SAN the certificate must carry (case-insensitive)."""
    subject_cn: str | None = None
    """The subject common name the certificate must have (exact)."""

    def __post_init__(self) -> None:
        if self.dns_san is None and self.subject_cn is None:
            raise ConfigError(
                f"certificate mapping for {self.identity!r}: set dns_san or subject_cn"
            )
        if not self.identity or len(self.identity.encode()) > MAX_IDENTITY_BYTES:
            raise ConfigError("certificate mapping: identity must be 1..2048 bytes")
        if not self.identity.isprintable() or any(c.isspace() for c in self.identity):
            raise ConfigError(
                f"certificate mapping: identity {self.identity!r} has spaces or control chars"
            )
        if self.identity.lower().startswith("spiffe:"):
            raise ConfigError(
                f"certificate mapping: identity {self.identity!r} looks like a SPIFFE ID; a "
                "mapped certificate must not pass for an SVID, pick another name"
            )


@dataclass(frozen=True, slots=True)
class _LoadedRule:
    rule: CertMappingRule
    store: Store
    issuer_name: str


class MappedCertVerifier:
    """Verifies non-SPIFFE workload certificates against configured mapping rules."""

    def __init__(
        self, rules: Sequence[CertMappingRule], clock: Clock, *, cache_size: int = 1_000
    ) -> None:
        if not rules:
            raise ConfigError("certificate mapping is enabled but has no rules")
        self._rules = tuple(_load_rule(rule) for rule in rules)
        self._clock = clock
        self._cache = VerificationCache(cache_size)

    def verify(self, chain: Sequence[bytes]) -> Workload:
        key = chain_cache_key(b"der", chain)
        cached = self._cache.get(key, now=self._clock.now(), generation=0)
        if cached is not None:
            return cached
        return self._verify(parse_der_chain(chain, rule="M-0"), key)

    def verify_pem(self, leaf_pem: bytes, chain_pem: bytes | None = None) -> Workload:
        key = chain_cache_key(b"pem", (leaf_pem, chain_pem or b""))
        cached = self._cache.get(key, now=self._clock.now(), generation=0)
        if cached is not None:
            return cached
        return self._verify(parse_pem_chain(leaf_pem, chain_pem, rule="M-0"), key)

    def _verify(self, chain: PresentedChain, cache_key: bytes) -> Workload:
        now = self._clock.now()
        _check_client_leaf(chain.leaf)
        dns_names, common_names = _names(chain.leaf)
        candidates = [r for r in self._rules if _matches(r.rule, dns_names, common_names)]
        if not candidates:
            raise AttestationFailed(
                "M-2",
                "no certificate mapping rule matches the certificate's DNS SANs or subject CN; "
                "ask the security team to add a rule for this workload",
            )
        check_validity_window(chain.leaf, now, what="the client certificate", rule="M-1")
        failure: AttestationFailed | None = None
        for loaded in candidates:
            try:
                path = validate_path(
                    chain,
                    loaded.store,
                    now,
                    anchor=f"the mapping rule's issuer CA ({loaded.issuer_name})",
                    rule="M-1",
                    signing_rule="M-1",
                )
            except AttestationFailed as exc:
                failure = failure or exc
                continue
            workload = Workload(
                id=loaded.rule.identity,
                method=AttestationMethod.MTLS_CERT,
                trust_domain="",
                expires_at=path.valid_until,
                cert_thumbprint=thumbprint(chain.leaf_der),
            )
            self._cache.put(
                cache_key,
                workload,
                valid_from=path.valid_from,
                valid_until=path.valid_until,
                generation=0,
            )
            return workload
        assert failure is not None
        raise failure


def _load_rule(rule: CertMappingRule) -> _LoadedRule:
    if isinstance(rule.issuer_ca, x509.Certificate):
        certs = [rule.issuer_ca]
    else:
        try:
            certs = x509.load_pem_x509_certificates(rule.issuer_ca.read_bytes())
        except _READ_ERRORS:
            raise ConfigError(
                f"certificate mapping for {rule.identity!r}: {rule.issuer_ca}: cannot read a PEM "
                "CA certificate"
            ) from None
    return _LoadedRule(rule, Store(certs), certs[0].subject.rfc4514_string()[:120])


def _check_client_leaf(leaf: x509.Certificate) -> None:
    exts = extensions_of(leaf, what="the client certificate", rule="M-0")
    try:
        if exts.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise AttestationFailed("M-3", "the client certificate is a CA (cA=true)")
    except x509.ExtensionNotFound:
        pass
    try:
        if not exts.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            raise AttestationFailed("M-3", "the client certificate lacks digitalSignature")
    except x509.ExtensionNotFound:
        pass
    try:
        if not has_client_auth(exts.get_extension_for_class(x509.ExtendedKeyUsage).value):
            raise AttestationFailed("M-3", "the client certificate's EKU excludes clientAuth")
    except x509.ExtensionNotFound:
        pass


def _names(leaf: x509.Certificate) -> tuple[set[str], list[str]]:
    exts = extensions_of(leaf, what="the client certificate", rule="M-0")
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        dns_names = set()
    try:
        attrs = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except PARSE_ERRORS:
        raise AttestationFailed("M-0", "the client certificate subject is malformed") from None
    return dns_names, [str(a.value) for a in attrs]


def _matches(rule: CertMappingRule, dns_names: set[str], common_names: list[str]) -> bool:
    if rule.dns_san is not None and rule.dns_san.lower() not in dns_names:
        return False
    # A subject with several CNs is ambiguous; it never matches a CN rule.
    return rule.subject_cn is None or common_names == [rule.subject_cn]
