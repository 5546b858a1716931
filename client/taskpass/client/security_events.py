"""Verifying the Security Event Tokens of the revocation stream (RFC 8417, CAEP session-revoked).

A subscriber trusts what a SET says, not the plain fields beside it: `verify()` checks the SET
(compact JWS, `typ` secevent+jwt, allowed `alg`, a published `kid` — an unknown one makes the key
cache refetch once, within its cooldown, and is Unavailable, "cannot tell yet", until a refetch
succeeds — the signature, `iss`, an `iat` not in the future, one session-revoked event with an
`event_timestamp` in years 1..9999) and reads what it revokes from its `sub_id`:

    {"format": "jwt_id", "iss", "jti"}                                one credential
    {"format": "complex", "session": {"format": "opaque", "id": task},
     "user": {"format": "iss_sub", "iss", "sub": requester}}          every credential of a task
    {"format": "iss_sub", "iss", "sub": id}                           an identity (exact)
    {"format": "opaque", "id": "spiffe://td/path/**"}                 an identity pattern

JOSE parsing and signature checks are joserfc's (the checks up to the payload are _jws.py's,
shared with verifier.py).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from taskpass.client._jws import ALGORITHMS as ALGORITHMS
from taskpass.client._jws import JwsChecks, Refusal, Words, allowed_algorithms
from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import TaskpassClientError
from taskpass.client.jwks import JwksCache
from taskpass.client.timestamps import representable

SESSION_REVOKED: Final = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
SECURITY_EVENT_TYPES: Final = frozenset({"secevent+jwt", "application/secevent+jwt"})
MAX_SET_BYTES: Final = 16 * 1024


class RevocationKind(enum.StrEnum):
    CREDENTIAL = "credential"
    TASK = "task"
    IDENTITY = "identity"


class RejectReason(enum.StrEnum):
    """Why a revocation event was not applied: a stable code for logs and metrics."""

    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ISSUER = "wrong_issuer"
    FROM_THE_FUTURE = "from_the_future"
    NOT_A_REVOCATION = "not_a_revocation"
    MISMATCH = "mismatch"
    """The stream's fields say something other than the signed SET."""
    REPLAYED = "replayed"
    """A SET already received under another sequence number."""


class RejectedEvent(TaskpassClientError):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message, details={"reason": reason.value})
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SignedRevocation:
    """What a verified SET revokes."""

    kind: RevocationKind
    subject: str | None
    """The requester (task), the ID or pattern (identity); None for a credential."""
    task_id: str | None
    jti: str | None
    revoked_at: int
    """The event time (seconds): an identity event revokes tokens issued up to it."""
    set_jti: str
    issuer: str
    initiator: str
    reason: str


def _reject(reason: RejectReason, message: str) -> RejectedEvent:
    return RejectedEvent(reason, f"revocation event rejected ({reason.value}): {message}")


def _refused(refusal: Refusal, message: str) -> RejectedEvent:
    return _reject(RejectReason(refusal.value), message)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class SecurityEventVerifier:
    """Verifies revocation SETs against the issuer's published keys.

    `issuer`, when given, is the `iss` every SET must carry; without it the SET's own `iss` is
    only required to agree with the issuer named inside its `sub_id`.
    """

    def __init__(
        self,
        keys: JwksCache,
        *,
        issuer: str | None = None,
        algorithms: Collection[str] = ALGORITHMS,
        leeway: dt.timedelta = dt.timedelta(minutes=1),
        clock: Clock | None = None,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._algorithms = allowed_algorithms(algorithms)
        self._leeway = leeway
        self._clock = clock or SystemClock()
        self._jws = JwsChecks(
            keys,
            algorithms=self._algorithms,
            types=SECURITY_EVENT_TYPES,
            max_bytes=MAX_SET_BYTES,
            words=Words(
                it="the SET",
                size=f"a SET is a compact JWS of 1..{MAX_SET_BYTES} B",
                wrong_type="typ must be secevent+jwt (RFC 8417 §2.3)",
                not_allowed=f"alg must be one of {self._algorithms}",
                unknown_key=lambda kid: f"no published key has kid {kid}",
            ),
            refuse=_refused,
            # A kid our copy of the JWKS lacks is most likely a key just rotated in: the watcher
            # retries the event once the keys can be refetched; rejecting it would lose it.
            confirm_unknown_kids=True,
        )

    @property
    def keys(self) -> JwksCache:
        return self._keys

    async def verify(self, token: str) -> SignedRevocation:
        """What `token` revokes, or RejectedEvent; Unavailable if no keys can be fetched, or its
        kid is unknown and the keys cannot be fetched again yet (retry the event later)."""
        _, claims = await self._jws.open(token)
        return self._revocation(self._checked_claims(claims))

    def _checked_claims(self, claims: dict[str, Any]) -> dict[str, Any]:
        issuer = _text(claims.get("iss"))
        if issuer is None or (self._issuer is not None and issuer != self._issuer):
            raise _reject(RejectReason.WRONG_ISSUER, f"iss must be {self._issuer or 'present'}")
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int):
            raise _reject(RejectReason.MALFORMED, "the SET's iat is not a number")
        if iat > (self._clock.now() + self._leeway).timestamp():
            raise _reject(RejectReason.FROM_THE_FUTURE, "the SET is issued in the future")
        if _text(claims.get("jti")) is None:
            raise _reject(RejectReason.MALFORMED, "the SET has no jti")
        return claims

    def _revocation(self, claims: Mapping[str, Any]) -> SignedRevocation:
        events = claims.get("events")
        if not isinstance(events, dict) or set(events) != {SESSION_REVOKED}:
            raise _reject(RejectReason.NOT_A_REVOCATION, "the SET holds no session-revoked event")
        event = events[SESSION_REVOKED]
        if not isinstance(event, dict):
            raise _reject(RejectReason.NOT_A_REVOCATION, "the SET holds no session-revoked event")
        issuer: str = claims["iss"]
        at = event.get("event_timestamp", claims["iat"])
        if isinstance(at, bool) or not isinstance(at, int):
            raise _reject(RejectReason.MALFORMED, "event_timestamp is not a number")
        if not representable(at):  # the watcher makes a datetime of it
            raise _reject(RejectReason.MALFORMED, "event_timestamp is not a date in years 1..9999")
        kind, subject, task_id, jti = _subject(claims.get("sub_id"), issuer)
        txn = claims.get("txn")
        if task_id is not None and kind is RevocationKind.TASK and txn != task_id:
            raise _reject(RejectReason.MALFORMED, "txn differs from the revoked session")
        if kind is RevocationKind.CREDENTIAL:
            task_id = _text(txn)
        reason = event.get("reason_admin", {})
        return SignedRevocation(
            kind=kind,
            subject=subject,
            task_id=task_id,
            jti=jti,
            revoked_at=at,
            set_jti=claims["jti"],
            issuer=issuer,
            initiator=str(event.get("initiating_entity", "")),
            reason=str(reason.get("en", "")) if isinstance(reason, dict) else "",
        )


def _subject(
    sub_id: object, issuer: str
) -> tuple[RevocationKind, str | None, str | None, str | None]:
    """(kind, subject, task_id, jti) from a sub_id, or RejectedEvent."""
    if not isinstance(sub_id, dict):
        raise _reject(RejectReason.NOT_A_REVOCATION, "the SET has no sub_id")
    fmt = sub_id.get("format")
    if fmt == "jwt_id":
        jti = _text(sub_id.get("jti"))
        if jti is None or sub_id.get("iss") != issuer:
            raise _reject(RejectReason.MALFORMED, "a jwt_id subject needs this issuer and a jti")
        return RevocationKind.CREDENTIAL, None, None, jti
    if fmt == "complex":
        session, user = sub_id.get("session"), sub_id.get("user")
        if not isinstance(session, dict) or not isinstance(user, dict):
            raise _reject(RejectReason.MALFORMED, "a task subject needs session and user")
        task_id, requester = _text(session.get("id")), _text(user.get("sub"))
        if task_id is None or requester is None or user.get("iss") != issuer:
            raise _reject(RejectReason.MALFORMED, "a task subject needs a session id and a user")
        return RevocationKind.TASK, requester, task_id, None
    if fmt == "iss_sub":
        subject = _text(sub_id.get("sub"))
        if subject is None or sub_id.get("iss") != issuer:
            raise _reject(RejectReason.MALFORMED, "an identity subject needs this issuer and sub")
        return RevocationKind.IDENTITY, subject, None, None
    if fmt == "opaque":
        pattern = _text(sub_id.get("id"))
        if pattern is None or not pattern.startswith("spiffe://"):
            raise _reject(RejectReason.MALFORMED, "an identity pattern must be a SPIFFE ID pattern")
        if not pattern.endswith(("/*", "/**")):
            raise _reject(RejectReason.MALFORMED, "an identity pattern must end in /* or /**")
        return RevocationKind.IDENTITY, pattern, None, None
    raise _reject(RejectReason.NOT_A_REVOCATION, f"unknown sub_id format {str(fmt)[:32]!r}")


def pattern_matches(pattern: str, subject: str) -> bool:
    """Whether `subject` is covered by an identity pattern: exact, `/*` (one more segment) or
    `/**` (one or more), as in taskpass groups and policy."""
    for wildcard, one in (("/**", False), ("/*", True)):
        if pattern.endswith(wildcard):
            base = pattern[: -len(wildcard)] + "/"
            rest = subject[len(base) :]
            if not subject.startswith(base) or not rest:
                return False
            return "/" not in rest if one else "" not in rest.split("/")
    return subject == pattern
