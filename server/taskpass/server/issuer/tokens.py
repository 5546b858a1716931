"""Task credentials as RFC 9068 JWT access tokens, and RFC 8417 Security Event Tokens.

Hot path: `issue()` runs on every exchange. It builds one claims dict, encodes it and signs it with
the active key (see `jws.py`); the header segment is cached per key.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from taskpass.server.clock import Clock
from taskpass.server.errors import ConfigError, Conflict, InvalidRequest, PermissionDenied
from taskpass.server.identity.workload import Workload
from taskpass.server.issuer.jws import sign_compact
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.tasks.descriptor import TaskDescriptor

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # RFC 9068 §2.1
SECURITY_EVENT_TYPE: Final = "secevent+jwt"  # RFC 8417 §2.3
JTI_BYTES: Final = 16  # 128 random bits
JTI_LENGTH: Final = 23  # one leading character, then JTI_BYTES in unpadded base64url
_JTI_FIRST: Final = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A signed credential and the facts the store and audit need about it."""

    token: str = field(repr=False)  # never logged whole
    jti: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    scopes: tuple[str, ...]
    kid: str


def new_jti() -> str:
    """A credential's or security event's id: an ASCII letter or digit, then 128 random bits
    (`JTI_BYTES`) in base64url, JTI_LENGTH characters in all, all URL-safe.

    The leading character keeps ids from starting with '-' (or '_'), which base64url does for
    1 in 32: `taskpass revoke --jti -Xy...` reads such an id as an option. Ids issued before
    this may still start with either, so nothing may assume they do not."""
    return secrets.choice(_JTI_FIRST) + secrets.token_urlsafe(JTI_BYTES)


def _epoch(moment: dt.datetime) -> int:
    """Whole seconds since the epoch, rounded down (a token never outlives what it was given)."""
    return int(moment.timestamp())


class TokenIssuer:
    """Signs task credentials and security events with the key ring's active key."""

    def __init__(self, *, issuer: str, keys: KeyRing, clock: Clock) -> None:
        if not issuer:
            raise ConfigError("the token issuer (the server's issuer URL or ID) is required")
        self._issuer = issuer
        self._keys = keys
        self._clock = clock

    @property
    def issuer(self) -> str:
        return self._issuer

    def issue(
        self,
        *,
        workload: Workload,
        task: TaskDescriptor,
        decision: Decision,
        approval_id: str | None = None,
        actor: dict[str, Any] | None = None,
        subject: str | None = None,
    ) -> IssuedCredential:
        """Sign an at+jwt for `task`, bound to `workload`, as `decision` allows.

        `subject` and `actor` are for delegation (RFC 8693): `sub` stays the principal the chain
        acts for, `client_id` and `cnf` are always the calling workload's own.

        Refuses a deny, and a pending decision without the approval that satisfied it.
        `exp` is `iat + decision.ttl` in whole seconds, never past the workload identity's expiry
        nor the task's deadline (in absolute time: the decision's ttl was counted from its own
        `now`, and a durable write may have come between).
        """
        if decision.outcome is Outcome.DENY or (
            decision.outcome is Outcome.PENDING_APPROVAL and not approval_id
        ):
            raise PermissionDenied(
                f"no credential is issued for a {decision.outcome.value} decision"
            )
        now = self._clock.now()
        iat = _epoch(now)
        exp = min(iat + int(decision.ttl.total_seconds()), _epoch(workload.expires_at))
        if task.deadline is not None:
            exp = min(exp, _epoch(task.deadline))
        if exp <= iat:
            raise Conflict(
                "the credential would be valid for less than one second (the workload identity "
                "or the allowed lifetime ends now); renew the SVID or request a longer TTL"
            )
        key = self._keys.active
        jti = new_jti()
        task_claim: dict[str, Any] = {
            "action": task.action,
            "tool": task.tool,
            "sensitivity": task.sensitivity.name.lower(),
            "environment": task.environment,
            "policy_version": decision.policy_version,
            "rules": list(decision.matched_rules),
        }
        if approval_id:
            task_claim["approval_id"] = approval_id
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject or workload.id,
            "client_id": workload.id,
            "aud": task.audience,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": jti,
            "txn": task.task_id,
            "task": task_claim,
        }
        if decision.scopes:
            claims["scope"] = " ".join(decision.scopes)
        if workload.cert_thumbprint:
            claims["cnf"] = {"x5t#S256": workload.cert_thumbprint}
        if actor is not None:
            claims["act"] = _checked_actor(actor)
        token = sign_compact(key, typ=ACCESS_TOKEN_TYPE, claims=claims)
        expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
        self._keys.note_issued(key.kid, expires_at)
        return IssuedCredential(
            token=token,
            jti=jti,
            issued_at=dt.datetime.fromtimestamp(iat, dt.UTC),
            expires_at=expires_at,
            scopes=decision.scopes,
            kid=key.kid,
        )

    def sign_security_event(
        self, *, claims: Mapping[str, Any], publish_until: dt.datetime | None = None
    ) -> str:
        """Sign an RFC 8417 SET (`typ: secevent+jwt`) with the active key.

        `claims` must hold `events`; `iss`, `iat` and `jti` are set when absent. `publish_until`
        (e.g. when the revoked credentials expire) keeps the signing key published at least that
        long, so a SET replayed from the event log still verifies.
        """
        events = claims.get("events")
        if not isinstance(events, Mapping) or not events:
            raise InvalidRequest("events", "a security event token needs a non-empty events claim")
        full = dict(claims)
        full.setdefault("iss", self._issuer)
        full.setdefault("iat", _epoch(self._clock.now()))
        full.setdefault("jti", new_jti())
        key = self._keys.active
        token = sign_compact(key, typ=SECURITY_EVENT_TYPE, claims=full)
        if publish_until is not None:
            self._keys.note_issued(key.kid, publish_until)
        return token


def _checked_actor(actor: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 8693 §4.1: `act` identifies the acting party with at least a `sub`."""
    sub = actor.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidRequest("actor", "the act claim needs a non-empty sub (RFC 8693 §4.1)")
    return dict(actor)
