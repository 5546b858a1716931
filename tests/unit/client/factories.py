"""Signing keys, JWKS documents and tokens for the SDK's unit tests, built with the server's own
signer (issuer/jws.py) so the tokens are byte-for-byte what taskpass issues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from taskpass.client.verifier import certificate_thumbprint
from taskpass.server.issuer.jws import sign_compact
from taskpass.server.issuer.keys import Algorithm, KeyState, SigningKey, generate_private_key
from tests.support.pki import NOW, TestPki

ISSUER = "https://taskpass.example.org"
AUDIENCE = "payments-api"
AGENT = "spiffe://example.org/agents/billing-bot"
OTHER_AGENT = "spiffe://example.org/agents/report-bot"

PKI = TestPki(NOW)
AGENT_CERT = PKI.leaf(AGENT)
OTHER_CERT = PKI.leaf(OTHER_AGENT)
BINDING = certificate_thumbprint(AGENT_CERT.der)


def signing_key(algorithm: Algorithm = "ES256") -> SigningKey:
    return SigningKey.from_private_key(
        generate_private_key(algorithm), created_at=NOW, state=KeyState.ACTIVE
    )


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


def claims(
    *,
    now: dt.datetime = NOW,
    ttl: dt.timedelta = dt.timedelta(minutes=10),
    bound: bool = True,
    omit: Sequence[str] = (),
    **changes: Any,
) -> dict[str, Any]:
    """The claims the issuer puts in a credential (tokens.py), changed by `changes`."""
    iat = int(now.timestamp())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": AGENT,
        "client_id": AGENT,
        "aud": AUDIENCE,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl.total_seconds()),
        "jti": "jti-1",
        "txn": "task-42",
        "scope": "payments:read payments:list",
        "task": {"action": "read", "sensitivity": "internal", "policy_version": "sha256:abc"},
    }
    if bound:
        body["cnf"] = {"x5t#S256": BINDING}
    body.update(changes)
    for name in omit:
        body.pop(name)
    return body


def mint(key: SigningKey, *, typ: str = "at+jwt", body: Mapping[str, Any] | None = None) -> str:
    return sign_compact(key, typ=typ, claims=claims() if body is None else body)
