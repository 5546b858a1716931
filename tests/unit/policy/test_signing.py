"""Detached policy signatures: what verifies, what is refused, and interop with openssl."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from taskpass.server.errors import ConfigError
from taskpass.server.policy import signing
from taskpass.server.policy.signing import PolicyVerifier, Signer

DOCUMENT = b'version: "1"\nrules: []\n'

KeyMaker = Callable[[], signing.PrivateKey]
KEYS = [
    pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ecdsa-p256"),
    pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ecdsa-p384"),
]


def signer_of(key: signing.PrivateKey) -> Signer:
    return Signer.from_pem(signing.public_pem(key), source="test")


@pytest.mark.parametrize("make_key", KEYS)
def test_a_signature_by_a_configured_signer_verifies(make_key: KeyMaker) -> None:
    key = make_key()
    verifier = PolicyVerifier([signer_of(key)])

    signer = verifier.verify(DOCUMENT, signing.sign(DOCUMENT, key), source="p.yaml")

    assert signer.key_id == signer_of(key).key_id


def test_the_signer_that_verifies_is_reported_among_several() -> None:
    first, second = signing.generate_key(), signing.generate_key()
    verifier = PolicyVerifier([signer_of(first), signer_of(second)])

    signer = verifier.verify(DOCUMENT, signing.sign(DOCUMENT, second), source="p.yaml")

    assert signer.key_id == signer_of(second).key_id


@pytest.mark.parametrize(
    ("document", "signed_by", "phrase"),
    [
        pytest.param(DOCUMENT + b"# one more line\n", "signer", "bad signature", id="edited"),
        pytest.param(DOCUMENT, "stranger", "bad signature", id="unlisted-key"),
    ],
)
def test_an_edited_document_or_an_unlisted_key_is_refused(
    document: bytes, signed_by: str, phrase: str
) -> None:
    key, stranger = signing.generate_key(), signing.generate_key()
    signature = signing.sign(DOCUMENT, key if signed_by == "signer" else stranger)

    with pytest.raises(ConfigError, match=phrase):
        PolicyVerifier([signer_of(key)]).verify(document, signature, source="p.yaml")


@pytest.mark.parametrize(
    ("signature", "phrase"),
    [
        pytest.param(None, "unsigned policy refused", id="absent"),
        pytest.param(b"not base64!", "not a base64 signature", id="not-base64"),
        pytest.param(b"\n", "empty", id="empty"),
        pytest.param(b"A" * 2000, "at most", id="oversized"),
        pytest.param(base64.b64encode(b"x" * 64), "bad signature", id="garbage-bytes"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused(signature: bytes | None, phrase: str) -> None:
    verifier = PolicyVerifier([signer_of(signing.generate_key())])

    with pytest.raises(ConfigError, match=phrase):
        verifier.verify(DOCUMENT, signature, source="p.yaml")


def test_nothing_verifies_without_configured_signers() -> None:
    key = signing.generate_key()
    with pytest.raises(ConfigError, match="no policy signers are configured"):
        PolicyVerifier([]).verify(DOCUMENT, signing.sign(DOCUMENT, key), source="p.yaml")


def test_an_rsa_or_small_curve_signer_key_is_refused_at_load() -> None:
    for key in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256K1()),
    ):
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(ConfigError, match="Ed25519 or ECDSA"):
            Signer.from_pem(pem, source="k.pem")


def test_a_signer_file_that_is_not_a_public_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "signer.pem"
    path.write_bytes(signing.private_pem(signing.generate_key()))

    with pytest.raises(ConfigError, match=r"signer\.pem: not a PEM public key"):
        Signer.from_file(path)


def test_the_key_id_is_the_sha256_of_the_public_key_der() -> None:
    key = signing.generate_key()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    assert signer_of(key).key_id == "sha256:" + hashlib.sha256(der).hexdigest()


def test_signature_file_sits_beside_the_document() -> None:
    assert signing.signature_path(Path("/etc/p/policy.yaml")) == Path("/etc/p/policy.yaml.sig")


def test_private_key_round_trips_through_pem(tmp_path: Path) -> None:
    key = signing.generate_key()
    path = tmp_path / "k.pem"
    path.write_bytes(signing.private_pem(key))

    loaded = signing.load_private_key(path)

    assert signing.public_pem(loaded) == signing.public_pem(key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(
    ("algorithm", "sign_args"),
    [
        pytest.param("ed25519", ["pkeyutl", "-sign", "-rawin"], id="ed25519-pkeyutl"),
        pytest.param("ec", ["dgst", "-sha256", "-sign"], id="ecdsa-p256-dgst"),
    ],
)
def test_a_signature_made_with_openssl_verifies(
    tmp_path: Path, algorithm: str, sign_args: list[str]
) -> None:
    key_file, document_file = tmp_path / "k.pem", tmp_path / "policy.yaml"
    document_file.write_bytes(DOCUMENT)
    if algorithm == "ed25519":
        generate = ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key_file)]
    else:
        generate = ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-out", str(key_file)]
    subprocess.run(generate, check=True, capture_output=True)
    if sign_args[0] == "pkeyutl":
        command = ["openssl", *sign_args, "-inkey", str(key_file), "-in", str(document_file)]
    else:
        command = ["openssl", *sign_args, str(key_file), str(document_file)]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-pubout"], check=True, capture_output=True
    ).stdout

    verifier = PolicyVerifier([Signer.from_pem(public, source="openssl")])

    assert verifier.verify(DOCUMENT, base64.b64encode(raw), source="policy.yaml")
