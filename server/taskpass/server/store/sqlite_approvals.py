"""The approvals aggregate on SQLite: requests, decisions and single use, each with its audit row.

Every state change is one conditional UPDATE inside the writer's transaction, so the single
writer decides races: of two approvers, or two exchanges presenting one grant, exactly one wins.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from taskpass.server.store.base import (
    MAX_PAGE,
    PendingCursor,
    check_page,
    not_usable,
    too_many_pending,
    why_not,
)
from taskpass.server.store.records import ApprovalRecord, ApprovalState, AuditEntry
from taskpass.server.store.row_codec import APPROVALS, Row
from taskpass.server.store.sqlite_codec import codec, to_db_time
from taskpass.server.store.sqlite_writer import BatchWriter, WriteTx

# Every statement reads or writes the columns in row_codec.APPROVALS's order, as the codec does.
_COLUMNS = ", ".join(APPROVALS.names)
_PLACEHOLDERS = ", ".join("?" for _ in APPROVALS.names)
_INSERT = f"""
    INSERT INTO approvals ({_COLUMNS})
    VALUES ({_PLACEHOLDERS})"""  # noqa: S608 - constants
_SELECT = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE approval_id = ?"""  # noqa: S608 - constants
_LATEST = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE requester = ? AND digest = ?
    ORDER BY created_at DESC, rowid DESC LIMIT 1"""  # noqa: S608 - constants
# What blocks a new request for the same task: a live one asked under the same parent
# credential (`IS`: NULL, no parent, matches only NULL), or a denial under any parent (final
# for that task: a new parent credential does not reopen what an approver refused).
_IN_FORCE = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE requester = ? AND digest = ?
        AND (state = 'denied'
             OR (state IN ('pending', 'approved') AND expires_at > ? AND parent_jti IS ?))
    ORDER BY created_at DESC, rowid DESC LIMIT 1"""  # noqa: S608 - constants
_PENDING = f"""
    SELECT {_COLUMNS}
    FROM approvals WHERE state = 'pending' AND expires_at > ? AND (created_at, approval_id) > (?, ?)
    ORDER BY created_at, approval_id LIMIT ?"""  # noqa: S608 - constants
_PENDING_OF = """
    SELECT count(*) FROM approvals WHERE requester = ? AND state = 'pending' AND expires_at > ?"""
_DECIDE = f"""
    UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, reason = ?, expires_at = ?
    WHERE approval_id = ? AND state = 'pending' AND expires_at > ?
    RETURNING {_COLUMNS}"""  # noqa: S608 - constants
_CONSUME = f"""
    UPDATE approvals SET state = 'consumed', consumed_at = ?
    WHERE approval_id = ? AND state = 'approved' AND expires_at > ?
        AND requester = ? AND digest = ? AND parent_jti IS ?
    RETURNING {_COLUMNS}"""  # noqa: S608 - constants


class _Reads(Protocol):
    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> Row | None: ...


def _one(tx: WriteTx, sql: str, params: tuple[Any, ...]) -> ApprovalRecord | None:
    # fetchall runs the statement to its end before the savepoint is released
    rows = tx.conn.execute(sql, params).fetchall()
    return codec.approval_from_row(rows[0]) if rows else None


class SqliteApprovals:
    def __init__(self, writer: BatchWriter, reader: _Reads) -> None:
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
        key = (approval.requester, approval.digest, to_db_time(now), approval.parent_jti)

        def run(tx: WriteTx) -> tuple[ApprovalRecord, bool]:
            in_force = _one(tx, _IN_FORCE, key)
            if in_force is not None:
                return in_force, False
            pending = tx.conn.execute(_PENDING_OF, (approval.requester, key[2])).fetchone()[0]
            if pending >= max_pending:
                raise too_many_pending(approval.requester, pending)
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

    async def list_pending(
        self, now: dt.datetime, *, limit: int, after: PendingCursor | None = None
    ) -> list[ApprovalRecord]:
        check_page(limit=limit)
        created, approval_id = (to_db_time(after[0]), after[1]) if after else (-1, "")
        rows = await self._reader.fetch_all(
            _PENDING, (to_db_time(now), created, approval_id, limit)
        )
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
