"""Revocation events as signed SETs: RFC 8417 + CAEP session-revoked, one sub_id shape per kind."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.revocation.events import SESSION_REVOKED, EventSigner, Initiator
from taskpass.server.store.records import RevocationEvent, RevocationKind
from tests.unit.store.builders import AGENT, T0, credential

from .conftest import ISSUER


def decode(ring: KeyRing, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, KeySet.import_key_set(ring.jwks()), algorithms=["ES256"])  # type: ignore[arg-type]
    return dict(decoded.header), dict(decoded.claims)


def test_a_credential_event_names_the_jti_and_lasts_until_the_credential_expires(
    signer: EventSigner, ring: KeyRing
) -> None:
    record = credential("jti-1", task_id="t-7", ttl=dt.timedelta(minutes=5))

    event = signer.credential(record, reason="leaked in a log", initiator=Initiator.ADMIN)

    assert (event.kind, event.subject, event.task_id, event.jti) == (
        RevocationKind.CREDENTIAL,
        AGENT,
        "t-7",
        "jti-1",
    )
    assert event.expires_at == T0 + dt.timedelta(minutes=5)
    header, claims = decode(ring, event.set_token)
    assert header["typ"] == "secevent+jwt"
    assert header["kid"] == ring.active.kid
    assert claims["iss"] == ISSUER
    assert claims["sub_id"] == {"format": "jwt_id", "iss": ISSUER, "jti": "jti-1"}
    assert claims["txn"] == "t-7"
    assert claims["iat"] == int(T0.timestamp())
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 22
    assert claims["events"] == {
        SESSION_REVOKED: {
            "event_timestamp": int(T0.timestamp()),
            "initiating_entity": "admin",
            "reason_admin": {"en": "leaked in a log"},
        }
    }


def test_a_task_event_names_the_session_and_its_requester(
    signer: EventSigner, ring: KeyRing
) -> None:
    event = signer.task(
        requester=AGENT, task_id="t-7", at=T0, reason="task completed", initiator=Initiator.USER
    )

    assert (event.kind, event.subject, event.task_id, event.jti) == (
        RevocationKind.TASK,
        AGENT,
        "t-7",
        None,
    )
    assert event.expires_at == T0  # the store widens it to what it revokes
    _, claims = decode(ring, event.set_token)
    assert claims["sub_id"] == {
        "format": "complex",
        "session": {"format": "opaque", "id": "t-7"},
        "user": {"format": "iss_sub", "iss": ISSUER, "sub": AGENT},
    }
    assert claims["txn"] == "t-7"
    assert claims["events"][SESSION_REVOKED]["initiating_entity"] == "user"


@pytest.mark.parametrize(
    ("pattern", "sub_id"),
    [
        pytest.param(AGENT, {"format": "iss_sub", "iss": ISSUER, "sub": AGENT}, id="exact"),
        pytest.param(
            "spiffe://example.org/agents/**",
            {"format": "opaque", "id": "spiffe://example.org/agents/**"},
            id="pattern",
        ),
    ],
)
def test_an_identity_event_names_the_id_or_the_pattern(
    signer: EventSigner, ring: KeyRing, pattern: str, sub_id: dict[str, Any]
) -> None:
    event = signer.identity(pattern=pattern, at=T0, reason="compromised")
    assert (event.kind, event.subject, event.task_id, event.jti) == (
        RevocationKind.IDENTITY,
        pattern,
        None,
        None,
    )
    _, claims = decode(ring, event.set_token)
    assert claims["sub_id"] == sub_id
    assert "txn" not in claims


def test_a_set_verifies_with_pyjwt_given_only_the_jwks(signer: EventSigner, ring: KeyRing) -> None:
    event = signer.task(requester=AGENT, task_id="t-7", at=T0, reason="", initiator=Initiator.USER)
    key = pyjwt.PyJWK(ring.jwks()["keys"][0])
    claims = pyjwt.decode(event.set_token, key, algorithms=["ES256"])
    assert pyjwt.get_unverified_header(event.set_token)["typ"] == "secevent+jwt"
    assert claims["txn"] == "t-7"
    assert "reason_admin" not in claims["events"][SESSION_REVOKED]  # no empty reason


def test_the_signing_key_stays_published_while_the_stored_event_is_in_force(
    signer: EventSigner, ring: KeyRing, clock: FixedClock
) -> None:
    new = signer.task(requester=AGENT, task_id="t-7", at=T0, reason="", initiator=Initiator.USER)
    widened = T0 + dt.timedelta(hours=3)
    stored = RevocationEvent(
        seq=1,
        kind=new.kind,
        subject=new.subject,
        task_id=new.task_id,
        jti=None,
        expires_at=widened,
        at=T0,
        set_token=new.set_token,
        reason="",
    )

    signer.keep_published(stored)

    kid = ring.active.kid
    ring.rotate()
    ring.promote()
    clock.advance(dt.timedelta(hours=2))
    assert kid not in ring.prune()
    assert kid in {k["kid"] for k in ring.jwks()["keys"]}
