"""Revoking: one credential, a whole task, or an identity (a ban); and what the exchange asks.

Each revocation is one store transaction holding the state change, its audit record and its
signed event; only then is the hub told, so an event is durable before any subscriber sees it.
The same transaction revokes the live delegated descendants of whatever it revokes, each with its
own event (see cascade.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from taskpass.server.clock import Clock
from taskpass.server.errors import Conflict, InvalidRequest, NotFound
from taskpass.server.identity.workload import Workload
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.revocation.bans import BanList
from taskpass.server.revocation.cascade import CascadeSigner
from taskpass.server.revocation.events import EventSigner, Initiator
from taskpass.server.revocation.hub import RevocationHub
from taskpass.server.store.base import Store
from taskpass.server.store.records import (
    AuditEntry,
    BanRecord,
    CredentialRecord,
    NewRevocation,
    RevocationEvent,
)

log = logging.getLogger("taskpass.revocation")

MAX_REASON = 512
RACED_A_BAN = "issued while the identity was being banned"


@dataclass(frozen=True, slots=True)
class Revoked:
    """What one revocation revoked (oldest first) and its stored event."""

    credentials: tuple[CredentialRecord, ...]
    event: RevocationEvent | None


@dataclass(frozen=True, slots=True)
class Banned:
    ban: BanRecord
    credentials: tuple[CredentialRecord, ...]
    event: RevocationEvent | None


def _actor(workload: Workload) -> dict[str, Any]:
    return {
        "id": workload.id,
        "method": workload.method.value,
        "cert_sha256": workload.cert_thumbprint,
    }


def _reason(reason: str) -> str:
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidRequest("reason", f"must be at most {MAX_REASON} printable characters")
    return reason


def _pattern(pattern: str) -> str:
    if not pattern:
        raise InvalidRequest(
            "identity", "is required: a workload ID, or a pattern ending /* or /**"
        )
    try:
        parsed = WorkloadPattern.parse(pattern)
    except ValueError as exc:
        raise InvalidRequest("identity", str(exc)) from None
    if parsed.kind is PatternKind.ANY:
        raise InvalidRequest("identity", "'*' would ban every workload; name an ID or a pattern")
    return pattern


class RevocationService:
    def __init__(
        self, *, store: Store, signer: EventSigner, hub: RevocationHub, bans: BanList, clock: Clock
    ) -> None:
        self._store = store
        self._signer = signer
        self._hub = hub
        self._bans = bans
        self._clock = clock

    @property
    def hub(self) -> RevocationHub:
        return self._hub

    @property
    def bans(self) -> BanList:
        return self._bans

    # -- admin revocations ---------------------------------------------------------------------

    async def revoke_credential(self, actor: Workload, jti: str, *, reason: str) -> Revoked:
        if not jti:
            raise InvalidRequest("jti", "is required")
        reason = _reason(reason) or "revoked by security"
        record = await self._store.credentials.get_credential(jti)
        if record is None:
            raise NotFound(f"no credential with jti {jti!r}")
        event = self._signer.credential(record, reason=reason, initiator=Initiator.ADMIN)
        cascade = self.cascade(at=event.at, initiator=Initiator.ADMIN)
        revoked, stored = await self._store.credentials.revoke_credential(
            jti=jti,
            at=event.at,
            reason=reason,
            audit=self._audit("revocation", actor, event.at, {"jti": jti, "reason": reason}),
            event=event,
            cascade=cascade,
        )
        self.published(stored, cascade)
        return Revoked((revoked, *cascade.credentials), stored)

    async def revoke_task(
        self, actor: Workload, *, requester: str, task_id: str, reason: str
    ) -> Revoked:
        """End a workload's task (the caller's own when `requester` is empty): every credential
        of it is revoked, as CompleteTask does."""
        requester = requester or actor.id
        if not task_id:
            raise InvalidRequest("task.task_id", "is required")
        reason = _reason(reason) or "task revoked by security"
        at = self._clock.now()
        target = {"requester": requester, "task_id": task_id, "reason": reason}
        cascade = self.cascade(at=at, initiator=Initiator.ADMIN)
        revoked, stored = await self._store.credentials.complete_task(
            requester=requester,
            task_id=task_id,
            at=at,
            reason=reason,
            audit=self._audit("revocation", actor, at, target),
            event=self._signer.task(
                requester=requester,
                task_id=task_id,
                at=at,
                reason=reason,
                initiator=Initiator.ADMIN,
            ),
            cascade=cascade,
        )
        self.published(stored, cascade)
        return Revoked(tuple(revoked), stored)

    async def ban(self, actor: Workload, pattern: str, *, reason: str) -> Banned:
        """Revoke everything the identity holds and refuse its calls until unbanned."""
        pattern = _pattern(pattern)
        if WorkloadPattern.parse(pattern).matches(actor.id):
            # A banned identity may call nothing (api/authz.py), unban included: an admin who
            # banned itself could not undo it, and banning every admin would lock security out.
            raise InvalidRequest(
                "identity",
                f"{pattern} covers your own identity ({actor.id}); a ban on it must come from "
                "another admin",
            )
        reason = _reason(reason) or "banned by security"
        at = self._clock.now()
        ban = BanRecord(pattern=pattern, banned_at=at, banned_by=actor.id, reason=reason)
        already_listed = pattern in self._bans.patterns
        self._bans.add(ban)  # refuse exchanges from now on, before the write lands
        cascade = self.cascade(at=at, initiator=Initiator.ADMIN)
        try:
            revoked, stored = await self._store.bans.ban(
                ban=ban,
                audit=self._audit("ban", actor, at, {"identity": pattern, "reason": reason}),
                event=self._signer.identity(pattern=pattern, at=at, reason=reason),
                cascade=cascade,
            )
        except Conflict:
            raise  # banned already (maybe by another replica): it stays banned
        except BaseException:
            if not already_listed:
                self._bans.remove(pattern)
            raise
        # Again now that it is stored: a refresh that read the table before this commit and
        # ended after it would otherwise have replaced the list without this ban.
        self._bans.add(ban)
        self.published(stored, cascade)
        return Banned(ban, tuple(revoked), stored)

    async def unban(self, actor: Workload, pattern: str, *, reason: str) -> BanRecord:
        pattern = _pattern(pattern)
        reason = _reason(reason)
        at = self._clock.now()
        lifted = await self._store.bans.unban(
            pattern=pattern,
            audit=self._audit("unban", actor, at, {"identity": pattern, "reason": reason}),
        )
        self._bans.remove(pattern)
        return lifted

    async def list_bans(self) -> list[BanRecord]:
        return await self._store.bans.list_bans()

    # -- what the task lifecycle asks ----------------------------------------------------------

    async def admit(self, workload: Workload) -> None:
        """Refuse (PermissionDenied, audited) an exchange by a banned identity."""
        ban = self._bans.banned(workload.id)
        if ban is None:
            return
        at = self._clock.now()
        await self._store.audit.append(
            self._audit("exchange_refused", workload, at, {"banned_by_pattern": ban.pattern})
        )
        self._bans.check(workload.id)

    async def recheck_issued(self, workload: Workload, credential: CredentialRecord) -> None:
        """After an issuance is stored: if a ban landed meanwhile, take the credential back.

        A ban is in the ban list before its transaction commits, so an issuance stored after
        that commit is always caught here; one stored before it is revoked by the ban itself.
        """
        if self._bans.banned(workload.id) is None:
            return
        event = self._signer.credential(credential, reason=RACED_A_BAN, initiator=Initiator.SYSTEM)
        cascade = self.cascade(at=event.at, initiator=Initiator.SYSTEM)
        try:
            _, stored = await self._store.credentials.revoke_credential(
                jti=credential.jti,
                at=event.at,
                reason=RACED_A_BAN,
                audit=self._audit("revocation", workload, event.at, {"jti": credential.jti}),
                event=event,
                cascade=cascade,
            )
        except Conflict:
            pass  # the ban's own transaction revoked it
        else:
            self.published(stored, cascade)
        self._bans.check(workload.id)

    def task_completed(self, *, requester: str, task_id: str, at: dt.datetime) -> NewRevocation:
        """The event for CompleteTask, to be stored with the completion."""
        return self._signer.task(
            requester=requester,
            task_id=task_id,
            at=at,
            reason="task completed",
            initiator=Initiator.USER,
        )

    def cascade(self, *, at: dt.datetime, initiator: Initiator = Initiator.USER) -> CascadeSigner:
        """The store's CascadeEvent for a revocation made at `at` (here, or by CompleteTask)."""
        return CascadeSigner(self._signer, at=at, initiator=initiator)

    def published(
        self, event: RevocationEvent | None, cascade: CascadeSigner | None = None
    ) -> None:
        """Events were stored: keep their keys published while they are in force, wake the hub."""
        if cascade is not None:
            cascade.published()
        if event is None and (cascade is None or not cascade.credentials):
            return
        if event is not None:
            self._signer.keep_published(event)
        self._hub.notify()

    async def keep_bans_fresh(self, interval: dt.timedelta) -> None:
        """Re-read the bans every `interval`: bans made through another replica arrive."""
        while True:
            await asyncio.sleep(interval.total_seconds())
            try:
                await self._bans.refresh(self._store.bans)
            except Exception as exc:  # a store outage must not end the loop
                log.warning("could not refresh the ban list: %s", exc)

    def _audit(
        self, kind: str, actor: Workload, at: dt.datetime, payload: dict[str, Any]
    ) -> AuditEntry:
        return AuditEntry(
            kind=kind, actor=actor.id, at=at, payload={"by": _actor(actor), **payload}
        )
