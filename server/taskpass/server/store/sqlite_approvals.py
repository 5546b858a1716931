"""The approvals aggregate on SQLite: requests, decisions and single use, each with its audit row.

Every state change is one conditional UPDATE inside the writer's transaction, so the single
writer decides races: of two approvers, or two exchanges presenting one grant, exactly one wins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from taskpass.server.errors import Conflict, NotFound, PermissionDenied
from taskpass.server.store.base import check_page
from taskpass.server.store.records import ApprovalRecord, ApprovalState, AuditEntry
from taskpass.server.store.row_codec import Row
from taskpass.server.store.sqlite_codec import codec, to_db_time
from taskpass.server.store.sqlite_writer import BatchWriter, WriteTx

# Column lists follow the order of row_codec.APPROVALS.
_INSERT = """
    INSERT INTO approvals (approval_id, requester, requester_method, cert_thumbprint, task_id,
        digest, descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules,
        approver_groups, policy_version, decision_id, state, created_at, expires_at, decided_by,
        decided_at, reason, consumed_at, parent_jti)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_SELECT = """
    SELECT approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti
    FROM approvals WHERE approval_id = ?"""
_LATEST = """
    SELECT approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti
    FROM approvals WHERE requester = ? AND digest = ?
    ORDER BY created_at DESC, rowid DESC LIMIT 1"""
# What blocks a new request for the same task: a live one asked under the same parent
# credential (`IS`: NULL, no parent, matches only NULL), or a denial under any parent (final
# for that task: a new parent credential does not reopen what an approver refused).
_IN_FORCE = """
    SELECT approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti
    FROM approvals WHERE requester = ? AND digest = ?
        AND (state = 'denied'
             OR (state IN ('pending', 'approved') AND expires_at > ? AND parent_jti IS ?))
    ORDER BY created_at DESC, rowid DESC LIMIT 1"""
_PENDING = """
    SELECT approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti
    FROM approvals WHERE state = 'pending' AND expires_at > ?
    ORDER BY created_at, rowid LIMIT ?"""
_DECIDE = """
    UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, reason = ?, expires_at = ?
    WHERE approval_id = ? AND state = 'pending' AND expires_at > ?
    RETURNING approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti"""
_CONSUME = """
    UPDATE approvals SET state = 'consumed', consumed_at = ?
    WHERE approval_id = ? AND state = 'approved' AND expires_at > ?
        AND requester = ? AND digest = ? AND parent_jti IS ?
    RETURNING approval_id, requester, requester_method, cert_thumbprint, task_id, digest,
        descriptor, audience, action, sensitivity, scopes, ttl_seconds, rules, approver_groups,
        policy_version, decision_id, state, created_at, expires_at, decided_by, decided_at,
        reason, consumed_at, parent_jti"""


class _Reads(Protocol):
    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> Row | None: ...


def _one(tx: WriteTx, sql: str, params: tuple[Any, ...]) -> ApprovalRecord | None:
    # fetchall runs the statement to its end before the savepoint is released
    rows = tx.conn.execute(sql, params).fetchall()
    return codec.approval_from_row(rows[0]) if rows else None


def why_not(stored: ApprovalRecord | None, approval_id: str, at: dt.datetime) -> Exception:
    """The error for a conditional update that matched no row, from the row as it is."""
    if stored is None:
        return NotFound(f"no approval {approval_id!r}")
    return Conflict(f"approval {approval_id} {_STATE_PHRASES[stored.effective_state(at)]}")


def not_usable(
    stored: ApprovalRecord | None,
    approval_id: str,
    *,
    requester: str,
    digest: str,
    parent_jti: str | None,
    at: dt.datetime,
) -> Exception:
    """The error for a consume that matched no row: the binding that differs, else why_not."""
    if stored is not None and stored.requester != requester:
        return PermissionDenied(f"approval {approval_id} was granted to another requester")
    if stored is not None and stored.digest != digest:
        return PermissionDenied(
            f"approval {approval_id} was granted for another task (digest differs):"
            " ask for an approval of this task"
        )
    if stored is not None and (mismatch := stored.parent_mismatch(parent_jti)):
        return PermissionDenied(
            f"approval {approval_id} does not cover this request: {mismatch}; "
            "ask for a new approval"
        )
    return why_not(stored, approval_id, at)


_STATE_PHRASES = {
    ApprovalState.PENDING: "is still pending: an approver has not decided it yet",
    ApprovalState.APPROVED: "was already approved",
    ApprovalState.DENIED: "was denied",
    ApprovalState.CONSUMED: "was already used: an approval is single use, ask for a new one",
    ApprovalState.EXPIRED: "has expired: ask for a new approval",
}


class SqliteApprovals:
    def __init__(self, writer: BatchWriter, reader: _Reads) -> None:
        self._writer = writer
        self._reader = reader

    async def create_or_reuse(
        self, approval: ApprovalRecord, *, audit: AuditEntry, now: dt.datetime
    ) -> tuple[ApprovalRecord, bool]:
        if approval.state is not ApprovalState.PENDING:
            raise ValueError("a new approval starts pending")
        row = codec.approval_to_row(approval)
        key = (approval.requester, approval.digest, to_db_time(now), approval.parent_jti)

        def run(tx: WriteTx) -> tuple[ApprovalRecord, bool]:
            in_force = _one(tx, _IN_FORCE, key)
            if in_force is not None:
                return in_force, False
            tx.conn.execute(_INSERT, row)
            tx.append_audit(audit)
            return approval, True

        return await self._writer.submit(run)

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        row = await self._reader.fetch_one(_SELECT, (approval_id,))
        return None if row is None else codec.approval_from_row(row)

    async def latest_for(self, requester: str, digest: str) -> ApprovalRecord | None:
        row = await self._reader.fetch_one(_LATEST, (requester, digest))
        return None if row is None else codec.approval_from_row(row)

    async def list_pending(self, now: dt.datetime, *, limit: int) -> list[ApprovalRecord]:
        check_page(limit=limit)
        rows = await self._reader.fetch_all(_PENDING, (to_db_time(now), limit))
        return [codec.approval_from_row(row) for row in rows]

    async def decide(
        self,
        approval_id: str,
        *,
        approve: bool,
        by: str,
        at: dt.datetime,
        reason: str,
        expires_at: dt.datetime,
        audit: AuditEntry,
    ) -> ApprovalRecord:
        state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
        at_db = to_db_time(at)
        params = (state.value, by, at_db, reason, to_db_time(expires_at), approval_id, at_db)

        def run(tx: WriteTx) -> ApprovalRecord:
            decided = _one(tx, _DECIDE, params)
            if decided is None:
                raise why_not(_one(tx, _SELECT, (approval_id,)), approval_id, at)
            tx.append_audit(audit)
            return decided

        return await self._writer.submit(run)

    async def consume(
        self,
        approval_id: str,
        *,
        requester: str,
        digest: str,
        parent_jti: str | None,
        at: dt.datetime,
        audit: AuditEntry,
    ) -> ApprovalRecord:
        at_db = to_db_time(at)
        params = (at_db, approval_id, at_db, requester, digest, parent_jti)

        def run(tx: WriteTx) -> ApprovalRecord:
            consumed = _one(tx, _CONSUME, params)
            if consumed is None:
                raise not_usable(
                    _one(tx, _SELECT, (approval_id,)),
                    approval_id,
                    requester=requester,
                    digest=digest,
                    parent_jti=parent_jti,
                    at=at,
                )
            tx.append_audit(audit)
            return consumed

        return await self._writer.submit(run)
