"""Records <-> PostgreSQL rows (in the column order the statements in postgres*.py use).

asyncpg maps timestamptz to aware datetimes and text[] to lists; JSON columns are canonical
JSON text (see postgres_schema).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from taskpass.server.store.audit_chain import canonical_json
from taskpass.server.store.records import (
    ApprovalRecord,
    ApprovalState,
    AuditRecord,
    BanRecord,
    CredentialRecord,
    RevocationEvent,
    RevocationKind,
    TaskRecord,
    utc,
)
from taskpass.server.store.row_guard import Column, positive, reads

Row = Sequence[Any]


# Out-of-range timestamps fail in the driver (see row_guard.timestamp_out_of_range), except
# +-infinity, which asyncpg decodes as a naive datetime.max / min: not a time a record can hold.
def timestamp(value: dt.datetime) -> dt.datetime:
    return utc(value, "timestamp")


def _optional_time(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else timestamp(value)


def task_to_row(task: TaskRecord) -> tuple[Any, ...]:
    return (
        task.requester,
        task.task_id,
        task.digest,
        canonical_json(task.descriptor),
        task.created_at,
        task.completed_at,
    )


@reads(
    "tasks",
    Column(3, "descriptor", json.loads),
    Column(4, "created_at", timestamp),
    Column(5, "completed_at", _optional_time),
)
def task_from_row(row: Row) -> TaskRecord:
    return TaskRecord(
        requester=row[0],
        task_id=row[1],
        digest=row[2],
        descriptor=json.loads(row[3]),
        created_at=row[4],
        completed_at=row[5],
    )


def credential_to_row(credential: CredentialRecord) -> tuple[Any, ...]:
    c = credential
    return (
        c.jti,
        c.requester,
        c.task_id,
        c.audience,
        list(c.scopes),
        c.issued_at,
        c.expires_at,
        c.policy_version,
        c.kid,
        c.cert_thumbprint,
        c.approval_id,
        c.parent_jti,
        c.revoked_at,
        c.revoke_reason,
    )


@reads(
    "credentials",
    Column(5, "issued_at", timestamp),
    Column(6, "expires_at", timestamp),
    Column(12, "revoked_at", _optional_time),
)
def credential_from_row(row: Row) -> CredentialRecord:
    return CredentialRecord(
        jti=row[0],
        requester=row[1],
        task_id=row[2],
        audience=row[3],
        scopes=tuple(row[4]),
        issued_at=row[5],
        expires_at=row[6],
        policy_version=row[7],
        kid=row[8],
        cert_thumbprint=row[9],
        approval_id=row[10],
        parent_jti=row[11],
        revoked_at=row[12],
        revoke_reason=row[13],
    )


def audit_to_row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.seq,
        record.kind,
        record.actor,
        record.at,
        canonical_json(record.payload),
        record.prev_hash,
        record.hash,
    )


@reads(
    "audit",
    Column(0, "seq", positive),
    Column(3, "at", timestamp),
    Column(4, "payload", json.loads),
)
def audit_from_row(row: Row) -> AuditRecord:
    return AuditRecord(
        seq=positive(row[0]),
        kind=row[1],
        actor=row[2],
        at=row[3],
        payload=json.loads(row[4]),
        prev_hash=row[5],
        hash=row[6],
    )


def event_to_row(event: RevocationEvent) -> tuple[Any, ...]:
    return (
        event.seq,
        event.kind.value,
        event.subject,
        event.task_id,
        event.jti,
        event.expires_at,
        event.at,
        event.set_token,
        event.reason,
    )


@reads(
    "revocation_events",
    Column(0, "seq", positive),
    Column(1, "kind", RevocationKind),
    Column(5, "expires_at", timestamp),
    Column(6, "at", timestamp),
)
def event_from_row(row: Row) -> RevocationEvent:
    return RevocationEvent(
        seq=positive(row[0]),
        kind=RevocationKind(row[1]),
        subject=row[2],
        task_id=row[3],
        jti=row[4],
        expires_at=row[5],
        at=row[6],
        set_token=row[7],
        reason=row[8],
    )


def approval_to_row(a: ApprovalRecord) -> tuple[Any, ...]:
    return (
        a.approval_id,
        a.requester,
        a.requester_method,
        a.cert_thumbprint,
        a.task_id,
        a.digest,
        canonical_json(a.descriptor),
        a.audience,
        a.action,
        a.sensitivity,
        list(a.scopes),
        a.ttl_seconds,
        list(a.rules),
        list(a.approver_groups),
        a.policy_version,
        a.decision_id,
        a.state.value,
        a.created_at,
        a.expires_at,
        a.decided_by,
        a.decided_at,
        a.reason,
        a.consumed_at,
        a.parent_jti,
    )


@reads(
    "approvals",
    Column(6, "descriptor", json.loads),
    Column(11, "ttl_seconds", positive),
    Column(16, "state", ApprovalState),
    Column(17, "created_at", timestamp),
    Column(18, "expires_at", timestamp),
    Column(20, "decided_at", _optional_time),
    Column(22, "consumed_at", _optional_time),
)
def approval_from_row(row: Row) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=row[0],
        requester=row[1],
        requester_method=row[2],
        cert_thumbprint=row[3],
        task_id=row[4],
        digest=row[5],
        descriptor=json.loads(row[6]),
        audience=row[7],
        action=row[8],
        sensitivity=row[9],
        scopes=tuple(row[10]),
        ttl_seconds=positive(row[11]),
        rules=tuple(row[12]),
        approver_groups=tuple(row[13]),
        policy_version=row[14],
        decision_id=row[15],
        state=row[16],
        created_at=row[17],
        expires_at=row[18],
        decided_by=row[19],
        decided_at=row[20],
        reason=row[21],
        consumed_at=row[22],
        parent_jti=row[23],
    )


@reads("bans", Column(1, "banned_at", timestamp))
def ban_from_row(row: Row) -> BanRecord:
    return BanRecord(pattern=row[0], banned_at=row[1], banned_by=row[2], reason=row[3])
