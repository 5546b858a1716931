"""The SDK against a real server: the task block, refresh, the verifier over HTTP and gRPC JWKS,
binding to the presented certificate, and key rotation under a running verifier."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.client import TaskpassClient
from taskpass.client.jwks import JWKS_PATH
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason
from taskpass.server.clock import FixedClock
from tests.integration.harness import BILLING_BOT, ISSUER, REPORT_BOT, Harness


def jwks_url(harness: Harness) -> str:
    return f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"


def http_verifier(harness: Harness, **options: object) -> CredentialVerifier:
    return CredentialVerifier.from_jwks_url(
        jwks_url(harness), issuer=ISSUER, audience="payments-api", **options
    )


async def is_active(client: TaskpassClient, token: str) -> bool:
    return (await client.introspect(token)).active


async def test_the_task_block_completes_the_task_on_exit(harness: Harness) -> None:
    async with harness.agent() as client:
        async with client.task("t-block", audience="payments-api", action="read") as task:
            token = task.token
            assert await is_active(client, token)
        assert task.revoked_jtis == (task.current.jti,)
        assert not await is_active(client, token)


async def test_the_task_block_completes_the_task_when_the_body_raises(harness: Harness) -> None:
    async with harness.agent() as client:
        with pytest.raises(RuntimeError, match="the agent failed"):
            async with client.task("t-raise", audience="payments-api", action="read") as task:
                token = task.token
                raise RuntimeError("the agent failed")
        assert not await is_active(client, token)


async def test_a_long_task_gets_a_fresh_credential_for_the_same_task(harness: Harness) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC))
    async with harness.agent() as client:
        async with client.task(
            "t-long",
            audience="payments-api",
            action="read",
            ttl=dt.timedelta(minutes=4),
            clock=clock,
        ) as task:
            first = task.current
            clock.advance(dt.timedelta(minutes=3, seconds=30))
            second = await task.credential()
            assert second.jti != first.jti
            assert await is_active(client, second.token)
        assert set(task.revoked_jtis) == {first.jti, second.jti}


async def test_the_verifier_accepts_a_credential_from_its_caller_over_http_jwks(
    harness: Harness,
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    async with (
        harness.client(leaf) as client,
        client.task("t-v", audience="payments-api", action="read") as task,
    ):
        credential = await http_verifier(harness).verify(task.token, peer_certificate=leaf.der)
    assert credential.subject == BILLING_BOT
    assert credential.scopes == ("payments:read",)
    assert credential.task_id == "t-v"
    assert credential.task["action"] == "read"


async def test_the_verifier_fetches_keys_over_grpc_too(harness: Harness) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    async with (
        harness.client(leaf) as client,
        client.task("t-g", audience="payments-api", action="read") as task,
    ):
        verifier = CredentialVerifier.from_client(client, issuer=ISSUER, audience="payments-api")
        credential = await verifier.verify(task.token, peer_certificate=leaf.pem)
    assert credential.jti == task.current.jti


async def test_a_credential_replayed_by_another_workload_is_refused(harness: Harness) -> None:
    async with (
        harness.agent(BILLING_BOT) as client,
        client.task("t-replay", audience="payments-api", action="read") as task,
    ):
        stolen = task.token
    thief = harness.pki.leaf(REPORT_BOT)
    with pytest.raises(InvalidToken) as info:
        await http_verifier(harness).verify(stolen, peer_certificate=thief.der)
    assert info.value.reason is Reason.CERTIFICATE_MISMATCH


async def test_the_verifier_consults_the_revocation_checker(harness: Harness) -> None:
    revoked: set[str] = set()

    class Revocations:
        def is_revoked(self, jti: str) -> bool:
            return jti in revoked

    leaf = harness.pki.leaf(BILLING_BOT)
    verifier = http_verifier(harness, revocation=Revocations())
    async with (
        harness.client(leaf) as client,
        client.task("t-rev", audience="payments-api", action="read") as task,
    ):
        await verifier.verify(task.token, peer_certificate=leaf.der)
        token = task.token
    revoked.update(task.revoked_jtis)  # what a revocation watcher learns from the stream
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token, peer_certificate=leaf.der)
    assert info.value.reason is Reason.REVOKED


async def test_a_running_verifier_keeps_working_through_a_signing_key_rotation(
    harness: Harness,
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    verifier = http_verifier(harness)
    keys = harness.server.components.keys
    async with (
        harness.client(leaf) as client,
        client.task("t-k1", audience="payments-api", action="read") as old,
    ):
        await verifier.verify(old.token, peer_certificate=leaf.der)
        keys.rotate()  # published as next, not signing yet
        keys.promote()  # now signing; the old key stays published (retired)
        async with client.task("t-k2", audience="payments-api", action="read") as new:
            fresh = await verifier.verify(new.token, peer_certificate=leaf.der)
            earlier = await verifier.verify(old.token, peer_certificate=leaf.der)
    assert fresh.kid == keys.active.kid
    assert earlier.kid != fresh.kid
    assert verifier.keys.fetches == 2  # the first fetch and one refetch for the new kid
