"""The bans aggregate on PostgreSQL: a ban and the revocation of everything the identity holds,
in one transaction with its audit record and revocation event; the twin of sqlite_bans.

Which requesters a pattern matches is decided by `WorkloadPattern` (via sqlite_bans'
parse_pattern, the one place that validates a ban pattern); SQL only narrows the scan to the
pattern's ID prefix, compared in "C" collation so the range is byte order whatever the locale.
"""

from __future__ import annotations

import datetime as dt

from taskpass.server.errors import Conflict, NotFound
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.store.cascade import CascadeEvent
from taskpass.server.store.postgres_cascade import complete_revocation
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_reader import PgReader
from taskpass.server.store.postgres_writer import PgBatchWriter, PgWriteTx
from taskpass.server.store.records import (
    AuditEntry,
    BanRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
)
from taskpass.server.store.sqlite_bans import banned_reason, parse_pattern

_INSERT_BAN = """
    INSERT INTO bans (pattern, banned_at, banned_by, reason) VALUES ($1, $2, $3, $4)
    ON CONFLICT (pattern) DO NOTHING"""
_DELETE_BAN = """
    DELETE FROM bans WHERE pattern = $1 RETURNING pattern, banned_at, banned_by, reason"""
_LIST_BANS = "SELECT pattern, banned_at, banned_by, reason FROM bans ORDER BY banned_at, pattern"
_LIVE_EXACT = """
    SELECT jti, requester FROM credentials
    WHERE requester COLLATE "C" = $1 AND revoked_at IS NULL AND expires_at > $2"""
# '0' is the character after '/': the range holds exactly the IDs that start with `base/`.
_LIVE_UNDER = """
    SELECT jti, requester FROM credentials
    WHERE requester COLLATE "C" > $1 AND requester COLLATE "C" < $2
        AND revoked_at IS NULL AND expires_at > $3"""
_REVOKE = """
    UPDATE credentials SET revoked_at = $1, revoke_reason = $2
    WHERE jti = ANY($3::text[]) AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""


async def _live_credentials(tx: PgWriteTx, pattern: WorkloadPattern, at: dt.datetime) -> list[str]:
    if pattern.kind is PatternKind.EXACT:
        rows = await tx.conn.fetch(_LIVE_EXACT, pattern.base, at)
    else:
        rows = await tx.conn.fetch(_LIVE_UNDER, pattern.base + "/", pattern.base + "0", at)
    return [row["jti"] for row in rows if pattern.matches(row["requester"])]


class PostgresBans:
    def __init__(self, writer: PgBatchWriter, reader: PgReader) -> None:
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
        reason = banned_reason(ban)

        async def run(tx: PgWriteTx) -> tuple[list[CredentialRecord], RevocationEvent | None]:
            inserted = await tx.conn.execute(
                _INSERT_BAN, ban.pattern, ban.banned_at, ban.banned_by, ban.reason
            )
            if inserted == "INSERT 0 0":
                raise Conflict(f"{ban.pattern} is already banned; unban it first to ban it again")
            jtis = await _live_credentials(tx, pattern, ban.banned_at)
            rows = await tx.conn.fetch(_REVOKE, ban.banned_at, reason, jtis) if jtis else []
            return await complete_revocation(
                tx,
                (codec.credential_from_row(row) for row in rows),
                at=ban.banned_at,
                reason=reason,
                audit=audit,
                event=event,
                cascade=cascade,
            )

        return await self._writer.submit(run)

    async def unban(self, *, pattern: str, audit: AuditEntry) -> BanRecord:
        async def run(tx: PgWriteTx) -> BanRecord:
            row = await tx.conn.fetchrow(_DELETE_BAN, pattern)
            if row is None:
                raise NotFound(f"{pattern} is not banned (give the pattern exactly as banned)")
            await tx.append_audit(audit)
            return codec.ban_from_row(row)

        return await self._writer.submit(run)

    async def list_bans(self) -> list[BanRecord]:
        return [codec.ban_from_row(row) for row in await self._reader.fetch(_LIST_BANS)]
