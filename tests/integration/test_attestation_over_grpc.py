"""Attestation through a real TLS handshake: every hostile certificate and token is refused with
the exact status and a message naming the rule, and the server keeps serving afterwards."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from taskpass.client import AttestationFailed, Task, TaskpassClient, Unavailable
from taskpass.server.pki.builder import SERVER_AUTH, Issued, Usage
from tests.integration.harness import AUDIENCE, BILLING_BOT, LEGACY_DNS, Harness
from tests.support.pki import OTHER, TestPki

TASK = Task(task_id="t-1", audience="payments-api", action="read")
HOUR = dt.timedelta(hours=1)


async def assert_still_serving(harness: Harness) -> None:
    async with harness.agent() as client:
        credential = await client.exchange(
            Task(task_id="t-ok", audience="payments-api", action="read")
        )
    assert credential.jti


async def test_leaf_plus_intermediate_chain_is_accepted(harness: Harness) -> None:
    pki = harness.pki
    leaf = pki.leaf(BILLING_BOT, via_intermediate=True)
    async with harness.client(leaf, [pki.example.intermediate]) as client:
        credential = await client.exchange(TASK)
    assert credential.scopes == ("payments:read",)


async def test_mapped_workload_certificate_gets_its_configured_identity(harness: Harness) -> None:
    cert = harness.pki.client_cert(harness.legacy_ca, dns_sans=[LEGACY_DNS])
    async with harness.client(cert) as client:
        credential = await client.exchange(TASK)
    assert credential.matched_rules == ("grant.mapped.read",)


def _bad_leaf(pki: TestPki, case: str) -> Any:
    example_root = pki.example.root
    cases: dict[str, Any] = {
        "X-9 CA of example.org vouching for an other.org ID": lambda: pki.leaf(
            f"spiffe://{OTHER}/agents/billing-bot", issuer=example_root
        ),
        "X-3 leaf with cA=true": lambda: pki.leaf(BILLING_BOT, ca=True),
        "X-4 leaf with keyCertSign": lambda: pki.leaf(
            BILLING_BOT, key_usage=frozenset({Usage.DIGITAL_SIGNATURE, Usage.KEY_CERT_SIGN})
        ),
        "X-1 two URI SANs": lambda: pki.leaf(
            BILLING_BOT, uri_sans=(BILLING_BOT, f"{BILLING_BOT}-2")
        ),
        "M-2 non-SPIFFE URI SAN and no mapping rule": lambda: pki.leaf(
            BILLING_BOT, uri_sans=("https://example.org/bot",)
        ),
        "X-2 SPIFFE ID with no path": lambda: pki.leaf(
            BILLING_BOT, uri_sans=("spiffe://example.org",)
        ),
        "X-2 (ID-2) upper-case trust domain": lambda: pki.leaf(
            BILLING_BOT, uri_sans=("spiffe://Example.org/agents/bot",)
        ),
    }
    return cases[case]()


@pytest.mark.parametrize(
    "case",
    [
        "X-9 CA of example.org vouching for an other.org ID",
        "X-3 leaf with cA=true",
        "X-4 leaf with keyCertSign",
        "X-1 two URI SANs",
        "M-2 non-SPIFFE URI SAN and no mapping rule",
        "X-2 SPIFFE ID with no path",
        "X-2 (ID-2) upper-case trust domain",
    ],
)
async def test_hostile_x509_svid_is_unauthenticated_with_its_rule(
    harness: Harness, case: str
) -> None:
    rule = case.split(" ", 1)[0]
    async with harness.client(_bad_leaf(harness.pki, case)) as client:
        with pytest.raises(AttestationFailed) as info:
            await client.exchange(TASK)
    assert info.value.rule == rule, info.value.message
    assert f"attestation failed [{rule}]" in info.value.message
    if "(ID-2)" in case:
        assert "[ID-2]" in info.value.message and "upper-case" in info.value.message
    await assert_still_serving(harness)


@pytest.mark.parametrize(
    ("window", "when"),
    [
        pytest.param((-3 * HOUR, -HOUR), "expired", id="expired"),
        pytest.param((HOUR, 3 * HOUR), "not yet valid", id="not-yet-valid"),
    ],
)
async def test_certificate_outside_its_validity_never_gets_a_credential(
    harness: Harness, window: tuple[dt.timedelta, dt.timedelta], when: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf = harness.pki.leaf(BILLING_BOT, not_before=now + window[0], not_after=now + window[1])
    async with harness.client(leaf) as client:
        # grpcio's handshake refuses it (UNAVAILABLE) before taskpass sees the chain; were it let
        # through, taskpass refuses it as X-9 (unit-tested in tests/unit/identity). No credential.
        with pytest.raises((AttestationFailed, Unavailable)) as info:
            await client.exchange(TASK)
    if isinstance(info.value, AttestationFailed):
        assert info.value.rule == "X-9"
    else:
        assert "trusts your certificate" in info.value.message
    await assert_still_serving(harness)


async def test_certificate_from_an_unknown_ca_is_refused_at_the_handshake(harness: Harness) -> None:
    stranger = harness.pki.ca("stranger CA")
    leaf = harness.pki.leaf(BILLING_BOT, issuer=stranger)
    async with harness.client(leaf) as client:
        with pytest.raises(Unavailable, match="trusts your certificate"):
            await client.exchange(TASK)
    await assert_still_serving(harness)


async def test_no_client_certificate_on_the_mtls_listener_is_refused(harness: Harness) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    from taskpass._proto.v1 import credential_pb2 as pb
    from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc

    async with grpc.aio.secure_channel(harness.mtls_target, creds) as channel:
        stub = pb_grpc.CredentialServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetJwks(pb.GetJwksRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_jwt_svid_sent_to_the_mtls_listener_is_told_where_to_go(harness: Harness) -> None:
    async with TaskpassClient.with_jwt_svid(
        harness.mtls_target, ca=harness.server_ca, token=harness.pki.jwt()
    ) as client:
        with pytest.raises(Unavailable) as info:
            await client.exchange(TASK)
    assert info.value.message.endswith(
        "a JWT-SVID caller dials the server-TLS listener (the mTLS one requires a client "
        "certificate)"
    )


async def test_no_certificate_and_no_bearer_on_the_tls_listener_is_unauthenticated(
    harness: Harness,
) -> None:
    from taskpass._proto.v1 import credential_pb2 as pb
    from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc

    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    async with grpc.aio.secure_channel(harness.tls_target, creds) as channel:
        stub = pb_grpc.CredentialServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetJwks(pb.GetJwksRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no client certificate" in (info.value.details() or "")


async def test_jwt_svid_bearer_gets_an_unbound_credential(harness: Harness) -> None:
    token = harness.pki.jwt(BILLING_BOT, audience=AUDIENCE)
    async with harness.bearer(token) as client:
        credential = await client.exchange(TASK)
        jwks = await client.jwks()
    import jwt as pyjwt

    key = pyjwt.PyJWK(jwks["keys"][0])
    claims = pyjwt.decode(credential.token, key, algorithms=["ES256"], audience="payments-api")
    assert claims["sub"] == BILLING_BOT
    assert "cnf" not in claims


def _bad_token(pki: TestPki, case: str) -> str:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    claims = {"sub": BILLING_BOT, "aud": AUDIENCE, "exp": now + 300}
    public_pem = pki.jwt_public_pem()
    tokens = {
        "J-2 alg none": lambda: TestPki.raw_jws({"alg": "none", "typ": "JWT"}, claims, b""),
        "J-2 HS256 signed with the public key": lambda: TestPki.hs256_jws(
            {"alg": "HS256", "kid": pki.example.jwt_kid}, claims, public_pem
        ),
        "J-7 wrong audience": lambda: pki.jwt(BILLING_BOT, audience="someone-else"),
        "J-8 expired": lambda: pki.jwt(
            BILLING_BOT, audience=AUDIENCE, claims={"exp": now - 3600, "iat": now - 7200}
        ),
        "J-9 unknown kid": lambda: pki.jwt(BILLING_BOT, audience=AUDIENCE, kid="no-such-kid"),
        "J-6 sub not a SPIFFE ID": lambda: pki.jwt(
            BILLING_BOT, audience=AUDIENCE, claims={"sub": "billing-bot"}
        ),
        "J-9 signed by another trust domain's key": lambda: pki.jwt(
            BILLING_BOT, audience=AUDIENCE, signer=OTHER
        ),
    }
    return tokens[case]()


@pytest.mark.parametrize(
    "case",
    [
        "J-2 alg none",
        "J-2 HS256 signed with the public key",
        "J-7 wrong audience",
        "J-8 expired",
        "J-9 unknown kid",
        "J-6 sub not a SPIFFE ID",
        "J-9 signed by another trust domain's key",
    ],
)
async def test_hostile_jwt_svid_is_unauthenticated_with_its_rule(
    harness: Harness, case: str
) -> None:
    rule = case.split(" ", 1)[0]
    async with harness.bearer(_bad_token(harness.pki, case)) as client:
        with pytest.raises(AttestationFailed) as info:
            await client.exchange(TASK)
    assert info.value.rule == rule, info.value.message
    assert f"attestation failed [{rule}]" in info.value.message
    await assert_still_serving(harness)


async def _status_of_mtls_call(
    harness: Harness, leaf: Issued, chain: list[Issued]
) -> grpc.aio.AioRpcError:
    """The raw gRPC error of one call presenting `leaf` (and `chain`) on the mTLS listener."""
    from taskpass._proto.v1 import credential_pb2 as pb
    from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc

    creds = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=leaf.key_pem,
        certificate_chain=TestPki.chain_pem(leaf, *chain),
    )
    async with grpc.aio.secure_channel(harness.mtls_target, creds) as channel:
        stub = pb_grpc.CredentialServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetJwks(pb.GetJwksRequest(), timeout=5)
    return info.value


def _x7_leaf_for_server_auth_only(pki: TestPki) -> tuple[Issued, list[Issued]]:
    return pki.leaf(BILLING_BOT, extended_key_usage=(SERVER_AUTH,)), []


def _x6_intermediate_without_key_cert_sign(pki: TestPki) -> tuple[Issued, list[Issued]]:
    weak = pki.ca(
        "no keyCertSign intermediate",
        pki.example.root,
        trust_domain="example.org",
        key_usage=frozenset({Usage.DIGITAL_SIGNATURE}),
    )
    return pki.leaf(BILLING_BOT, issuer=weak), [weak]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(_x7_leaf_for_server_auth_only, id="X-7-eku-serverAuth-only"),
        pytest.param(_x6_intermediate_without_key_cert_sign, id="X-6-intermediate-no-keyCertSign"),
    ],
)
async def test_leaf_or_chain_grpcio_refuses_is_unavailable_before_taskpass_sees_it(
    harness: Harness, build: Callable[[TestPki], tuple[Issued, list[Issued]]]
) -> None:
    # Measured with grpcio 1.85: its handshake refuses both before taskpass runs (BoringSSL:
    # "unsupported certificate purpose" for the serverAuth-only leaf, "unable to get local issuer
    # certificate" for the chain through a CA without keyCertSign), so the status is UNAVAILABLE
    # and no rule id can be sent. Were one let through, taskpass refuses it as
    # (tests/unit/identity/test_x509_svid.py). Should grpcio start passing them, this test fails
    # and must then assert UNAUTHENTICATED with the rule, as the test above does.
    leaf, chain = build(harness.pki)

    error = await _status_of_mtls_call(harness, leaf, chain)

    assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
    assert "attestation failed" not in (error.details() or "")
    await assert_still_serving(harness)
