"""Interoperability: a credential verifies with PyJWT alone (a JOSE library taskpass does not use
itself), given nothing but the JWKS served at /.well-known/jwks.json."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import jwt as pyjwt
import pytest

from taskpass.client import Task
from taskpass.client.jwks import JWKS_PATH
from tests.integration.harness import BILLING_BOT, ISSUER, Harness


async def test_a_credential_verifies_with_pyjwt_and_the_published_jwks(harness: Harness) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    async with harness.client(leaf) as client:
        token = (await client.exchange(Task("t-pyjwt", "payments-api", "read"))).token
    url = f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"
    jwks_client = pyjwt.PyJWKClient(url, cache_keys=False)
    # PyJWKClient fetches with urllib (blocking): off the loop the server under test runs on
    signing_key = await asyncio.to_thread(jwks_client.get_signing_key_from_jwt, token)
    claims = pyjwt.decode(
        token,
        signing_key,
        algorithms=["ES256", "EdDSA"],
        audience="payments-api",
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert pyjwt.get_unverified_header(token)["typ"] == "at+jwt"
    assert claims["sub"] == claims["client_id"] == BILLING_BOT
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(leaf.der).digest()).rstrip(b"=")
    assert claims["cnf"] == {"x5t#S256": thumbprint.decode()}


async def test_pyjwt_rejects_a_tampered_credential_with_the_same_jwks(harness: Harness) -> None:
    async with harness.agent() as client:
        token = (await client.exchange(Task("t-pyjwt2", "payments-api", "read"))).token
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "payments:write"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{forged}.{signature}"
    url = f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"
    signing_key = await asyncio.to_thread(
        pyjwt.PyJWKClient(url, cache_keys=False).get_signing_key_from_jwt, token
    )
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(tampered, signing_key, algorithms=["ES256"], audience="payments-api")


async def test_a_revocation_set_verifies_with_pyjwt_and_the_published_jwks(
    harness: Harness,
) -> None:
    async with harness.agent() as client:
        credential = await client.exchange(Task("t-set", "payments-api", "read"))
        await client.complete_task("t-set")
    events = await harness.server.store.revocations.read_after(0, limit=10)
    set_token = events[-1].set_token
    url = f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"
    signing_key = await asyncio.to_thread(
        pyjwt.PyJWKClient(url, cache_keys=False).get_signing_key_from_jwt, set_token
    )
    # RFC 8417: a SET has no `exp` and no `aud` of ours to check; iss, iat and jti it has.
    claims = pyjwt.decode(
        set_token,
        signing_key,
        algorithms=["ES256", "EdDSA"],
        issuer=ISSUER,
        options={"verify_aud": False, "require": ["iss", "iat", "jti"]},
    )
    assert pyjwt.get_unverified_header(set_token)["typ"] == "secevent+jwt"
    assert claims["txn"] == "t-set"
    assert list(claims["events"]) == [
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
    ]
    assert claims["sub_id"]["format"] == "complex"
    assert claims["sub_id"]["session"] == {"format": "opaque", "id": "t-set"}
    assert claims["sub_id"]["user"]["sub"] == BILLING_BOT
    assert credential.jti
