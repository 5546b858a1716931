"""Where an X.509-SVID is checked: rules X-1..X-7 and X-9 of DESIGN.md.

grpcio's TLS handshake is not a SPIFFE check, so every presented chain is verified here, and only
against the bundle of the trust domain named in the leaf's own SPIFFE ID.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from taskpass.server.clock import Clock
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.chain import (
    PresentedChain,
    chain_cache_key,
    check_signing_certs,
    check_validity_window,
    extensions_of,
    has_client_auth,
    parse_der_chain,
    parse_pem_chain,
    thumbprint,
    validate_path,
)
from taskpass.server.identity.spiffe_id import InvalidSpiffeId, SpiffeId, parse_spiffe_id, shown
from taskpass.server.identity.verification_cache import VerificationCache
from taskpass.server.identity.workload import AttestationMethod, Workload

MALFORMED = "X-0"
"""Not a rule of DESIGN.md: the presented bytes are not certificates at all."""

DEFAULT_CACHE_SIZE = 10_000


def uri_sans(leaf: x509.Certificate) -> list[str]:
    """The leaf's URI SANs ([] without a SAN extension); malformed extensions raise X-0."""
    exts = extensions_of(leaf, what="the leaf certificate", rule=MALFORMED)
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def has_spiffe_uri(leaf: x509.Certificate) -> bool:
    """True when any URI SAN claims a SPIFFE ID: such a cert is never tried as a mapped cert."""
    return any(uri[:9].lower() == "spiffe://" for uri in uri_sans(leaf))


def leaf_spiffe_id(leaf: x509.Certificate) -> SpiffeId:
    """X-1 and X-2: exactly one URI SAN, holding a SPIFFE ID with a non-root path."""
    uris = uri_sans(leaf)
    if len(uris) != 1:
        raise AttestationFailed(
            "X-1",
            f"the leaf certificate has {len(uris)} URI SANs; an X.509-SVID has exactly one, "
            "its SPIFFE ID",
        )
    try:
        spiffe_id = parse_spiffe_id(uris[0])
    except InvalidSpiffeId as exc:
        raise AttestationFailed(
            "X-2",
            f"the URI SAN {shown(uris[0])} is not a valid SPIFFE ID [{exc.rule}]: {exc.reason}",
        ) from None
    if spiffe_id.is_root:
        raise AttestationFailed(
            "X-2",
            f"the URI SAN {shown(uris[0])} names a trust domain, not a workload; an X.509-SVID "
            "ID needs a path",
        )
    return spiffe_id


def check_leaf_profile(leaf: x509.Certificate) -> None:
    """X-3, X-5, X-4, X-7: the leaf is an end entity usable for client authentication."""
    exts = extensions_of(leaf, what="the leaf certificate", rule=MALFORMED)
    try:
        constraints: x509.BasicConstraints | None = exts.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise AttestationFailed(
            "X-3",
            "the leaf certificate is a CA (cA=true); an X.509-SVID leaf must have cA=false",
        )
    try:
        usage = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise AttestationFailed(
            "X-5", "the leaf certificate has no keyUsage extension; an X.509-SVID must have one"
        ) from None
    if not usage.digital_signature:
        raise AttestationFailed(
            "X-4", "the leaf keyUsage lacks digitalSignature, which an X.509-SVID must assert"
        )
    if usage.key_cert_sign or usage.crl_sign:
        raise AttestationFailed(
            "X-4",
            "the leaf keyUsage asserts keyCertSign or cRLSign; an X.509-SVID leaf must not",
        )
    try:
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not has_client_auth(eku):
        raise AttestationFailed(
            "X-7",
            "the leaf extendedKeyUsage does not include clientAuth; it cannot authenticate a "
            "client",
        )


class X509SvidVerifier:
    """Verifies X.509-SVID chains presented by mTLS peers; caches successes.

    A cached result is reused while the bundle generation is unchanged and the clock is inside
    the verified chain's validity window.
    """

    def __init__(
        self, bundles: TrustBundles, clock: Clock, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self._bundles = bundles
        self._clock = clock
        self._cache = VerificationCache(cache_size)

    def verify(self, chain: Sequence[bytes]) -> Workload:
        """`chain` is the leaf DER first, then intermediates as presented."""
        key = chain_cache_key(b"der", chain)
        now = self._clock.now()
        cached = self._cache.get(key, now=now, generation=self._bundles.generation)
        if cached is not None:
            return cached
        return self._verify(parse_der_chain(chain, rule=MALFORMED), key)

    def verify_pem(self, leaf_pem: bytes, chain_pem: bytes | None = None) -> Workload:
        """What gRPC's auth_context gives: `x509_pem_cert` and maybe `x509_pem_cert_chain`."""
        key = chain_cache_key(b"pem", (leaf_pem, chain_pem or b""))
        now = self._clock.now()
        cached = self._cache.get(key, now=now, generation=self._bundles.generation)
        if cached is not None:
            return cached
        return self._verify(parse_pem_chain(leaf_pem, chain_pem, rule=MALFORMED), key)

    def _verify(self, chain: PresentedChain, cache_key: bytes) -> Workload:
        # Read the generation before the bundle so a concurrent reload can only make the
        # cache entry look older than it is, never newer.
        generation = self._bundles.generation
        now = self._clock.now()
        spiffe_id = leaf_spiffe_id(chain.leaf)
        check_leaf_profile(chain.leaf)
        check_signing_certs(chain.intermediates, rule="X-6", parse_rule=MALFORMED)
        check_validity_window(chain.leaf, now, what="the leaf certificate", rule="X-9")
        for index, cert in enumerate(chain.intermediates):
            check_validity_window(
                cert, now, what=f"intermediate certificate #{index + 1}", rule="X-9"
            )
        bundle = self._bundles.get(spiffe_id.trust_domain)
        if bundle is None or bundle.x509_store is None:
            raise AttestationFailed(
                "X-9",
                f"no X.509 trust bundle is configured for trust domain "
                f"{spiffe_id.trust_domain!r}; this server does not trust its SVIDs",
            )
        path = validate_path(
            chain,
            bundle.x509_store,
            now,
            anchor=f"the trust bundle of {spiffe_id.trust_domain}",
            rule="X-9",
            signing_rule="X-6",
        )
        workload = Workload(
            id=str(spiffe_id),
            method=AttestationMethod.X509_SVID,
            trust_domain=spiffe_id.trust_domain,
            expires_at=path.valid_until,
            cert_thumbprint=thumbprint(chain.leaf_der),
        )
        self._cache.put(
            cache_key,
            workload,
            valid_from=path.valid_from,
            valid_until=path.valid_until,
            generation=generation,
        )
        return workload
