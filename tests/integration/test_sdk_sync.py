"""The blocking SDK against a real server, called from a worker thread (as blocking code would
be: the server under test runs on this test's event loop)."""

from __future__ import annotations

import asyncio

import pytest

from taskpass.client import Denied, Task
from taskpass.client.jwks import JWKS_PATH
from taskpass.client.sync import SyncCredentialVerifier, SyncTaskpassClient
from taskpass.client.verifier import InvalidToken, Reason
from tests.integration.harness import BILLING_BOT, ISSUER, Harness
from tests.support.pki import TestPki


async def test_a_blocking_agent_and_a_blocking_relying_party(harness: Harness) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    cert, key = TestPki.write_identity(harness.directory / "sync", "agent", leaf)
    url = f"http://127.0.0.1:{harness.server.ports.http}{JWKS_PATH}"

    def agent_and_relying_party() -> tuple[str, tuple[str, ...], str]:
        verifier = SyncCredentialVerifier.from_jwks_url(url, issuer=ISSUER, audience="payments-api")
        with (
            verifier,
            SyncTaskpassClient.from_files(
                harness.mtls_target, ca=harness.server_ca, cert=cert, key=key
            ) as client,
        ):
            with client.task("t-sync", audience="payments-api", action="read") as task:
                subject = verifier.verify(task.token, peer_certificate=leaf.der).subject
                assert client.introspect(task.token).active
            with pytest.raises(Denied):
                client.exchange(Task(task_id="t-del", audience="payments-api", action="delete"))
            with pytest.raises(InvalidToken) as info:
                verifier.verify(task.token, peer_certificate=b"")
            return subject, task.revoked_jtis, info.value.reason

    subject, revoked, reason = await asyncio.to_thread(agent_and_relying_party)
    assert subject == BILLING_BOT
    assert len(revoked) == 1
    assert reason is Reason.CERTIFICATE_MISMATCH
