from __future__ import annotations

import threading

import pytest

from taskpass.client.jwks import StaticJwks
from taskpass.client.sync import SyncCredentialVerifier
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import SigningKey
from tests.support.pki import NOW
from tests.unit.client.factories import AGENT, AGENT_CERT, AUDIENCE, ISSUER, jwks, mint


class ThreadRecorder:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def is_revoked(self, jti: str) -> bool:
        self.threads.append(threading.current_thread().name)
        return False


def sync_verifier(key: SigningKey, checker: ThreadRecorder | None = None) -> SyncCredentialVerifier:
    return SyncCredentialVerifier(
        lambda: CredentialVerifier(
            StaticJwks(jwks(key)),
            issuer=ISSUER,
            audience=AUDIENCE,
            clock=FixedClock(NOW),
            revocation=checker,
        )
    )


def test_the_sync_verifier_returns_what_the_async_one_does(key: SigningKey) -> None:
    with sync_verifier(key) as verifier:
        credential = verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
        assert credential.subject == AGENT
        with pytest.raises(InvalidToken) as info:
            verifier.verify(mint(key, typ="JWT"), peer_certificate=AGENT_CERT.der)
        assert info.value.reason is Reason.WRONG_TYPE


def test_the_work_runs_on_the_wrappers_own_thread(key: SigningKey) -> None:
    checker = ThreadRecorder()
    with sync_verifier(key, checker) as verifier:
        verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)
    assert checker.threads == ["taskpass-sync"]


def test_a_closed_wrapper_refuses_calls_and_stops_its_thread(key: SigningKey) -> None:
    verifier = sync_verifier(key)
    verifier.close()
    verifier.close()  # idempotent
    assert not any(t.name == "taskpass-sync" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        verifier.verify(mint(key), peer_certificate=AGENT_CERT.der)


async def test_the_sync_api_refuses_to_block_a_running_event_loop(key: SigningKey) -> None:
    with pytest.raises(RuntimeError, match="use the async API"):
        sync_verifier(key)
    assert not any(t.name == "taskpass-sync" and t.is_alive() for t in threading.enumerate())
