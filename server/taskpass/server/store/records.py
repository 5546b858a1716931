"""What the store keeps: plain frozen values, no gRPC, no crypto.

Every datetime must be timezone-aware and is normalised to UTC on construction, so a record read
back from any backend equals the one written, and the audit hash (which covers `at.isoformat()`)
does not depend on the writer's time zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from taskpass.server.request_id import AUDIT_KEY, current_request_id

JsonObject = dict[str, Any]
"""A JSON-serialisable mapping (str keys; str, int, float, bool, None, list and dict values)."""


def utc(value: dt.datetime, field: str) -> dt.datetime:
    """`value` in UTC; a naive datetime is a bug in the caller, so it fails loudly."""
    if value.tzinfo is dt.UTC:  # the usual case (about 12 times per exchange): already UTC
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got a naive one")
    return value.astimezone(dt.UTC)


def _normalise(record: object, *fields: str) -> None:
    for name in fields:
        value = getattr(record, name)
        if value is not None:
            # Frozen dataclass: __post_init__ is the one place allowed to set fields.
            object.__setattr__(record, name, utc(value, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A task a requester asked credentials for; unique per (requester, task_id)."""

    requester: str
    task_id: str
    digest: str
    """Content hash of the descriptor: a task_id may be reused only for the very same task."""
    descriptor: JsonObject
    created_at: dt.datetime
    completed_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        _normalise(self, "created_at", "completed_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialRecord:
    """One issued access token (never the token itself: only what revocation and audit need)."""

    jti: str
    requester: str
    task_id: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: dt.datetime
    expires_at: dt.datetime
    policy_version: str
    kid: str
    cert_thumbprint: str | None = None
    approval_id: str | None = None
    parent_jti: str | None = None
    revoked_at: dt.datetime | None = None
    revoke_reason: str = ""

    def __post_init__(self) -> None:
        _normalise(self, "issued_at", "expires_at", "revoked_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """What a caller appends to the audit log; the store gives it a seq and chains its hash.

    An entry made while an RPC is served carries that RPC's `request_id` in its payload (read
    from request_id.py's contextvar), so an audit record leads to the call's log lines.
    """

    kind: str
    actor: str
    at: dt.datetime
    payload: JsonObject

    def __post_init__(self) -> None:
        _normalise(self, "at")
        request_id = current_request_id()
        if request_id is not None and AUDIT_KEY not in self.payload:
            object.__setattr__(self, "payload", {**self.payload, AUDIT_KEY: request_id})


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """A stored audit entry. `hash` = sha256(prev_hash + canonical JSON), see audit_chain."""

    seq: int
    kind: str
    actor: str
    at: dt.datetime
    payload: JsonObject
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        _normalise(self, "at")


class RevocationKind(enum.StrEnum):
    CREDENTIAL = "credential"
    TASK = "task"
    IDENTITY = "identity"
    KEY = "key"
    POLICY = "policy"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRevocation:
    """A revocation event before the store numbers it. The SET is signed by the caller first."""

    kind: RevocationKind
    subject: str
    task_id: str | None
    jti: str | None
    expires_at: dt.datetime
    """The latest expiry of anything this event revokes: it stays "in force" until then."""
    at: dt.datetime
    set_token: str
    """The signed Security Event Token (RFC 8417) that subscribers receive."""
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RevocationKind(self.kind))
        _normalise(self, "expires_at", "at")

    def covering(self, revoked: Iterable[CredentialRecord]) -> NewRevocation:
        """This event, in force at least until the last of `revoked` expires."""
        latest = max((c.expires_at for c in revoked), default=self.expires_at)
        if latest <= self.expires_at:
            return self
        return dataclasses.replace(self, expires_at=latest)


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationEvent:
    """A stored revocation event; `seq` is gap-free in commit order."""

    seq: int
    kind: RevocationKind
    subject: str
    task_id: str | None
    jti: str | None
    expires_at: dt.datetime
    at: dt.datetime
    set_token: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RevocationKind(self.kind))
        _normalise(self, "expires_at", "at")

    @classmethod
    def numbered(cls, seq: int, new: NewRevocation) -> RevocationEvent:
        return cls(
            seq=seq,
            kind=new.kind,
            subject=new.subject,
            task_id=new.task_id,
            jti=new.jti,
            expires_at=new.expires_at,
            at=new.at,
            set_token=new.set_token,
            reason=new.reason,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationSnapshot:
    """The events still in force, read in one transaction with the sequence they are current at.

    A subscriber that applies `events` and then resumes with `read_after(seq)` misses nothing and
    sees nothing twice.
    """

    events: tuple[RevocationEvent, ...]
    seq: int


class ApprovalState(enum.StrEnum):
    """Stored states. Expiry is not stored: a pending or approved record whose `expires_at` has
    passed is expired, whatever its state says (see ApprovalRecord.effective_state)."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    """Never stored; what effective_state reports for a lapsed pending or approved record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRecord:
    """A request for approval, bound to one requester and one exact task, and its decision.

    The binding (requester, task digest, audience, action, scopes, ttl, rules, and for a
    delegated exchange the parent credential) is what the approver saw; a grant is usable only
    for that. `expires_at` is when a pending request lapses, and after an approval, when the
    unused grant lapses.
    """

    approval_id: str
    requester: str
    requester_method: str
    cert_thumbprint: str | None
    task_id: str
    digest: str
    descriptor: JsonObject
    audience: str
    action: str
    sensitivity: str
    scopes: tuple[str, ...]
    ttl_seconds: int
    """The credential lifetime the approver was shown; a credential may live no longer."""
    rules: tuple[str, ...]
    """The require_approval rules this approval satisfies."""
    approver_groups: tuple[str, ...]
    policy_version: str
    decision_id: str
    state: ApprovalState
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    reason: str = ""
    consumed_at: dt.datetime | None = None
    parent_jti: str | None = None
    """The jti of the parent credential a delegated exchange asked under; None when the exchange
    was not a delegation (and for every request stored before this was recorded)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", ApprovalState(self.state))
        _normalise(self, "created_at", "expires_at", "decided_at", "consumed_at")

    def effective_state(self, now: dt.datetime) -> ApprovalState:
        live = self.state in (ApprovalState.PENDING, ApprovalState.APPROVED)
        return ApprovalState.EXPIRED if live and now >= self.expires_at else self.state

    def parent_mismatch(self, parent_jti: str | None) -> str:
        """Why an exchange under `parent_jti` (None: no parent) may not use this approval, or
        "" when it was asked under that same parent (or, like it, under none)."""
        if parent_jti == self.parent_jti:
            return ""
        if self.parent_jti is None:
            return "it was granted for an exchange without a parent credential, not a delegation"
        if parent_jti is None:
            return "it was granted for a delegation under a parent credential, not without one"
        return "it was granted under another parent credential"


@dataclass(frozen=True, slots=True, kw_only=True)
class BanRecord:
    """An identity refused new credentials until unbanned.

    `pattern` is an exact workload ID or a SPIFFE ID pattern (`.../*` one more segment, `.../**`
    any depth), the syntax of groups and policy rules.
    """

    pattern: str
    banned_at: dt.datetime
    banned_by: str
    reason: str

    def __post_init__(self) -> None:
        _normalise(self, "banned_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishedKey:
    """A replica's public signing key in the shared JWKS, published until `publish_until`.

    Every replica signs with its own key (kept in its own key_dir) and publishes the public half
    here, so a token signed by any replica verifies on all of them. `jwk` is the public JWK (kid
    = its RFC 7638 thumbprint); `publish_until` is at or after the expiry of everything the key
    signed or may still sign before the replica renews it.
    """

    kid: str
    jwk: JsonObject
    published_by: str
    """Which replica published it (host and key directory), for operators."""
    published_at: dt.datetime
    publish_until: dt.datetime

    def __post_init__(self) -> None:
        _normalise(self, "published_at", "publish_until")
