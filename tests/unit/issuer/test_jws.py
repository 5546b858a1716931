from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwk, jws

from taskpass.server.issuer.jws import b64url, header_segment, sign_compact, sign_segments
from taskpass.server.issuer.keys import KeyState, SigningKey
from tests.unit.issuer.factories import START

# RFC 8037 Appendix A.1 and A.4: an Ed25519 key and the JWS it produces (Ed25519 is deterministic).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def b64decode(value: str | bytes) -> bytes:
    text = value.decode() if isinstance(value, bytes) else value
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_eddsa_signing_reproduces_the_rfc_8037_example() -> None:
    private_key = ed25519.Ed25519PrivateKey.from_private_bytes(b64decode(RFC8037_D))
    key = SigningKey.from_private_key(private_key, created_at=START, state=KeyState.ACTIVE)

    token = sign_segments(key, b64url(b'{"alg":"EdDSA"}'), b64url(b"Example of Ed25519 signing"))

    assert token == RFC8037_JWS


def test_es256_signature_is_raw_r_and_s_not_der() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey.from_private_key(private_key, created_at=START, state=KeyState.ACTIVE)

    token = sign_compact(key, typ="JWT", claims={"sub": "x"})
    signing_input, _, signature = token.rpartition(".")
    raw = b64decode(signature)

    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    private_key.public_key().verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))


def test_compact_jws_verifies_with_joserfc_and_carries_the_header() -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey.from_private_key(private_key, created_at=START, state=KeyState.ACTIVE)

    token = sign_compact(key, typ="at+jwt", claims={"sub": "x", "n": 1})
    verified = jws.deserialize_compact(
        token, jwk.import_key(key.public_jwk()), algorithms=["ES256"]
    )

    assert verified.protected == {"typ": "at+jwt", "alg": "ES256", "kid": key.kid}
    assert verified.payload == b'{"sub":"x","n":1}'


def test_header_segment_is_compact_json() -> None:
    assert b64decode(header_segment("ES256", "k1", "at+jwt")) == (
        b'{"typ":"at+jwt","alg":"ES256","kid":"k1"}'
    )
