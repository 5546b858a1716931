"""Revocation events as signed Security Event Tokens: RFC 8417 SETs carrying a CAEP
session-revoked event, with the subject in the top-level `sub_id` (RFC 9493 / SSF formats).

What each kind's `sub_id` says, so a relying party can match a token it holds:

    credential  {"format": "jwt_id", "iss": <issuer>, "jti": <jti>}                the token's jti
    task        {"format": "complex", "session": {"format": "opaque", "id": <task>},
                 "user": {"format": "iss_sub", "iss": <issuer>, "sub": <requester>}}  its sub + txn
    identity    {"format": "iss_sub", "iss": <issuer>, "sub": <id>}                 an exact ID
                {"format": "opaque", "id": "spiffe://td/path/**"}                   a pattern

A task id is unique only per requester, hence the `user` member beside the session. An identity
event revokes the tokens of matching subjects issued up to its `event_timestamp`. `txn` is the
task id when there is one.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Final

from joserfc import jws

from taskpass.server.clock import Clock
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.store.records import (
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
    RevocationKind,
)

SESSION_REVOKED: Final = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


class Initiator(enum.StrEnum):
    """CAEP `initiating_entity`: who caused the revocation."""

    ADMIN = "admin"  # a security admin (Revoke, Ban)
    USER = "user"  # the subject itself (CompleteTask by the agent)
    POLICY = "policy"
    SYSTEM = "system"  # taskpass on its own (an issuance that raced a ban)


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def credential_subject(issuer: str, jti: str) -> dict[str, Any]:
    return {"format": "jwt_id", "iss": issuer, "jti": jti}


def task_subject(issuer: str, requester: str, task_id: str) -> dict[str, Any]:
    return {
        "format": "complex",
        "session": {"format": "opaque", "id": task_id},
        "user": {"format": "iss_sub", "iss": issuer, "sub": requester},
    }


def identity_subject(issuer: str, pattern: str) -> dict[str, Any]:
    if WorkloadPattern.parse(pattern).kind is PatternKind.EXACT:
        return {"format": "iss_sub", "iss": issuer, "sub": pattern}
    return {"format": "opaque", "id": pattern}


def session_revoked_claims(
    *,
    sub_id: dict[str, Any],
    txn: str | None,
    at: dt.datetime,
    reason: str,
    initiator: Initiator,
) -> dict[str, Any]:
    """The SET claims but `iss` and `jti` (the issuer adds them); `iat` is the event time."""
    event: dict[str, Any] = {
        "event_timestamp": _epoch(at),
        "initiating_entity": initiator.value,
    }
    if reason:
        event["reason_admin"] = {"en": reason}
    claims: dict[str, Any] = {
        "iat": _epoch(at),
        "sub_id": sub_id,
        "events": {SESSION_REVOKED: event},
    }
    if txn:
        claims["txn"] = txn
    return claims


class EventSigner:
    """Builds NewRevocation values with their signed SET, ready for the store to number."""

    def __init__(self, *, issuer: TokenIssuer, keys: KeyRing, clock: Clock) -> None:
        self._issuer = issuer
        self._keys = keys
        self._clock = clock

    def credential(
        self,
        credential: CredentialRecord,
        *,
        reason: str,
        initiator: Initiator,
        at: dt.datetime | None = None,
        publish: bool = True,
    ) -> NewRevocation:
        """`publish=False` leaves the key ring alone, so a store's writer thread may call it (a
        CascadeEvent): then call keep_published for the event once it is stored."""
        at = at or self._clock.now()
        claims = session_revoked_claims(
            sub_id=credential_subject(self._issuer.issuer, credential.jti),
            txn=credential.task_id,
            at=at,
            reason=reason,
            initiator=initiator,
        )
        return NewRevocation(
            kind=RevocationKind.CREDENTIAL,
            subject=credential.requester,
            task_id=credential.task_id,
            jti=credential.jti,
            expires_at=max(credential.expires_at, at),
            at=at,
            set_token=self._sign(claims, until=credential.expires_at if publish else None),
            reason=reason,
        )

    def task(
        self, *, requester: str, task_id: str, at: dt.datetime, reason: str, initiator: Initiator
    ) -> NewRevocation:
        """`expires_at` is `at`: the store widens it to the latest expiry it revokes."""
        claims = session_revoked_claims(
            sub_id=task_subject(self._issuer.issuer, requester, task_id),
            txn=task_id,
            at=at,
            reason=reason,
            initiator=initiator,
        )
        return NewRevocation(
            kind=RevocationKind.TASK,
            subject=requester,
            task_id=task_id,
            jti=None,
            expires_at=at,
            at=at,
            set_token=self._sign(claims, until=at),
            reason=reason,
        )

    def identity(self, *, pattern: str, at: dt.datetime, reason: str) -> NewRevocation:
        """`expires_at` is `at`: the store widens it to the latest expiry it revokes."""
        claims = session_revoked_claims(
            sub_id=identity_subject(self._issuer.issuer, pattern),
            txn=None,
            at=at,
            reason=reason,
            initiator=Initiator.ADMIN,
        )
        return NewRevocation(
            kind=RevocationKind.IDENTITY,
            subject=pattern,
            task_id=None,
            jti=None,
            expires_at=at,
            at=at,
            set_token=self._sign(claims, until=at),
            reason=reason,
        )

    def keep_published(self, event: RevocationEvent | NewRevocation) -> None:
        """Keep the SET's signing key in the JWKS while the stored event is in force: a
        subscriber replaying the log must still be able to verify it."""
        kid = jws.extract_compact(event.set_token.encode()).protected.get("kid")
        if isinstance(kid, str):
            self._keys.note_issued(kid, event.expires_at)

    def _sign(self, claims: dict[str, Any], *, until: dt.datetime | None) -> str:
        return self._issuer.sign_security_event(claims=claims, publish_until=until)
