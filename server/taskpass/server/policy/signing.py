"""Detached signatures over policy documents: security signs, the server verifies before loading.

A signature file (`policy.yaml.sig`) holds the base64 of one signature over the exact bytes of
the document: Ed25519 (RFC 8032) or ECDSA with SHA-256 (P-256) / SHA-384 (P-384), DER-encoded.
That is what `cosign sign-blob` and `openssl pkeyutl -sign -rawin` / `openssl dgst -sign` write,
so a team can sign with its existing tooling or an HSM instead of `taskpass policy sign`.

The signer public keys (PEM) come from the bootstrap config (`[policy] signers`); a document is
accepted when any of them verifies its signature. Keys are named by `key_id`: "sha256:" and the
hex SHA-256 of the DER SubjectPublicKeyInfo, as `openssl pkey -pubout -outform DER | sha256sum`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from taskpass.server.errors import ConfigError

SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 1024
MAX_KEY_FILE_BYTES = 16 * 1024

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

_EC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
}


def signature_path(document: Path) -> Path:
    """Where the detached signature of `document` lives: the same name plus `.sig`."""
    return document.with_name(document.name + SIGNATURE_SUFFIX)


def key_id(key: PublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _checked_public(key: object, source: str) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_HASHES:
        return key
    raise ConfigError(
        f"{source}: a policy signer key must be Ed25519 or ECDSA P-256/P-384"
        f" (got {type(key).__name__})"
    )


def _checked_private(key: object, source: str) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_HASHES:
        return key
    raise ConfigError(f"{source}: a policy signing key must be Ed25519 or ECDSA P-256/P-384")


def _read_small(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    if len(raw) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes; is it the right file?")
    return raw


@dataclass(frozen=True, slots=True)
class Signer:
    """A trusted policy signer: its public key and where it was configured."""

    key: PublicKey
    source: str

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str) -> Signer:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise ConfigError(
                f"{source}: not a PEM public key (SubjectPublicKeyInfo: '-----BEGIN PUBLIC KEY')"
            ) from None
        return cls(_checked_public(key, source), source)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls.from_pem(
            _read_small(path, MAX_KEY_FILE_BYTES, "policy signer key"), source=str(path)
        )

    def verifies(self, document: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, document)
            else:
                algorithm = _EC_HASHES[self.key.curve.name]()
                self.key.verify(signature, document, ec.ECDSA(algorithm))
        except InvalidSignature:
            return False
        return True


def decode_signature(text: bytes, *, source: str) -> bytes:
    """The raw signature from a `.sig` file's base64 text (surrounding whitespace allowed)."""
    if len(text) > MAX_SIGNATURE_BYTES:
        raise ConfigError(f"{source}: a signature file is at most {MAX_SIGNATURE_BYTES} bytes")
    try:
        raw = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: not a base64 signature") from None
    if not raw:
        raise ConfigError(f"{source}: the signature file is empty")
    return raw


class PolicyVerifier:
    """Checks a document's detached signature against the configured signers."""

    def __init__(self, signers: Sequence[Signer]) -> None:
        self._signers = tuple(signers)

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> PolicyVerifier:
        return cls([Signer.from_file(p) for p in paths])

    @property
    def signers(self) -> tuple[Signer, ...]:
        return self._signers

    def verify(self, document: bytes, signature_text: bytes | None, *, source: str) -> Signer:
        """The signer whose key verifies `signature_text` (base64) over `document`.

        Raises ConfigError saying what is missing or wrong; the caller keeps the policy it had.
        """
        if not self._signers:
            raise ConfigError(
                f"{source}: cannot check its signature: no policy signers are configured "
                "(list their public keys in [policy] signers)"
            )
        if signature_text is None:
            raise ConfigError(
                f"{source}: unsigned policy refused: sign it (taskpass policy sign --key KEY FILE "
                f"writes FILE{SIGNATURE_SUFFIX}) with a key listed in [policy] signers"
            )
        signature = decode_signature(signature_text, source=f"signature of {source}")
        for signer in self._signers:
            if signer.verifies(document, signature):
                return signer
        raise ConfigError(
            f"{source}: bad signature: no configured policy signer verifies it (the document "
            "changed after signing, or it was signed with a key not in [policy] signers)"
        )


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted PEM (PKCS#8 or traditional) Ed25519 or EC private key."""
    pem = _read_small(path, MAX_KEY_FILE_BYTES, "policy signing key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{path}: not an unencrypted PEM private key (decrypt it first, or sign with your "
            "own tooling: the .sig file is base64 of a raw signature)"
        ) from None
    return _checked_private(key, str(path))


def sign(document: bytes, key: PrivateKey) -> bytes:
    """The `.sig` file content for `document`: base64 of the signature, with a newline."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(document)
    else:
        signature = key.sign(document, ec.ECDSA(_EC_HASHES[key.curve.name]()))
    return base64.b64encode(signature) + b"\n"


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
