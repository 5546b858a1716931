"""Records <-> SQLite rows (in the column order the statements in sqlite*.py use)."""

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
    CredentialRecord,
    RevocationEvent,
    RevocationKind,
    TaskRecord,
    utc,
)
from taskpass.server.store.row_guard import Column, positive, reads

Row = Sequence[Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
# One encoder reused (json.dumps with options builds one per call): lists of names, compact.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def to_db_time(value: dt.datetime) -> int:
    """Microseconds since the epoch: exact (no float rounding) and ordered."""
    return (utc(value, "timestamp") - _EPOCH) // _MICROSECOND


def from_db_time(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def _optional_time(value: int | None) -> dt.datetime | None:
    return None if value is None else from_db_time(value)


def _names(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value))


def task_to_row(task: TaskRecord) -> tuple[Any, ...]:
    return (
        task.requester,
        task.task_id,
        task.digest,
        canonical_json(task.descriptor),
        to_db_time(task.created_at),
        None if task.completed_at is None else to_db_time(task.completed_at),
    )


@reads(
    "tasks",
    Column(3, "descriptor", json.loads),
    Column(4, "created_at", from_db_time),
    Column(5, "completed_at", _optional_time),
)
def task_from_row(row: Row) -> TaskRecord:
    return TaskRecord(
        requester=row[0],
        task_id=row[1],
        digest=row[2],
        descriptor=json.loads(row[3]),
        created_at=from_db_time(row[4]),
        completed_at=_optional_time(row[5]),
    )


def credential_to_row(credential: CredentialRecord) -> tuple[Any, ...]:
    c = credential
    return (
        c.jti,
        c.requester,
        c.task_id,
        c.audience,
        _json_list(c.scopes),
        to_db_time(c.issued_at),
        to_db_time(c.expires_at),
        c.policy_version,
        c.kid,
        c.cert_thumbprint,
        c.approval_id,
        c.parent_jti,
        None if c.revoked_at is None else to_db_time(c.revoked_at),
        c.revoke_reason,
    )


@reads(
    "credentials",
    Column(4, "scopes", _names),
    Column(5, "issued_at", from_db_time),
    Column(6, "expires_at", from_db_time),
    Column(12, "revoked_at", _optional_time),
)
def credential_from_row(row: Row) -> CredentialRecord:
    return CredentialRecord(
        jti=row[0],
        requester=row[1],
        task_id=row[2],
        audience=row[3],
        scopes=tuple(json.loads(row[4])),
        issued_at=from_db_time(row[5]),
        expires_at=from_db_time(row[6]),
        policy_version=row[7],
        kid=row[8],
        cert_thumbprint=row[9],
        approval_id=row[10],
        parent_jti=row[11],
        revoked_at=_optional_time(row[12]),
        revoke_reason=row[13],
    )


def audit_to_row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.seq,
        record.kind,
        record.actor,
        to_db_time(record.at),
        canonical_json(record.payload),
        record.prev_hash,
        record.hash,
    )


@reads(
    "audit",
    Column(0, "seq", positive),
    Column(3, "at", from_db_time),
    Column(4, "payload", json.loads),
)
def audit_from_row(row: Row) -> AuditRecord:
    return AuditRecord(
        seq=positive(row[0]),
        kind=row[1],
        actor=row[2],
        at=from_db_time(row[3]),
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
        to_db_time(event.expires_at),
        to_db_time(event.at),
        event.set_token,
        event.reason,
    )


@reads(
    "revocation_events",
    Column(0, "seq", positive),
    Column(1, "kind", RevocationKind),
    Column(5, "expires_at", from_db_time),
    Column(6, "at", from_db_time),
)
def event_from_row(row: Row) -> RevocationEvent:
    return RevocationEvent(
        seq=positive(row[0]),
        kind=RevocationKind(row[1]),
        subject=row[2],
        task_id=row[3],
        jti=row[4],
        expires_at=from_db_time(row[5]),
        at=from_db_time(row[6]),
        set_token=row[7],
        reason=row[8],
    )


def _json_list(items: Sequence[str]) -> str:
    return _COMPACT.encode(list(items))


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
        _json_list(a.scopes),
        a.ttl_seconds,
        _json_list(a.rules),
        _json_list(a.approver_groups),
        a.policy_version,
        a.decision_id,
        a.state.value,
        to_db_time(a.created_at),
        to_db_time(a.expires_at),
        a.decided_by,
        None if a.decided_at is None else to_db_time(a.decided_at),
        a.reason,
        None if a.consumed_at is None else to_db_time(a.consumed_at),
        a.parent_jti,
    )


@reads(
    "approvals",
    Column(6, "descriptor", json.loads),
    Column(10, "scopes", _names),
    Column(11, "ttl_seconds", positive),
    Column(12, "rules", _names),
    Column(13, "approver_groups", _names),
    Column(16, "state", ApprovalState),
    Column(17, "created_at", from_db_time),
    Column(18, "expires_at", from_db_time),
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
        scopes=tuple(json.loads(row[10])),
        ttl_seconds=positive(row[11]),
        rules=tuple(json.loads(row[12])),
        approver_groups=tuple(json.loads(row[13])),
        policy_version=row[14],
        decision_id=row[15],
        state=row[16],
        created_at=from_db_time(row[17]),
        expires_at=from_db_time(row[18]),
        decided_by=row[19],
        decided_at=_optional_time(row[20]),
        reason=row[21],
        consumed_at=_optional_time(row[22]),
        parent_jti=row[23],
    )
