"""The bans aggregate on SQLite: a ban and the revocation of everything the identity holds, in
one transaction with its audit record and revocation event.

Which requesters a pattern matches is decided by `WorkloadPattern` (the syntax of groups and
policy), on the writer thread; SQL only narrows the scan to the pattern's ID prefix.
"""

from __future__ import annotations

from typing import Any, Protocol

from taskpass.server.errors import Conflict, InvalidRequest, NotFound
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.store.cascade import CascadeEvent
from taskpass.server.store.records import (
    AuditEntry,
    BanRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
)
from taskpass.server.store.row_codec import Row
from taskpass.server.store.sqlite_cascade import complete_revocation
from taskpass.server.store.sqlite_codec import codec, to_db_time
from taskpass.server.store.sqlite_writer import BatchWriter, WriteTx

_INSERT_BAN = """
    INSERT INTO bans (pattern, banned_at, banned_by, reason) VALUES (?, ?, ?, ?)
    ON CONFLICT (pattern) DO NOTHING"""
_DELETE_BAN = """
    DELETE FROM bans WHERE pattern = ? RETURNING pattern, banned_at, banned_by, reason"""
_LIST_BANS = "SELECT pattern, banned_at, banned_by, reason FROM bans ORDER BY banned_at, pattern"
_LIVE_EXACT = """
    SELECT jti, requester FROM credentials
    WHERE requester = ? AND revoked_at IS NULL AND expires_at > ?"""
# '0' is the character after '/': the range holds exactly the IDs that start with `base/`.
_LIVE_UNDER = """
    SELECT jti, requester FROM credentials
    WHERE requester > ? AND requester < ? AND revoked_at IS NULL AND expires_at > ?"""
_REVOKE = """
    UPDATE credentials SET revoked_at = ?, revoke_reason = ?
    WHERE jti = ? AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""


class _Reads(Protocol):
    async def fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...


def parse_pattern(pattern: str) -> WorkloadPattern:
    """The ban pattern, or InvalidRequest naming the problem. `*` (everyone) is refused."""
    try:
        parsed = WorkloadPattern.parse(pattern)
    except ValueError as exc:
        raise InvalidRequest("identity", str(exc)) from None
    if parsed.kind is PatternKind.ANY:
        raise InvalidRequest("identity", "'*' would ban every workload; name an ID or a pattern")
    return parsed


def banned_reason(ban: BanRecord) -> str:
    """The revoke_reason stored on the credentials a ban revokes."""
    return f"identity banned: {ban.reason}" if ban.reason else "identity banned"


def _live_credentials(tx: WriteTx, pattern: WorkloadPattern, at_db: int) -> list[str]:
    if pattern.kind is PatternKind.EXACT:
        rows = tx.conn.execute(_LIVE_EXACT, (pattern.base, at_db)).fetchall()
    else:
        low, high = pattern.base + "/", pattern.base + "0"
        rows = tx.conn.execute(_LIVE_UNDER, (low, high, at_db)).fetchall()
    return [jti for jti, requester in rows if pattern.matches(requester)]


class SqliteBans:
    def __init__(self, writer: BatchWriter, reader: _Reads) -> None:
        self._writer = writer
        self._reader = reader

    async def ban(
        self,
        *,
        ban: BanRecord,
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[list[CredentialRecord], RevocationEvent | None]:
        pattern = parse_pattern(ban.pattern)
        at_db = to_db_time(ban.banned_at)
        ban_row = (ban.pattern, at_db, ban.banned_by, ban.reason)
        reason = banned_reason(ban)

        def run(tx: WriteTx) -> tuple[list[CredentialRecord], RevocationEvent | None]:
            if tx.conn.execute(_INSERT_BAN, ban_row).rowcount == 0:
                raise Conflict(f"{ban.pattern} is already banned; unban it first to ban it again")
            revoked = []
            for jti in _live_credentials(tx, pattern, at_db):
                row = tx.conn.execute(_REVOKE, (at_db, reason, jti)).fetchall()[0]
                revoked.append(codec.credential_from_row(row))
            return complete_revocation(
                tx,
                revoked,
                at_db=at_db,
                reason=reason,
                audit=audit,
                event=event,
                cascade=cascade,
            )

        return await self._writer.submit(run)

    async def unban(self, *, pattern: str, audit: AuditEntry) -> BanRecord:
        def run(tx: WriteTx) -> BanRecord:
            rows = tx.conn.execute(_DELETE_BAN, (pattern,)).fetchall()
            if not rows:
                raise NotFound(f"{pattern} is not banned (give the pattern exactly as banned)")
            tx.append_audit(audit)
            return codec.ban_from_row(rows[0])

        return await self._writer.submit(run)

    async def list_bans(self) -> list[BanRecord]:
        return [codec.ban_from_row(row) for row in await self._reader.fetch_all(_LIST_BANS, ())]
