"""The attested caller, as the rest of the server sees it."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class AttestationMethod(enum.Enum):
    X509_SVID = "x509-svid"
    JWT_SVID = "jwt-svid"
    MTLS_CERT = "mtls-cert"  # a non-SPIFFE workload certificate mapped by config rules


@dataclass(frozen=True, slots=True)
class Workload:
    """An identity that passed attestation.

    `id` is a SPIFFE ID for the SVID methods, or the configured identity string for a mapped
    certificate. `cert_thumbprint` is base64url(SHA-256(leaf DER)) when the caller presented a
    client certificate: it becomes the token's `cnf.x5t#S256` (RFC 8705).
    """

    id: str
    method: AttestationMethod
    trust_domain: str
    expires_at: dt.datetime
    cert_thumbprint: str | None = None

    @property
    def path(self) -> str:
        """The SPIFFE ID path ('' for a mapped identity that is not a SPIFFE ID)."""
        prefix = f"spiffe://{self.trust_domain}"
        return self.id[len(prefix) :] if self.id.startswith(prefix) else ""
