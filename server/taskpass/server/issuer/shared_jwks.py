"""The shared JWKS of replicas: this replica's public keys go into the store, the others' come out.

Every replica signs with its own key (its own key_dir), so a token or SET signed on replica A
must verify on B, and B's JWKS must list A's key:

- Before serving (so before its key signs anything) a replica publishes every key of its ring.
- It renews the publication of its keys every `renew_interval`, each time until `now + lease`.
  The lease covers the longest a token may live plus one renewal period, so a replica killed
  without warning leaves its key published as long as anything it signed may be presented,
  and the key then drops out of every JWKS on its own. A retired key is published at least
  until its high-water mark (every token it signed has expired); a publication is never
  shortened (see KeyStore.publish).
- It re-reads the others' keys when told ("keys" notification, `notify()`) and every
  `refresh_interval` (the safety poll), and makes the ring publish exactly those.
- Each publication also deletes the rows whose publication ended more than `REMOVAL_MARGIN`
  ago: rows list_published already leaves out, whoever published them (a replica gone for
  good, a key retired here or elsewhere whose last token has expired), each with a
  `key_unshared` audit record. The margin is for clocks: any replica deletes for all of them,
  and one whose clock runs ahead must not take a key out of the others' JWKS while their
  relying parties (with their own leeway) may still be shown tokens it signed. Without the
  deletion, every rotation, and every replica started without its old key_dir, would leave a
  row behind for ever. A failed removal is logged and tried again at the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.clock import Clock
from taskpass.server.errors import TaskpassError
from taskpass.server.issuer.keys import KeyRing, KeyState, SigningKey
from taskpass.server.issuer.rotation import OnChange
from taskpass.server.store.base import KeyTable
from taskpass.server.store.records import AuditEntry, PublishedKey
from taskpass.server.tasks.descriptor import MAX_TTL_SECONDS

log = logging.getLogger("taskpass.issuer")

SERVER_ACTOR = "taskpass-server"
UNSHARED = "key_unshared"
"""The audit kind of a removed row: the key is in no replica's JWKS any more."""
REMOVAL_MARGIN = dt.timedelta(minutes=5)
"""How long after its publication ended a row is deleted (clock skew between replicas, plus
relying parties' leeway)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SharingSettings:
    renew_interval: dt.timedelta = dt.timedelta(minutes=10)
    """How often this replica extends the publication of its own keys."""
    refresh_interval: dt.timedelta = dt.timedelta(seconds=30)
    """The safety re-read of the other replicas' keys when no notification came."""
    max_token_lifetime: dt.timedelta = dt.timedelta(seconds=MAX_TTL_SECONDS)
    """The longest anything this replica signs stays valid (a credential's longest TTL)."""

    def __post_init__(self) -> None:
        if min(self.renew_interval, self.refresh_interval) <= dt.timedelta(0):
            raise ValueError("renew_interval and refresh_interval must be positive")

    @property
    def lease(self) -> dt.timedelta:
        """How long one publication lasts: a token signed just before the next renewal is
        due, renewal late by as much again, still expires before the publication ends."""
        return self.max_token_lifetime + 2 * self.renew_interval


def replica_name(key_dir: Path) -> str:
    """Who published a key, for operators: this host and the replica's key directory."""
    return f"{socket.gethostname()}:{key_dir}"


class SharedKeys:
    def __init__(
        self,
        *,
        ring: KeyRing,
        store: KeyTable,
        clock: Clock,
        replica: str,
        settings: SharingSettings | None = None,
    ) -> None:
        self._ring = ring
        self._store = store
        self._clock = clock
        self._replica = replica
        self._settings = settings or SharingSettings()
        self._wake = asyncio.Event()
        self._last_published: frozenset[tuple[str, KeyState]] = frozenset()
        """This replica's keys (kid, state) as last published."""

    async def publish(self) -> list[PublishedKey]:
        """Publish (or renew) every key of this replica's ring, then remove the ended rows;
        returns this replica's keys as stored."""
        now = self._clock.now()
        own = self._own_keys()
        stored = []
        for key in self._ring.signing_keys():
            until = self._until(key, now)
            if until <= now:
                continue  # retired, and everything it signed has expired
            published = self._published(key, now, until)
            audit = _audit(key, self._replica, now, until)
            stored.append(await self._store.publish(published, audit=audit))
        self._last_published = own
        await self._remove_ended(now)
        return stored

    async def _remove_ended(self, now: dt.datetime) -> None:
        """Never fails the publication it follows: the next one tries again."""
        try:
            removed = await self._store.remove_ended(
                now - REMOVAL_MARGIN, audit=lambda key: _unshared_audit(key, self._replica, now)
            )
        except TaskpassError as error:
            log.warning("taskpass: ended key publications could not be removed: %s", error.message)
            return
        if removed:
            log.info(
                "taskpass: removed ended key publications: %s", ", ".join(k.kid for k in removed)
            )

    def _until(self, key: SigningKey, now: dt.datetime) -> dt.datetime:
        high_water = key.max_token_expiry
        if key.state is KeyState.RETIRED:  # signs nothing more: its high-water mark is enough
            return high_water or now
        lease_end = now + self._settings.lease
        return lease_end if high_water is None else max(lease_end, high_water)

    async def refresh(self) -> None:
        """Make the ring publish exactly the other replicas' keys the store lists now."""
        listed = await self._store.list_published(self._clock.now())
        rejected = self._ring.set_published([key.jwk for key in listed])
        if rejected:
            log.warning(
                "taskpass: published keys left out of the JWKS (not a safe public signing key): %s",
                ", ".join(rejected),
            )

    def publishing(self, report: OnChange) -> OnChange:
        """`report` for a rotation step, then this replica's keys published again: a key
        rotated in here is in every replica's JWKS before it signs (rotation's grace)."""

        async def changed(what: str, details: dict[str, object]) -> None:
            await report(what, details)
            await self.publish()

        return changed

    def notify(self) -> None:
        """A key was published (by another replica, or rotated here): update both ways soon."""
        self._wake.set()

    async def start(self) -> None:
        """Before serving: this replica's keys are published, the others' are in the JWKS.
        Failing here stops the server: a key nobody else can verify must not sign."""
        await self.publish()
        await self.refresh()

    async def run(self) -> None:
        """Renew and refresh for the server's lifetime (a store error is retried next round).
        A change of this replica's own keys (a rotation) is published at the next wake-up:
        call notify() when rotating, or give the new key a grace longer than refresh_interval."""
        settings = self._settings
        next_renewal = self._clock.now() + settings.renew_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.refresh_interval.total_seconds())
            self._wake.clear()  # after waking: a notify() during the work below is not lost
            try:
                if self._own_keys() != self._last_published or self._clock.now() >= next_renewal:
                    await self.publish()
                    next_renewal = self._clock.now() + settings.renew_interval
                await self.refresh()
            except TaskpassError as error:
                log.warning("taskpass: the shared JWKS could not be updated: %s", error.message)

    def _own_keys(self) -> frozenset[tuple[str, KeyState]]:
        return frozenset((key.kid, key.state) for key in self._ring.signing_keys())

    def _published(self, key: SigningKey, now: dt.datetime, until: dt.datetime) -> PublishedKey:
        return PublishedKey(
            kid=key.kid,
            jwk=key.public_jwk(),
            published_by=self._replica,
            published_at=now,
            publish_until=until,
        )


def _audit(key: SigningKey, replica: str, now: dt.datetime, until: dt.datetime) -> AuditEntry:
    """Written by the store only when the kid is new: a new key any token may be signed with."""
    return AuditEntry(
        kind="key_shared",
        actor=SERVER_ACTOR,
        at=now,
        payload={
            "kid": key.kid,
            "alg": key.alg,
            "state": key.state.value,
            "replica": replica,
            "publish_until": until.isoformat(),
        },
    )


def _unshared_audit(key: PublishedKey, replica: str, now: dt.datetime) -> AuditEntry:
    """The mirror of key_shared: `replica` removed the row of a key whose publication ended."""
    return AuditEntry(
        kind=UNSHARED,
        actor=SERVER_ACTOR,
        at=now,
        payload={
            "kid": key.kid,
            "published_by": key.published_by,
            "publish_until": key.publish_until.isoformat(),
            "removed_by": replica,
        },
    )
