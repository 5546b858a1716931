"""Trust bundles per trust domain, loaded from files and reloaded without a restart.

A configured source is a PEM file of X.509 roots, a SPIFFE bundle (JWKS: `use: x509-svid` keys
carry one `x5c` certificate, `use: jwt-svid` keys carry a `kid`), or a directory holding such files
(`*.pem`, `*.crt`, `*.json`), so that dropping a new file in is picked up by the next reload.

The loaded set is an immutable snapshot swapped in with one assignment: readers never see half a
reload and never take a lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.verification import Store
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, RSAKey

from taskpass.server.errors import ConfigError
from taskpass.server.identity.chain import PARSE_ERRORS
from taskpass.server.identity.spiffe_id import InvalidSpiffeId, validate_trust_domain

log = logging.getLogger(__name__)

_SHA256 = hashes.SHA256()

MAX_BUNDLE_FILE_BYTES = 4 * 1024 * 1024
_PEM_SUFFIXES = (".pem", ".crt")
_JSON_SUFFIXES = (".json", ".jwks")
# Only public key material is taken from a JWK: "use", "x5c", "alg" and friends would make
# joserfc refuse the key for signature checks, and private members must never be loaded.
_PUBLIC_JWK_MEMBERS = {"EC": ("kty", "crv", "x", "y"), "RSA": ("kty", "n", "e")}
_X5C_ERRORS: tuple[type[Exception], ...] = (binascii.Error, *PARSE_ERRORS)
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


@dataclass(frozen=True, slots=True)
class TrustDomainBundle:
    """The authorities of one trust domain."""

    trust_domain: str
    x509_authorities: tuple[x509.Certificate, ...]
    """CA certificates that may anchor an X.509-SVID chain for this trust domain."""
    jwt_authorities: Mapping[str, Key]
    """kid -> public key that may sign a JWT-SVID for this trust domain."""
    x509_store: Store | None
    """`x509_authorities` as a path-validation store, built once per load (None when empty)."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    reloaded: bool
    """True when a changed set was loaded and swapped in (and `generation` went up)."""
    error: ConfigError | None = None
    """Why a changed set was rejected; the previous set stays in force."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    generation: int
    bundles: Mapping[str, TrustDomainBundle]


class TrustBundles:
    """Per-trust-domain X.509 and JWT authorities, from files, reloadable.

    `sources` maps a trust domain name to files or directories. A broken source at construction
    raises ConfigError naming the file and the trust domain.
    """

    def __init__(self, sources: Mapping[str, Sequence[Path | str]]) -> None:
        self._sources: dict[str, tuple[Path, ...]] = {}
        for trust_domain, paths in sources.items():
            try:
                validate_trust_domain(trust_domain)
            except InvalidSpiffeId as exc:
                raise ConfigError(f"trust bundle configuration: {exc.reason}") from None
            if not paths:
                raise ConfigError(f"trust bundle for {trust_domain}: no files configured")
            self._sources[trust_domain] = tuple(Path(p) for p in paths)
        self._reload_lock = threading.Lock()
        self._seen = self._fingerprint()
        self._snapshot = _Snapshot(generation=1, bundles=self._load_all())

    @property
    def generation(self) -> int:
        """Goes up by one on every successful reload; caches compare it to drop stale entries."""
        return self._snapshot.generation

    @property
    def trust_domains(self) -> tuple[str, ...]:
        return tuple(self._snapshot.bundles)

    def get(self, trust_domain: str) -> TrustDomainBundle | None:
        return self._snapshot.bundles.get(trust_domain)

    def reload_if_changed(self) -> ReloadResult:
        """Re-read every source if any file changed (mtime, size or inode); cheap when none did.

        A changed set that fails to load is not retried until the files change again.
        """
        with self._reload_lock:
            seen = self._fingerprint()
            if seen == self._seen:
                return ReloadResult(reloaded=False)
            self._seen = seen
            try:
                bundles = self._load_all()
            except ConfigError as exc:
                log.error("trust bundle reload rejected; keeping the previous set: %s", exc)
                return ReloadResult(reloaded=False, error=exc)
            self._snapshot = _Snapshot(self._snapshot.generation + 1, bundles)
            log.info("trust bundles reloaded (generation %d)", self._snapshot.generation)
            return ReloadResult(reloaded=True)

    def _fingerprint(self) -> tuple[object, ...]:
        return tuple(_stat_key(path) for paths in self._sources.values() for path in paths)

    def _load_all(self) -> Mapping[str, TrustDomainBundle]:
        return types.MappingProxyType(
            {td: _load_trust_domain(td, paths) for td, paths in self._sources.items()}
        )


def _stat_key(path: Path) -> object:
    try:
        st = path.stat()
        if path.is_dir():
            return (str(path), st.st_mtime_ns, tuple(_stat_key(f) for f in _bundle_files(path)))
    except OSError:
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def _bundle_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in _PEM_SUFFIXES + _JSON_SUFFIXES and not p.name.startswith(".")
    )


def _load_trust_domain(trust_domain: str, paths: Iterable[Path]) -> TrustDomainBundle:
    authorities: dict[bytes, x509.Certificate] = {}
    jwt_authorities: dict[str, Key] = {}
    for source in paths:
        try:
            files = _bundle_files(source) if source.is_dir() else [source]
        except OSError as exc:
            raise _error(trust_domain, source, f"cannot list directory ({exc.strerror})") from None
        for path in files:
            certs, keys = _load_file(trust_domain, path)
            for cert in certs:
                authorities.setdefault(cert.fingerprint(_SHA256), cert)
            for kid, key in keys.items():
                known = jwt_authorities.get(kid)
                if known is not None and known.thumbprint() != key.thumbprint():
                    raise _error(trust_domain, path, f"JWT authority kid {kid!r} is defined twice")
                jwt_authorities[kid] = key
    if not authorities and not jwt_authorities:
        raise ConfigError(
            f"trust bundle for {trust_domain}: the configured files hold no X.509 or JWT "
            "authority; add the trust domain's CA certificate or SPIFFE bundle"
        )
    anchors = tuple(authorities.values())
    return TrustDomainBundle(
        trust_domain=trust_domain,
        x509_authorities=anchors,
        jwt_authorities=types.MappingProxyType(jwt_authorities),
        x509_store=Store(list(anchors)) if anchors else None,
    )


def _load_file(trust_domain: str, path: Path) -> tuple[list[x509.Certificate], dict[str, Key]]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BUNDLE_FILE_BYTES + 1)
    except OSError as exc:
        raise _error(trust_domain, path, f"cannot read ({exc.strerror})") from None
    if len(data) > MAX_BUNDLE_FILE_BYTES:
        raise _error(trust_domain, path, f"larger than {MAX_BUNDLE_FILE_BYTES} bytes")
    if path.suffix in _JSON_SUFFIXES:
        return _parse_spiffe_bundle(trust_domain, path, data)
    if path.suffix in _PEM_SUFFIXES:
        return _parse_pem(trust_domain, path, data), {}
    raise _error(trust_domain, path, "unknown file type; use .pem/.crt (X.509) or .json (JWKS)")


def _parse_pem(trust_domain: str, path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except PARSE_ERRORS:
        raise _error(trust_domain, path, "not a PEM file of X.509 certificates") from None
    for index, cert in enumerate(certs):
        _require_ca(trust_domain, path, cert, f"certificate #{index + 1}")
    return certs


def _parse_spiffe_bundle(
    trust_domain: str, path: Path, data: bytes
) -> tuple[list[x509.Certificate], dict[str, Key]]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _error(trust_domain, path, "not valid JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise _error(trust_domain, path, "a SPIFFE bundle is a JWKS object with a 'keys' array")
    certs: list[x509.Certificate] = []
    jwt_keys: dict[str, Key] = {}
    for index, jwk in enumerate(keys):
        where = f"keys[{index}]"
        if not isinstance(jwk, dict):
            raise _error(trust_domain, path, f"{where} is not a JSON object")
        use = jwk.get("use")
        if use == "x509-svid":
            certs.append(_x509_authority(trust_domain, path, where, jwk))
        elif use == "jwt-svid":
            kid, key = _jwt_authority(trust_domain, path, where, jwk)
            if kid in jwt_keys:
                raise _error(trust_domain, path, f"{where}: kid {kid!r} appears twice")
            jwt_keys[kid] = key
        # The SPIFFE bundle format says keys of any other use are ignored.
    return certs, jwt_keys


def _x509_authority(
    trust_domain: str, path: Path, where: str, jwk: Mapping[str, Any]
) -> x509.Certificate:
    x5c = jwk.get("x5c")
    if not (isinstance(x5c, list) and len(x5c) == 1 and isinstance(x5c[0], str)):
        raise _error(trust_domain, path, f"{where}: an x509-svid key needs exactly one x5c entry")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(x5c[0], validate=True))
    except _X5C_ERRORS:
        raise _error(trust_domain, path, f"{where}: x5c is not a base64 DER certificate") from None
    _require_ca(trust_domain, path, cert, where)
    return cert


def _jwt_authority(
    trust_domain: str, path: Path, where: str, jwk: Mapping[str, Any]
) -> tuple[str, Key]:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _error(trust_domain, path, f"{where}: a jwt-svid key needs a non-empty 'kid'")
    if any(member in jwk for member in _PRIVATE_JWK_MEMBERS):
        raise _error(
            trust_domain, path, f"{where}: holds private key material; publish only the public key"
        )
    members = _PUBLIC_JWK_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise _error(trust_domain, path, f"{where}: kty must be EC or RSA for a JWT-SVID key")
    public = {m: jwk[m] for m in members if m in jwk}
    try:
        key = JWKRegistry.import_key(public)
    except (JoseError, ValueError, TypeError, KeyError):
        raise _error(trust_domain, path, f"{where}: not a valid {jwk['kty']} public key") from None
    if not isinstance(key, ECKey | RSAKey):
        raise _error(trust_domain, path, f"{where}: unsupported key type")
    return kid, key


def _require_ca(trust_domain: str, path: Path, cert: x509.Certificate, where: str) -> None:
    """A bundle CA must pass the CA profile path validation applies, or nothing would chain."""
    try:
        exts = cert.extensions
    except PARSE_ERRORS:
        raise _error(trust_domain, path, f"{where}: has malformed extensions") from None
    try:
        constraints: x509.Extension[x509.BasicConstraints] | None = exts.get_extension_for_class(
            x509.BasicConstraints
        )
    except x509.ExtensionNotFound:
        constraints = None
    try:
        usage: x509.KeyUsage | None = exts.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if constraints is None or not constraints.value.ca or not constraints.critical:
        raise _error(
            trust_domain,
            path,
            f"{where} is not a CA certificate (critical basicConstraints cA=true); a bundle "
            "holds CAs",
        )
    if usage is None or not usage.key_cert_sign:
        raise _error(trust_domain, path, f"{where}: a CA needs keyUsage keyCertSign")


def _error(trust_domain: str, path: Path, problem: str) -> ConfigError:
    return ConfigError(f"trust bundle for {trust_domain}: {os.fspath(path)}: {problem}")
