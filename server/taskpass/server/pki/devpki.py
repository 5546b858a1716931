"""The development PKI behind `taskpass certs init`: a CA, SVIDs for every demo role, a JWT signer.

Layout written under `out` (private keys 0600):

    ca.pem ca.key bundle.pem            the CA; bundle.pem is the X.509 trust bundle
    server.pem server.key               spiffe://TD/taskpass/server, DNS localhost, IP 127.0.0.1
    agents/billing-bot.{pem,key}        spiffe://TD/agents/billing-bot
    agents/report-bot.{pem,key}         spiffe://TD/agents/report-bot
    approvers/alice.{pem,key}           spiffe://TD/humans/approvers/alice
    approvers/bob.{pem,key}             spiffe://TD/humans/approvers/bob
    admins/sec-admin.{pem,key}          spiffe://TD/security/admin
    auditors/auditor.{pem,key}          spiffe://TD/security/auditor
    sidecars/payments-sidecar.{pem,key} spiffe://TD/sidecars/payments
    orchestrators/ci.{pem,key}          spiffe://TD/orchestrators/ci
    tools/runner.{pem,key}              spiffe://TD/tools/runner (a sub-agent for delegation)
    jwt/signer.key jwt/bundle.json      JWT-SVID signing key; SPIFFE bundle (JWKS) to verify it

Never use it outside development: keys are unencrypted files.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import JWKRegistry, Key

from taskpass.server.clock import Clock, SystemClock
from taskpass.server.errors import ConfigError
from taskpass.server.identity.spiffe_id import (
    InvalidSpiffeId,
    SpiffeId,
    parse_spiffe_id,
    validate_trust_domain,
)
from taskpass.server.pki.builder import (
    Issued,
    ca_spec,
    issue,
    private_key_pem,
    svid_spec,
)

DEFAULT_SVID_TTL = dt.timedelta(days=30)
DEFAULT_CA_TTL = dt.timedelta(days=365)
CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates start this long before `now`, so a peer with a slightly slow clock accepts them."""

SERVER_PATH = "/taskpass/server"
DEV_SVIDS: Mapping[str, str] = {
    "agents/billing-bot": "/agents/billing-bot",
    "agents/report-bot": "/agents/report-bot",
    "approvers/alice": "/humans/approvers/alice",
    "approvers/bob": "/humans/approvers/bob",
    "admins/sec-admin": "/security/admin",
    "auditors/auditor": "/security/auditor",
    "sidecars/payments-sidecar": "/sidecars/payments",
    "orchestrators/ci": "/orchestrators/ci",
    "tools/runner": "/tools/runner",
}
"""File prefix under the output directory -> SPIFFE ID path."""

JwkSource = (
    ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | rsa.RSAPrivateKey | rsa.RSAPublicKey
)
_PRIVATE_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)


@dataclass(frozen=True, slots=True)
class SvidFiles:
    spiffe_id: str
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class DevPki:
    directory: Path
    trust_domain: str
    ca_cert: Path
    ca_key: Path
    bundle: Path
    server: SvidFiles
    svids: Mapping[str, SvidFiles]
    """Keyed by file prefix, e.g. 'agents/billing-bot'."""
    jwt_signer_key: Path
    jwt_bundle: Path
    jwt_kid: str


def init_dev_pki(
    out: Path,
    *,
    trust_domain: str,
    clock: Clock | None = None,
    overwrite: bool = False,
    svid_ttl: dt.timedelta = DEFAULT_SVID_TTL,
    ca_ttl: dt.timedelta = DEFAULT_CA_TTL,
) -> DevPki:
    """Generate the dev PKI under `out`. Refuses to replace an existing CA unless `overwrite`."""
    try:
        td = validate_trust_domain(trust_domain)
    except InvalidSpiffeId as exc:
        raise ConfigError(f"{trust_domain!r} is not a valid trust domain: {exc}") from None
    if (out / "ca.key").exists() and not overwrite:
        raise ConfigError(
            f"{out} already holds a dev PKI (ca.key exists); delete the directory to make a new one"
        )
    now = (clock or SystemClock()).now()
    not_before = now - CLOCK_SKEW
    ca = issue(
        ca_spec(
            f"taskpass dev CA ({td})",
            not_before=not_before,
            not_after=now + ca_ttl,
            trust_domain=td,
        )
    )
    ca_cert, ca_key = out / "ca.pem", out / "ca.key"
    _write_public(ca_cert, ca.pem)
    _write_private(ca_key, ca.key_pem)
    bundle = out / "bundle.pem"
    _write_public(bundle, ca.pem)

    def make(prefix: str, path: str, *, server: bool = False) -> SvidFiles:
        spiffe_id = f"spiffe://{td}{path}"
        spec = svid_spec(
            spiffe_id,
            not_before=not_before,
            not_after=now + svid_ttl,
            dns_sans=("localhost",) if server else (),
            ip_sans=("127.0.0.1",) if server else (),
            server=server,
        )
        return _write_svid(issue(spec, ca), out / prefix, spiffe_id)

    server_files = make("server", SERVER_PATH, server=True)
    svids = {prefix: make(prefix, path) for prefix, path in DEV_SVIDS.items()}

    signer = ec.generate_private_key(ec.SECP256R1())
    signer_key = out / "jwt" / "signer.key"
    _write_private(signer_key, private_key_pem(signer))
    jwt_key = _public_jwk(signer)
    kid = jwt_key.thumbprint()
    jwt_bundle = out / "jwt" / "bundle.json"
    _write_public(
        jwt_bundle, spiffe_bundle_json(x509_authorities=[ca.cert], jwt_keys={kid: signer})
    )
    return DevPki(
        directory=out,
        trust_domain=td,
        ca_cert=ca_cert,
        ca_key=ca_key,
        bundle=bundle,
        server=server_files,
        svids=svids,
        jwt_signer_key=signer_key,
        jwt_bundle=jwt_bundle,
        jwt_kid=kid,
    )


def issue_svid(
    ca_dir: Path,
    spiffe_id: str,
    out_prefix: Path,
    *,
    ttl: dt.timedelta,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    clock: Clock | None = None,
) -> None:
    """Write `out_prefix`.pem/.key: an SVID signed by ca_dir/ca.pem + ca.key.

    With DNS names or IP addresses it is also a TLS server certificate (EKU serverAuth).
    """
    _checked_spiffe_id(spiffe_id, need_path=True)
    ca = _load_ca(ca_dir)
    now = (clock or SystemClock()).now()
    not_after = min(now + ttl, ca.cert.not_valid_after_utc)
    spec = svid_spec(
        spiffe_id,
        not_before=now - CLOCK_SKEW,
        not_after=not_after,
        dns_sans=dns_names,
        ip_sans=ip_addresses,
        server=bool(dns_names or ip_addresses),
    )
    _write_svid(issue(spec, ca), out_prefix, spiffe_id)


def mint_jwt_svid(
    signer_key: Path,
    *,
    spiffe_id: str,
    audience: Sequence[str],
    ttl: dt.timedelta,
    kid: str | None = None,
    clock: Clock | None = None,
) -> str:
    """A JWT-SVID (header alg, kid, typ JWT; claims sub, aud, exp, iat) signed with `signer_key`.

    `kid` defaults to the key's RFC 7638 thumbprint, which is what `init_dev_pki` publishes.
    """
    _checked_spiffe_id(spiffe_id, need_path=True)
    if not audience:
        raise ConfigError("a JWT-SVID needs at least one audience")
    try:
        private = serialization.load_pem_private_key(signer_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"{signer_key}: cannot read an unencrypted PEM private key") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{signer_key}: a JWT-SVID signer must be an EC or RSA key")
    key = JWKRegistry.import_key(private_key_pem(private), "EC" if _is_ec(private) else "RSA")
    alg = _jws_alg(private)
    now = (clock or SystemClock()).now()
    claims = {
        "sub": spiffe_id,
        "aud": list(audience),
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    header = {"alg": alg, "kid": kid or _public_jwk(private).thumbprint(), "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[alg])


def spiffe_bundle_json(
    *,
    x509_authorities: Sequence[x509.Certificate],
    jwt_keys: Mapping[str, JwkSource],
    sequence: int = 1,
    refresh_hint_seconds: int = 300,
) -> bytes:
    """A SPIFFE bundle (JWKS) document with these X.509 and JWT authorities (public parts)."""
    keys: list[dict[str, Any]] = []
    for cert in x509_authorities:
        ca_key = cert.public_key()
        if not isinstance(ca_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ConfigError("a SPIFFE bundle X.509 authority must have an EC or RSA key")
        entry = dict(_public_jwk(ca_key).as_dict())
        der = cert.public_bytes(serialization.Encoding.DER)
        entry.update({"use": "x509-svid", "x5c": [base64.b64encode(der).decode()]})
        keys.append(entry)
    for kid, key in jwt_keys.items():
        entry = dict(_public_jwk(key).as_dict())
        entry.update({"use": "jwt-svid", "kid": kid})
        keys.append(entry)
    document = {
        "keys": keys,
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint_seconds,
    }
    return json.dumps(document, indent=2).encode() + b"\n"


def _public_jwk(key: JwkSource) -> Key:
    """The public JWK of a key; a private key is reduced to its public half."""
    public = key.public_key() if isinstance(key, _PRIVATE_TYPES) else key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return JWKRegistry.import_key(pem, "EC" if _is_ec(public) else "RSA")


def _is_ec(key: JwkSource) -> bool:
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)


def _jws_alg(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]


def _checked_spiffe_id(value: str, *, need_path: bool = False) -> SpiffeId:
    try:
        spiffe_id = parse_spiffe_id(value)
    except InvalidSpiffeId as exc:
        raise ConfigError(f"{value!r} is not a valid SPIFFE ID: {exc}") from None
    if need_path and spiffe_id.is_root:
        raise ConfigError(f"{value!r} names a trust domain; an SVID needs a path")
    return spiffe_id


def _load_ca(ca_dir: Path) -> Issued:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError, TypeError, x509.InvalidVersion):
        raise ConfigError(f"{ca_dir}: cannot read ca.pem and ca.key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{ca_dir}/ca.key: the CA key must be EC or RSA")
    return Issued(cert=cert, key=key)


def _write_svid(issued: Issued, prefix: Path, spiffe_id: str) -> SvidFiles:
    cert, key = prefix.with_name(prefix.name + ".pem"), prefix.with_name(prefix.name + ".key")
    _write_public(cert, issued.pem)
    _write_private(key, issued.key_pem)
    return SvidFiles(spiffe_id=spiffe_id, cert=cert, key=key)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)
