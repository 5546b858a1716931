"""Small record builders for the store tests: only what a test varies is passed."""

from __future__ import annotations

import datetime as dt

from taskpass.server.store.base import Store
from taskpass.server.store.records import (
    AuditEntry,
    CredentialRecord,
    NewRevocation,
    RevocationKind,
    TaskRecord,
)

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
AGENT = "spiffe://example.org/agents/a"
OTHER_AGENT = "spiffe://example.org/agents/b"
TTL = dt.timedelta(minutes=5)


def task(
    task_id: str = "task-1",
    *,
    requester: str = AGENT,
    digest: str = "digest-1",
    created_at: dt.datetime = T0,
) -> TaskRecord:
    return TaskRecord(
        requester=requester,
        task_id=task_id,
        digest=digest,
        descriptor={"task_id": task_id, "audience": "payments-api", "action": "read"},
        created_at=created_at,
    )


def credential(
    jti: str,
    *,
    task_id: str = "task-1",
    requester: str = AGENT,
    issued_at: dt.datetime = T0,
    ttl: dt.timedelta = TTL,
) -> CredentialRecord:
    return CredentialRecord(
        jti=jti,
        requester=requester,
        task_id=task_id,
        audience="payments-api",
        scopes=("payments:read", "payments:list"),
        issued_at=issued_at,
        expires_at=issued_at + ttl,
        policy_version="sha256:policy",
        kid="kid-1",
        cert_thumbprint="x5t-thumb",
        approval_id=None,
        parent_jti=None,
    )


def entry(kind: str = "issuance", *, at: dt.datetime = T0, **payload: object) -> AuditEntry:
    return AuditEntry(kind=kind, actor=AGENT, at=at, payload=dict(payload))


def task_revocation(
    task_id: str = "task-1", *, at: dt.datetime = T0, expires_at: dt.datetime | None = None
) -> NewRevocation:
    return NewRevocation(
        kind=RevocationKind.TASK,
        subject=AGENT,
        task_id=task_id,
        jti=None,
        expires_at=expires_at or at,
        at=at,
        set_token=f"set-for-{task_id}",
        reason="task completed",
    )


def credential_revocation(
    jti: str, *, at: dt.datetime = T0, expires_at: dt.datetime | None = None
) -> NewRevocation:
    return NewRevocation(
        kind=RevocationKind.CREDENTIAL,
        subject=AGENT,
        task_id="task-1",
        jti=jti,
        expires_at=expires_at or at,
        at=at,
        set_token=f"set-for-{jti}",
        reason="revoked by admin",
    )


async def issue(
    store: Store,
    jti: str,
    *,
    task_id: str = "task-1",
    requester: str = AGENT,
    digest: str = "digest-1",
    issued_at: dt.datetime = T0,
    ttl: dt.timedelta = TTL,
) -> CredentialRecord:
    """Record one issuance the way the exchange does, and return the credential."""
    record = credential(jti, task_id=task_id, requester=requester, issued_at=issued_at, ttl=ttl)
    await store.credentials.record_issuance(
        task=task(task_id, requester=requester, digest=digest, created_at=issued_at),
        credential=record,
        audit=entry("issuance", at=issued_at, jti=jti, task_id=task_id),
    )
    return record
