"""Delegation on PostgreSQL: revoke every live descendant of the credentials a revocation revoked
(one recursive query over parent_jti), and refuse a child of a revoked or unknown parent; the
twin of sqlite_cascade (complete_revocation too).

Runs inside the revocation's (or issuance's) batch transaction, which holds the write lock of
every replica (postgres_writer): a child's insert and its parent's revocation cannot interleave.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from taskpass.server.store.cascade import (
    CascadeEvent,
    delegated_events,
    descendant_reason,
    oldest_first,
    parents_first,
    refused_parent,
    with_descendants,
)
from taskpass.server.store.postgres_codec import codec
from taskpass.server.store.postgres_writer import PgWriteTx
from taskpass.server.store.records import (
    AuditEntry,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
)

# The walk goes through revoked and expired nodes too, so no live descendant is missed whatever
# became of the credentials between it and the root; only live ones are revoked.
_REVOKE_DESCENDANTS = """
    WITH RECURSIVE tree(jti, depth) AS (
        SELECT jti, 1 FROM credentials WHERE parent_jti = ANY($1::text[])
        UNION ALL
        SELECT c.jti, tree.depth + 1 FROM credentials AS c JOIN tree ON c.parent_jti = tree.jti
        WHERE tree.depth < 10000  -- a chain is never this deep: only a corrupt cycle could be
    )
    UPDATE credentials AS c SET revoked_at = $2, revoke_reason = $3
    FROM tree
    WHERE c.jti = tree.jti AND c.revoked_at IS NULL AND c.expires_at > $2
    RETURNING tree.depth, c.jti, c.requester, c.task_id, c.audience, c.scopes, c.issued_at,
        c.expires_at, c.policy_version, c.kid, c.cert_thumbprint, c.approval_id, c.parent_jti,
        c.revoked_at, c.revoke_reason"""
_PARENT_STATE = "SELECT revoked_at FROM credentials WHERE jti = $1"


async def revoke_descendants(
    tx: PgWriteTx, roots: Sequence[str], *, at: dt.datetime, reason: str
) -> list[CredentialRecord]:
    """Revoke the live descendants of `roots` (jtis); returns them, parents first."""
    if not roots:
        return []
    rows = await tx.conn.fetch(_REVOKE_DESCENDANTS, list(roots), at, descendant_reason(reason))
    depths = {row["jti"]: row["depth"] for row in rows}
    return parents_first((codec.credential_from_row(row[1:]) for row in rows), depths)


async def check_parent(tx: PgWriteTx, parent_jti: str) -> None:
    """PermissionDenied unless the parent credential is recorded and not revoked."""
    row = await tx.conn.fetchrow(_PARENT_STATE, parent_jti)
    refused = refused_parent(
        recorded=row is not None, revoked=row is not None and row["revoked_at"] is not None
    )
    if refused is not None:
        raise refused


async def complete_revocation(
    tx: PgWriteTx,
    revoked: Iterable[CredentialRecord],
    *,
    at: dt.datetime,
    reason: str,
    audit: AuditEntry,
    event: NewRevocation | None,
    cascade: CascadeEvent | None,
) -> tuple[list[CredentialRecord], RevocationEvent | None]:
    """sqlite_cascade.complete_revocation, on PostgreSQL."""
    targets = oldest_first(revoked)
    roots = [c.jti for c in targets]
    descendants = await revoke_descendants(tx, roots, at=at, reason=reason)
    await tx.append_audit(with_descendants(audit, descendants))
    stored = None if event is None else await tx.append_event(event.covering(targets))
    for new in delegated_events([*targets, *descendants], cascade):
        await tx.append_event(new)
    return [*targets, *descendants], stored
