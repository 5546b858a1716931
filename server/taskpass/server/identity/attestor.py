"""Attestation entry points: a peer certificate (mTLS) or an Authorization header (JWT-SVID)."""

from __future__ import annotations

from cryptography.x509 import load_pem_x509_certificate

from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.chain import PARSE_ERRORS
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.mapped_cert import MappedCertVerifier
from taskpass.server.identity.workload import Workload
from taskpass.server.identity.x509_svid import X509SvidVerifier, has_spiffe_uri

# A cert failing only these rules carries no SPIFFE ID at all, so it may be a mapped cert.
_NOT_AN_SVID_RULES = frozenset({"X-1", "X-2"})
_BEARER = "bearer "
_UNPARSEABLE: tuple[type[Exception], ...] = (AttestationFailed, *PARSE_ERRORS)


class Attestor:
    """Turns what a caller presented into a `Workload`, or raises AttestationFailed."""

    def __init__(
        self,
        x509: X509SvidVerifier,
        jwt: JwtSvidVerifier | None = None,
        mapped: MappedCertVerifier | None = None,
    ) -> None:
        self._x509 = x509
        self._jwt = jwt
        self._mapped = mapped

    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None = None) -> Workload:
        """SPIFFE first; a cert with no SPIFFE URI SAN is tried against mapping rules if enabled."""
        try:
            return self._x509.verify_pem(leaf_pem, chain_pem)
        except AttestationFailed as exc:
            if self._mapped is None or exc.rule not in _NOT_AN_SVID_RULES:
                raise
            if _claims_spiffe_id(leaf_pem):
                raise
        return self._mapped.verify_pem(leaf_pem, chain_pem)

    def attest_bearer(self, authorization_header: str) -> Workload:
        """`Authorization: Bearer <JWT-SVID>` (scheme case-insensitive, RFC 7235)."""
        if self._jwt is None:
            raise AttestationFailed(
                "J-0", "JWT-SVID authentication is not enabled; use mTLS with an X.509-SVID"
            )
        if not authorization_header[: len(_BEARER)].lower() == _BEARER:
            raise AttestationFailed("J-0", "the authorization metadata must be 'Bearer <JWT-SVID>'")
        token = authorization_header[len(_BEARER) :].strip(" ")
        if not token:
            raise AttestationFailed("J-0", "the bearer token is empty")
        return self._jwt.verify(token)


def _claims_spiffe_id(leaf_pem: bytes) -> bool:
    try:
        return has_spiffe_uri(load_pem_x509_certificate(leaf_pem))
    except _UNPARSEABLE:
        return True  # unparseable: never hand it to the mapper
