"""The store interface, split by aggregate. Backends: sqlite.py (embedded), postgres.py (replicas).

Rules every backend keeps:
- A write method returns only once its changes are durable (committed, fsynced).
- A state change and its audit record and revocation event are written in one transaction:
  all of them or none.
- Audit and revocation sequence numbers are gap-free in commit order: a reader that has seen N
  never later finds a record below N it had not seen.
- Errors are taskpass errors (Conflict, NotFound, Unavailable, ...), never driver exceptions.
- A delegated credential (`parent_jti` set) lives only while its parent does: every revocation
  (of a credential, a task, an identity) also revokes each live descendant, at any depth, in the
  same transaction, and gives each delegated credential it revokes its own event (see
  cascade.py); an issuance whose parent is unknown or revoked is refused in its transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from taskpass.server.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from taskpass.server.store.cascade import CascadeEvent
from taskpass.server.store.records import (
    ApprovalRecord,
    ApprovalState,
    AuditEntry,
    AuditRecord,
    BanRecord,
    CredentialRecord,
    NewRevocation,
    PublishedKey,
    RevocationEvent,
    RevocationSnapshot,
    TaskRecord,
)

MAX_PAGE = 1000
"""The most records one read_after / read call returns; a larger limit is InvalidRequest."""


def check_page(*, limit: int, after: int = 0) -> None:
    """InvalidRequest for a page no reader serves: `after` (a seq) below 0, `limit` outside
    1..MAX_PAGE."""
    if after < 0:
        raise InvalidRequest("seq", "must not be negative")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest("limit", f"must be between 1 and {MAX_PAGE}")


def reused_task(task: TaskRecord, *, digest: str, completed_at: object) -> Conflict | None:
    """Why an issuance may not add to the task already stored under its task_id (with this
    `digest` and `completed_at`), or None when it may."""
    if digest != task.digest:
        return Conflict(
            f"task_id already used for a different task ({task.task_id!r}): "
            "use a new task_id for a new task"
        )
    if completed_at is not None:
        return Conflict(
            f"task already completed ({task.task_id!r}): start a new task with a new task_id"
        )
    return None


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


def different_key(kid: str) -> Conflict:
    return Conflict(
        f"key {kid} is already published with a different JWK: a kid is the key's thumbprint, "
        "so the publishing replica's key files are corrupt"
    )


def keys_oldest_first(keys: Iterable[PublishedKey]) -> list[PublishedKey]:
    """Keys in list_published's order: oldest publication first."""
    return sorted(keys, key=lambda key: (key.published_at, key.kid))


class CredentialStore(Protocol):
    """Tasks and the credentials issued for them."""

    async def record_issuance(
        self, *, task: TaskRecord, credential: CredentialRecord, audit: AuditEntry
    ) -> None:
        """Store the task (if new), the credential and its audit record in one transaction.

        Raises Conflict if the task_id was used by this requester for a task with another
        digest, if the task is already completed, or if the jti is already recorded;
        PermissionDenied if the credential's parent_jti is unknown or revoked.
        """
        ...

    async def get_credential(self, jti: str) -> CredentialRecord | None: ...

    async def get_task(self, requester: str, task_id: str) -> TaskRecord | None: ...

    async def complete_task(
        self,
        *,
        requester: str,
        task_id: str,
        at: dt.datetime,
        reason: str = "task completed",
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[list[CredentialRecord], RevocationEvent | None]:
        """Mark the task completed and revoke its unrevoked credentials, in one transaction
        with the audit record and the revocation event (if given), and their live descendants
        with an event each from `cascade` (if given).

        The event's expires_at is widened to the latest expiry among the credentials revoked,
        so it stays in force as long as any of them could still be presented, even one issued
        after the caller built the event. Returns the revoked credentials (as now stored; the
        task's, then its descendants) and the stored event. Raises NotFound for an unknown task,
        Conflict if already completed.
        """
        ...

    async def revoke_credential(
        self,
        *,
        jti: str,
        at: dt.datetime,
        reason: str,
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[CredentialRecord, RevocationEvent | None]:
        """Revoke one credential with its audit record and event, in one transaction, and its
        live descendants with an event each from `cascade` (if given).

        The event's expires_at is widened to the credential's expiry. Returns the credential
        (descendants reach the caller through `cascade`). Raises NotFound for an unknown jti,
        Conflict if it is already revoked.
        """
        ...


class RevocationLog(Protocol):
    """The revocation event log, read by the Watch stream.

    Events are appended only by the write methods of other aggregates (complete_task,
    revoke_credential, ...), in the transaction of the state change they announce.
    """

    async def read_after(self, seq: int, *, limit: int) -> list[RevocationEvent]:
        """Events with a seq above `seq`, oldest first, at most `limit` (1..MAX_PAGE)."""
        ...

    async def in_force(self, now: dt.datetime) -> RevocationSnapshot:
        """Events whose expires_at is after `now`, with the current seq, read atomically."""
        ...

    async def current_seq(self) -> int:
        """The seq of the newest committed event, 0 when there is none."""
        ...


def banned(workload_id: str, pattern: str) -> PermissionDenied:
    """The refusal of a banned identity (the same words as revocation/bans.py's)."""
    covering = "" if pattern == workload_id else f" (by the ban on {pattern})"
    return PermissionDenied(
        f"identity {workload_id} is banned by security{covering}; ask the security team"
    )


def approver_banned(approval_id: str, approver: str) -> PermissionDenied:
    return PermissionDenied(
        f"approval {approval_id} was given by {approver}, who has been banned since; a new "
        "approval needs a new task_id",
        details={"approval_id": approval_id},
    )


PendingCursor = tuple[dt.datetime, str]
"""Where a page of pending approvals ended: the last one's created_at and approval_id."""


def too_many_pending(requester: str, count: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"{requester} has {count} approval requests pending, the most it may have: wait for "
        "approvers to decide them or for them to expire"
    )


class ApprovalStore(Protocol):
    """Approval requests and their decisions. Every state change is written with its audit
    record in one transaction; a decision or a consumption is conditional on the stored state,
    so two concurrent deciders (or two exchanges racing for one grant) cannot both succeed."""

    async def create_or_reuse(
        self,
        approval: ApprovalRecord,
        *,
        audit: AuditEntry,
        now: dt.datetime,
        max_pending: int = MAX_PAGE,
    ) -> tuple[ApprovalRecord, bool]:
        """Store `approval` with its audit record, unless one is in force for the same requester
        and digest: a live one (pending or approved, unexpired at `now`) asked under the same
        parent credential (`parent_jti`, None for none), or a denial under any parent (final for
        that task). Then return that one and write nothing. Returns (the approval in force,
        whether it was created). A new one is refused (ResourceExhausted) while the requester
        already has `max_pending` live pending requests: one workload cannot bury the approvers'
        queue."""
        ...

    async def get(self, approval_id: str) -> ApprovalRecord | None: ...

    async def latest_for(self, requester: str, digest: str) -> ApprovalRecord | None:
        """The newest approval for this requester and task digest, in any state."""
        ...

    async def list_pending(
        self, now: dt.datetime, *, limit: int, after: PendingCursor | None = None
    ) -> list[ApprovalRecord]:
        """Pending approvals not expired at `now`, oldest first (by created_at, then id), at
        most `limit` (1..MAX_PAGE); with `after`, those after that one's (created_at, id)."""
        ...

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
        """Approve or deny a pending, unexpired approval with its audit record; an approval's
        grant then lapses at `expires_at`. Raises NotFound for an unknown id, Conflict when it
        is no longer pending or has expired."""
        ...

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
        """Use an approved, unexpired grant once, with its audit record. Raises NotFound for an
        unknown id, PermissionDenied when requester, digest or parent credential (`parent_jti`,
        None for an exchange without one) differ from the binding, Conflict when it is not
        approved, already used, or expired."""
        ...


class BanStore(Protocol):
    """Identity bans: what an exchange must refuse, and the revocation of what was issued."""

    async def ban(
        self,
        *,
        ban: BanRecord,
        audit: AuditEntry,
        event: NewRevocation | None,
        cascade: CascadeEvent | None = None,
    ) -> tuple[list[CredentialRecord], RevocationEvent | None]:
        """Record the ban and revoke every live credential (unrevoked, unexpired at
        `ban.banned_at`) of the identities `ban.pattern` matches, and their live descendants
        (an event each from `cascade`), in one transaction with the audit record and the event
        (widened to the latest expiry revoked). Returns the revoked credentials, oldest first
        (the identities', then descendants), and the stored event. Raises Conflict if the
        pattern is already banned, InvalidRequest if it is not a valid pattern.
        """
        ...

    async def unban(self, *, pattern: str, audit: AuditEntry) -> BanRecord:
        """Lift the ban on exactly `pattern`, with its audit record; returns the lifted ban.
        What the ban revoked stays revoked. Raises NotFound if the pattern is not banned."""
        ...

    async def list_bans(self) -> list[BanRecord]:
        """Every ban in force, oldest first."""
        ...


class KeyStore(Protocol):
    """The shared JWKS: each replica's public signing keys, so any replica verifies any token."""

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        """Publish `key`, or, when its kid is already published, keep it published at least
        until `key.publish_until` (a publication is never shortened: tokens may rely on it).
        `audit` is written, in the same transaction, only when the kid is new. Returns the key
        as stored. Raises Conflict if the kid is published with a different JWK."""
        ...

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        """The keys published until after `now`, oldest publication first."""
        ...


class KeyTable(KeyStore, Protocol):
    """The shared JWKS as the store keeps it: KeyStore, and the upkeep of its table."""

    async def remove_ended(
        self, now: dt.datetime, *, audit: Callable[[PublishedKey], AuditEntry]
    ) -> list[PublishedKey]:
        """Delete every key whose publication has ended at `now` (exactly those that
        list_published(now) leaves out), with an audit record `audit(key)` for each, in one
        transaction. Returns the deleted keys, oldest publication first."""
        ...


class AuditLog(Protocol):
    """The append-only, hash-chained audit log (see audit_chain)."""

    async def append(self, entry: AuditEntry) -> AuditRecord:
        """Append one entry, durable when this returns; the record carries its seq and hash."""
        ...

    async def read(self, *, after_seq: int = 0, limit: int) -> list[AuditRecord]:
        """Records with a seq above `after_seq`, oldest first, at most `limit` (1..MAX_PAGE)."""
        ...


class Store(Protocol):
    """One backend, opened once per process, used as `async with store:` or open()/close()."""

    @property
    def credentials(self) -> CredentialStore: ...

    @property
    def revocations(self) -> RevocationLog: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def approvals(self) -> ApprovalStore: ...

    @property
    def bans(self) -> BanStore: ...

    @property
    def keys(self) -> KeyTable: ...

    async def open(self) -> None:
        """Connect and bring the schema up to date (see migrate)."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then disconnect. Calls after this raise Unavailable."""
        ...

    async def migrate(self) -> int:
        """Apply pending schema migrations and return the schema version now in place.

        Safe to run on an open or an unopened store and to run twice; refuses (ConfigError) a
        database whose schema is newer than this code.
        """
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class EventNotifier(Protocol):
    """Optional: a store that tells this process when another one committed events.

    PostgreSQL does (LISTEN/NOTIFY), for replicas; SQLite need not, having one writer process.
    Wire it as `if isinstance(store, EventNotifier): spawn(store.listen(hub.notify))`.
    """

    async def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after revocation events (or approval decisions) commit, on any
        replica, and once whenever the notification connection is (re)established, since
        changes may have committed while it was down: the consumer re-reads the table then,
        and so misses nothing. Runs until the store closes or the task is cancelled."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreChange:
    """What a notification says another replica committed (see ChangeNotifier)."""

    everything: bool = False
    """Anything may have changed: the notification connection was (re)made, so commits made
    meanwhile were never announced, or the notification was not understood. Re-read it all."""
    events: bool = False
    """Revocation events were appended."""
    approvals: frozenset[str] = frozenset()
    """Approvals created, decided or used, by id."""
    keys: bool = False
    """A signing key was published or its publication extended."""


@runtime_checkable
class ChangeNotifier(Protocol):
    """Optional: a store that says what another replica committed, not only that it did.

    PostgreSQL does (the NOTIFY payload names it). Wire it instead of EventNotifier.listen when
    the store has it: `spawn(store.follow(dispatcher))`.
    """

    async def follow(self, callback: Callable[[StoreChange], None]) -> None:
        """Call `callback(change)` for every change committed by any replica (this one too),
        and `callback(StoreChange(everything=True))` whenever the notification connection is
        (re)established. Runs until the store closes or the task is cancelled."""
        ...
