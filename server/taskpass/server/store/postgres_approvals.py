"""The approvals aggregate on PostgreSQL: requests, decisions and single use, each with its audit
row, the twin of sqlite_approvals.

Every state change is one conditional UPDATE inside the writer's transaction (which holds the
write lock), so of two approvers, or two exchanges presenting one grant, on any replicas,
exactly one wins. Every change is announced (NOTIFY, naming the approval) so an exchange waiting
on another replica, or an approver watching there, learns of it at once. Why a change matched
no row (the errors and their words) is decided as on SQLite, by store.base's why_not and
not_usable.
"""

from __future__ import annotations

import datetime as dt

from taskpass.server.store.base import (
    MAX_PAGE,
    PendingCursor,
    approver_banned,
    check_page,
    not_usable,
    too_many_pending,
    why_not,
)
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_notify import approval_topic
from taskpass.server.store.postgres_reader import PgReader
from taskpass.server.store.postgres_writer import PgBatchWriter, PgWriteTx
from taskpass.server.store.records import ApprovalRecord, ApprovalState, AuditEntry
from taskpass.server.store.row_codec import APPROVALS

# Every statement reads or writes the columns in row_codec.APPROVALS's order, as the codec does.
_COLUMNS = ", ".join(APPROVALS.names)
_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(APPROVALS.names) + 1))
_INSERT = f"""
    INSERT INTO approvals ({_COLUMNS})
    VALUES ({_PLACEHOLDERS})"""  # noqa: S608 - constants
_SELECT = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE approval_id = $1"""  # noqa: S608 - constants
_LATEST = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE requester = $1 AND digest = $2
    ORDER BY created_at DESC, ord DESC LIMIT 1"""  # noqa: S608 - constants
# What blocks a new request for the same task: a live one asked under the same parent
# credential (NULL, no parent, matches only NULL), or a denial under any parent (final for
# that task: a new parent credential does not reopen what an approver refused).
_IN_FORCE = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE requester = $1 AND digest = $2
        AND (state = 'denied'
             OR (state IN ('pending', 'approved') AND expires_at > $3
                 AND parent_jti IS NOT DISTINCT FROM $4))
    ORDER BY created_at DESC, ord DESC LIMIT 1"""  # noqa: S608 - constants
_PENDING = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE state = 'pending' AND expires_at > $1
        AND (created_at, approval_id) > ($2, $3)
    ORDER BY created_at, approval_id LIMIT $4"""  # noqa: S608 - constants
_PENDING_OF = """
    SELECT count(*) FROM approvals WHERE requester = $1 AND state = 'pending' AND expires_at > $2"""
_BEFORE_ALL = dt.datetime.min.replace(tzinfo=dt.UTC)
_DECIDE = f"""
    UPDATE approvals SET state = $1, decided_by = $2, decided_at = $3, reason = $4,
        expires_at = $5
    WHERE approval_id = $6 AND state = 'pending' AND expires_at > $3
    RETURNING {_COLUMNS}"""  # noqa: S608 - constants
_CONSUME = f"""
    UPDATE approvals SET state = 'consumed', consumed_at = $1
    WHERE approval_id = $2 AND state = 'approved' AND expires_at > $1
        AND requester = $3 AND digest = $4 AND parent_jti IS NOT DISTINCT FROM $5
    RETURNING {_COLUMNS}"""  # noqa: S608 - constants


async def _one(tx: PgWriteTx, sql: str, *args: object) -> ApprovalRecord | None:
    row = await tx.conn.fetchrow(sql, *args)
    return None if row is None else codec.approval_from_row(row)


class PostgresApprovals:
    def __init__(self, writer: PgBatchWriter, reader: PgReader) -> None:
        self._writer = writer
        self._reader = reader

    async def create_or_reuse(
        self,
        approval: ApprovalRecord,
        *,
        audit: AuditEntry,
        now: dt.datetime,
        max_pending: int = MAX_PAGE,
    ) -> tuple[ApprovalRecord, bool]:
        if approval.state is not ApprovalState.PENDING:
            raise ValueError("a new approval starts pending")
        row = codec.approval_to_row(approval)

        async def run(tx: PgWriteTx) -> tuple[ApprovalRecord, bool]:
            in_force = await _one(
                tx, _IN_FORCE, approval.requester, approval.digest, now, approval.parent_jti
            )
            if in_force is not None:
                return in_force, False
            pending = int(await tx.conn.fetchval(_PENDING_OF, approval.requester, now))
            if pending >= max_pending:
                raise too_many_pending(approval.requester, pending)
            await tx.conn.execute(_INSERT, *row)
            await tx.append_audit(audit)
            tx.announce(approval_topic(approval.approval_id))  # approvers watch other replicas
            return approval, True

        return await self._writer.submit(run)

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        row = await self._reader.fetch_one(_SELECT, approval_id)
        return None if row is None else codec.approval_from_row(row)

    async def latest_for(self, requester: str, digest: str) -> ApprovalRecord | None:
        row = await self._reader.fetch_one(_LATEST, requester, digest)
        return None if row is None else codec.approval_from_row(row)

    async def list_pending(
        self, now: dt.datetime, *, limit: int, after: PendingCursor | None = None
    ) -> list[ApprovalRecord]:
        check_page(limit=limit)
        created, approval_id = after or (_BEFORE_ALL, "")
        rows = await self._reader.fetch(_PENDING, now, created, approval_id, limit)
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

        async def run(tx: PgWriteTx) -> ApprovalRecord:
            decided = await _one(tx, _DECIDE, state.value, by, at, reason, expires_at, approval_id)
            if decided is None:
                raise why_not(await _one(tx, _SELECT, approval_id), approval_id, at)
            await tx.append_audit(audit)
            tx.announce(approval_topic(approval_id))  # an exchange may wait on another replica
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
        async def run(tx: PgWriteTx) -> ApprovalRecord:
            consumed = await _one(tx, _CONSUME, at, approval_id, requester, digest, parent_jti)
            # An approver banned on another replica, before this one's list refreshed: the raise
            # rolls this operation back, the consumption with it.
            approver = consumed.decided_by if consumed is not None else None
            if approver and await tx.ban_covering(approver) is not None:
                raise approver_banned(approval_id, approver)
            if consumed is None:
                raise not_usable(
                    await _one(tx, _SELECT, approval_id),
                    approval_id,
                    requester=requester,
                    digest=digest,
                    parent_jti=parent_jti,
                    at=at,
                )
            await tx.append_audit(audit)
            tx.announce(approval_topic(approval_id))
            return consumed

        return await self._writer.submit(run)
