"""A test PKI: two trust domains, intermediates, JWT signers, knobs for hostile certs and tokens.

Plain functions and classes (no pytest fixtures) so any test package can build what it needs:

    pki = TestPki()                                       # example.org and other.org
    leaf = pki.leaf("spiffe://example.org/agents/a")       # a valid X.509-SVID under the root
    leaf = pki.leaf(ID, via_intermediate=True)             # ... under the intermediate
    bad = pki.leaf(ID, ca=True)                            # any CertSpec field is a knob
    paths = pki.write_bundles(tmp_path)                    # {"example.org": [...], ...}
    token = pki.jwt("spiffe://example.org/agents/a")       # a valid JWT-SVID, audience "taskpass"
    pki.write_identity(tmp_path, "agent", leaf, chain=...) # PEM files for gRPC tests
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey, JWKRegistry
from joserfc.jws import JWSRegistry

from taskpass.server.pki.builder import (
    CertSpec,
    Issued,
    ca_spec,
    issue,
    private_key_pem,
    svid_spec,
)
from taskpass.server.pki.devpki import spiffe_bundle_json

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
"""The instant a TestPki is built around; certificates are valid from NOW-1d to NOW+1d."""
AUDIENCE = "taskpass"
EXAMPLE = "example.org"
OTHER = "other.org"


@dataclass(frozen=True, slots=True)
class TrustDomainPki:
    trust_domain: str
    root: Issued
    intermediate: Issued
    """Signed by `root`, pathLen=0: it may sign leaves only."""
    jwt_key: ec.EllipticCurvePrivateKey
    jwt_kid: str


class TestPki:
    """Certificates and tokens for tests. Everything is valid around `now` unless a knob says no."""

    __test__ = False  # not a pytest test class

    def __init__(
        self, now: dt.datetime = NOW, *, trust_domains: Sequence[str] = (EXAMPLE, OTHER)
    ) -> None:
        self.now = now
        self.not_before = now - dt.timedelta(days=1)
        self.not_after = now + dt.timedelta(days=1)
        self.domains: dict[str, TrustDomainPki] = {
            td: self._trust_domain(td) for td in trust_domains
        }

    @property
    def example(self) -> TrustDomainPki:
        return self.domains[EXAMPLE]

    @property
    def other(self) -> TrustDomainPki:
        return self.domains[OTHER]

    # --- X.509 -------------------------------------------------------------------------------

    def ca(
        self,
        common_name: str,
        issuer: Issued | None = None,
        *,
        trust_domain: str | None = None,
        **knobs: Any,
    ) -> Issued:
        """A CA (self-signed without `issuer`); knobs override any CertSpec field."""
        spec = ca_spec(
            common_name,
            not_before=self.not_before,
            not_after=self.not_after,
            trust_domain=trust_domain,
        )
        return issue(dataclasses.replace(spec, **knobs), issuer)

    def leaf(
        self,
        spiffe_id: str = f"spiffe://{EXAMPLE}/agents/billing-bot",
        *,
        issuer: Issued | None = None,
        via_intermediate: bool = False,
        trust_domain: str | None = None,
        **knobs: Any,
    ) -> Issued:
        """An X.509-SVID. The issuer defaults to the root (or intermediate) of `trust_domain`,
        which defaults to the one in `spiffe_id`; knobs override any CertSpec field."""
        spec: CertSpec = svid_spec(spiffe_id, not_before=self.not_before, not_after=self.not_after)
        spec = dataclasses.replace(spec, **knobs)
        if issuer is None:
            domain = self.domains[trust_domain or _trust_domain_of(spiffe_id)]
            issuer = domain.intermediate if via_intermediate else domain.root
        return issue(spec, issuer)

    def client_cert(
        self,
        issuer: Issued,
        *,
        dns_sans: Sequence[str] = (),
        common_name: str | None = None,
        **knobs: Any,
    ) -> Issued:
        """A non-SPIFFE mTLS client certificate (no URI SAN), for certificate mapping."""
        spec = svid_spec("spiffe://unused/x", not_before=self.not_before, not_after=self.not_after)
        spec = dataclasses.replace(
            spec, uri_sans=(), dns_sans=dns_sans, common_name=common_name, **knobs
        )
        return issue(spec, issuer)

    def server(self, trust_domain: str = EXAMPLE) -> Issued:
        """The server's SVID: spiffe://TD/taskpass/server, DNS localhost, IP 127.0.0.1."""
        spec = svid_spec(
            f"spiffe://{trust_domain}/taskpass/server",
            not_before=self.not_before,
            not_after=self.not_after,
            dns_sans=("localhost",),
            ip_sans=("127.0.0.1",),
            server=True,
        )
        return issue(spec, self.domains[trust_domain].root)

    @staticmethod
    def chain_der(leaf: Issued, *intermediates: Issued) -> list[bytes]:
        return [leaf.der, *(i.der for i in intermediates)]

    @staticmethod
    def chain_pem(*certs: Issued) -> bytes:
        return b"".join(c.pem for c in certs)

    # --- bundles -----------------------------------------------------------------------------

    def write_bundles(self, directory: Path) -> dict[str, list[Path]]:
        """Per trust domain: <td>.pem (X.509 root) and <td>.json (SPIFFE bundle, JWT key)."""
        directory.mkdir(parents=True, exist_ok=True)
        sources: dict[str, list[Path]] = {}
        for td, domain in self.domains.items():
            pem = directory / f"{td}.pem"
            pem.write_bytes(domain.root.pem)
            jwks = directory / f"{td}.json"
            jwks.write_bytes(
                spiffe_bundle_json(x509_authorities=[], jwt_keys={domain.jwt_kid: domain.jwt_key})
            )
            sources[td] = [pem, jwks]
        return sources

    @staticmethod
    def write_identity(
        directory: Path, name: str, issued: Issued, chain: Sequence[Issued] = ()
    ) -> tuple[Path, Path]:
        """<name>.pem (leaf then `chain`) and <name>.key (0600), for TLS credentials."""
        directory.mkdir(parents=True, exist_ok=True)
        cert = directory / f"{name}.pem"
        cert.write_bytes(issued.pem + b"".join(c.pem for c in chain))
        key = directory / f"{name}.key"
        key.touch(mode=0o600)
        key.write_bytes(issued.key_pem)
        return cert, key

    # --- JWT-SVIDs ---------------------------------------------------------------------------

    def jwt(
        self,
        sub: str = f"spiffe://{EXAMPLE}/agents/billing-bot",
        *,
        audience: str | list[str] | None = AUDIENCE,
        ttl: dt.timedelta = dt.timedelta(minutes=5),
        signer: str | None = None,
        kid: str | None = None,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        omit: Sequence[str] = (),
    ) -> str:
        """A JWT-SVID signed (ES256) by the JWT key of `signer` (default: sub's trust domain).

        `header`/`claims` add or replace members; `omit` drops claims (e.g. "exp", "aud").
        """
        domain = self.domains[signer or _trust_domain_of(sub)]
        body: dict[str, Any] = {
            "sub": sub,
            "aud": audience,
            "iat": int(self.now.timestamp()),
            "exp": int((self.now + ttl).timestamp()),
        }
        body.update(claims or {})
        for name in omit:
            body.pop(name, None)
        if body.get("aud") is None:
            body.pop("aud", None)
        head: dict[str, Any] = {"alg": "ES256", "kid": kid or domain.jwt_kid, "typ": "JWT"}
        head.update(header or {})
        key = JWKRegistry.import_key(private_key_pem(domain.jwt_key), "EC")
        # Not strict about header names, so tests can add ones a JWT-SVID must not carry.
        registry = JWSRegistry(algorithms=[str(head["alg"])], strict_check_header=False)
        return jwt.encode(head, body, key, registry=registry, default_type=None)

    @staticmethod
    def raw_jws(header: Any, claims: Any, signature: bytes) -> str:
        """A compact JWS with an arbitrary signature, for tokens a JOSE library will not make."""
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return f"{signing_input}.{_b64(signature)}"

    @staticmethod
    def hs256_jws(header: Mapping[str, Any], claims: Mapping[str, Any], secret: bytes) -> str:
        """An HMAC-signed token: the 'public key as HMAC secret' algorithm-confusion attack."""
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"

    def jwt_public_pem(self, trust_domain: str = EXAMPLE) -> bytes:
        return (
            self.domains[trust_domain]
            .jwt_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # --- internals ---------------------------------------------------------------------------

    def _trust_domain(self, td: str) -> TrustDomainPki:
        root = issue(
            ca_spec(
                f"{td} root CA",
                not_before=self.not_before,
                not_after=self.not_after + dt.timedelta(days=30),
                trust_domain=td,
            )
        )
        intermediate = issue(
            ca_spec(
                f"{td} intermediate CA",
                not_before=self.not_before,
                not_after=self.not_after + dt.timedelta(days=7),
                trust_domain=td,
                path_length=0,
            ),
            root,
        )
        jwt_key = ec.generate_private_key(ec.SECP256R1())
        kid = ECKey.import_key(private_key_pem(jwt_key)).thumbprint()
        return TrustDomainPki(td, root, intermediate, jwt_key, kid)


def replace_file(path: Path, data: bytes) -> None:
    """Replace a file atomically (new inode), as a bundle rotation would: reload always sees it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _trust_domain_of(spiffe_id: str) -> str:
    return spiffe_id.removeprefix("spiffe://").split("/", 1)[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
