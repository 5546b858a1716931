"""Delegation on SQLite: revoke every live descendant of the credentials a revocation revoked
(one recursive query over parent_jti), and refuse a child of a revoked or unknown parent.
complete_revocation is what a task's or an identity's revocation does after its own statement.

Runs on the writer thread inside the revocation's (or issuance's) transaction; see cascade.py.
"""

from __future__ import annotations

import json
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
from taskpass.server.store.records import (
    AuditEntry,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
)
from taskpass.server.store.sqlite_codec import codec
from taskpass.server.store.sqlite_writer import WriteTx

# The walk goes through revoked and expired nodes too, so no live descendant is missed whatever
# became of the credentials between it and the root; only live ones are revoked.
_LIVE_DESCENDANTS = """
    WITH RECURSIVE tree(jti, depth) AS (
        SELECT jti, 1 FROM credentials WHERE parent_jti IN (SELECT value FROM json_each(?))
        UNION ALL
        SELECT c.jti, tree.depth + 1 FROM credentials AS c JOIN tree ON c.parent_jti = tree.jti
        WHERE tree.depth < 10000  -- a chain is never this deep: only a corrupt cycle could be
    )
    SELECT tree.jti, tree.depth FROM tree JOIN credentials AS c ON c.jti = tree.jti
    WHERE c.revoked_at IS NULL AND c.expires_at > ?"""
_REVOKE = """
    UPDATE credentials SET revoked_at = ?, revoke_reason = ?
    WHERE jti IN (SELECT value FROM json_each(?)) AND revoked_at IS NULL
    RETURNING jti, requester, task_id, audience, scopes, issued_at, expires_at,
        policy_version, kid, cert_thumbprint, approval_id, parent_jti, revoked_at, revoke_reason"""
_PARENT_STATE = "SELECT revoked_at FROM credentials WHERE jti = ?"


def revoke_descendants(
    tx: WriteTx, roots: Sequence[str], *, at_db: int, reason: str
) -> list[CredentialRecord]:
    """Revoke the live descendants of `roots` (jtis); returns them, parents first."""
    if not roots:
        return []
    depths = dict(tx.conn.execute(_LIVE_DESCENDANTS, (json.dumps(list(roots)), at_db)).fetchall())
    if not depths:
        return []
    rows = tx.conn.execute(
        _REVOKE, (at_db, descendant_reason(reason), json.dumps(list(depths)))
    ).fetchall()
    return parents_first((codec.credential_from_row(row) for row in rows), depths)


def check_parent(tx: WriteTx, parent_jti: str) -> None:
    """PermissionDenied unless the parent credential is recorded and not revoked."""
    rows = tx.conn.execute(_PARENT_STATE, (parent_jti,)).fetchall()
    refused = refused_parent(recorded=bool(rows), revoked=bool(rows) and rows[0][0] is not None)
    if refused is not None:
        raise refused


def complete_revocation(
    tx: WriteTx,
    revoked: Iterable[CredentialRecord],
    *,
    at_db: int,
    reason: str,
    audit: AuditEntry,
    event: NewRevocation | None,
    cascade: CascadeEvent | None,
) -> tuple[list[CredentialRecord], RevocationEvent | None]:
    """The rest of a revocation whose statement revoked `revoked` (a task's or an identity's
    credentials): their live descendants revoked too, the audit record naming them, `event`
    widened to cover `revoked`, and an event per delegated credential. Returns everything it
    revoked, oldest first then the descendants, and the stored event."""
    targets = oldest_first(revoked)
    roots = [c.jti for c in targets]
    descendants = revoke_descendants(tx, roots, at_db=at_db, reason=reason)
    tx.append_audit(with_descendants(audit, descendants))
    stored = None if event is None else tx.append_event(event.covering(targets))
    for new in delegated_events([*targets, *descendants], cascade):
        tx.append_event(new)
    return [*targets, *descendants], stored
