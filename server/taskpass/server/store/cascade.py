"""What every backend does alike when a revocation takes delegated credentials with it.

A delegated credential (one with a `parent_jti`) lives only while its parent does: revoking a
credential, a task or an identity also revokes every live descendant, at any depth, in the same
transaction (the recursive query is each backend's own: sqlite_cascade, postgres_cascade).

Each delegated credential revoked, a descendant or a direct target, also gets its own credential
event: its `sub` is the principal the chain acts for, not its holder, so a relying party can only
match it by jti. The events are signed by the caller's `CascadeEvent`; the audit
record of the revocation names the descendants it took.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from taskpass.server.errors import PermissionDenied
from taskpass.server.store.records import AuditEntry, CredentialRecord, NewRevocation

CascadeEvent = Callable[[CredentialRecord], NewRevocation]
"""Builds the event of one delegated credential a revocation revokes (as now stored), signed by
the caller. Called inside the write transaction, maybe on the writer's thread and maybe more than
once (a batch can run again): it may compute and sign, never await, do I/O or block."""


def descendant_reason(reason: str) -> str:
    """The revoke_reason stored on a descendant revoked because an ancestor was."""
    return f"delegation chain revoked: {reason}" if reason else "delegation chain revoked"


def with_descendants(audit: AuditEntry, descendants: Sequence[CredentialRecord]) -> AuditEntry:
    """The revocation's audit record, naming each descendant it revoked and its parent."""
    if not descendants:
        return audit
    cascade = [
        {"jti": c.jti, "parent_jti": c.parent_jti, "holder": c.requester} for c in descendants
    ]
    return dataclasses.replace(audit, payload={**audit.payload, "cascade": cascade})


def delegated_events(
    revoked: Iterable[CredentialRecord], event: CascadeEvent | None, *, skip: str | None = None
) -> list[NewRevocation]:
    """One event per delegated credential in `revoked` (but `skip`, which has its own)."""
    if event is None:
        return []
    return [event(c) for c in revoked if c.parent_jti is not None and c.jti != skip]


def parents_first(
    records: Iterable[CredentialRecord], depths: dict[str, int]
) -> list[CredentialRecord]:
    """Descendants in the order a reader expects: each level below the last, oldest first."""
    return sorted(records, key=lambda c: (depths[c.jti], c.issued_at, c.jti))


def oldest_first(revoked: Iterable[CredentialRecord]) -> list[CredentialRecord]:
    """Credentials a revocation revoked, in the order it returns them: oldest issued first."""
    return sorted(revoked, key=lambda c: (c.issued_at, c.jti))


def refused_parent(*, recorded: bool, revoked: bool) -> PermissionDenied | None:
    """Why an issuance may not delegate from its parent credential, or None when it may."""
    if not recorded:
        return PermissionDenied("the parent credential is unknown to this server")
    if revoked:
        return PermissionDenied(
            "the parent credential is revoked: delegation needs a live parent credential"
        )
    return None
