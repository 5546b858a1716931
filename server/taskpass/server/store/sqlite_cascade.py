"""Delegation on SQLite: revoke every live descendant of the credentials a revocation revoked
(one recursive query over parent_jti), and refuse a child of a revoked or unknown parent.

Runs on the writer thread inside the revocation's (or issuance's) transaction; see cascade.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from taskpass.server.errors import PermissionDenied
from taskpass.server.store.cascade import descendant_reason, parents_first
from taskpass.server.store.records import CredentialRecord
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
    if not rows:
        raise PermissionDenied("the parent credential is unknown to this server")
    if rows[0][0] is not None:
        raise PermissionDenied(
            "the parent credential is revoked: delegation needs a live parent credential"
        )
