"""The shared JWKS table kept to what is published: each key renewal also deletes ended rows.

Every replica's SharedKeys (issuer/shared_jwks.py) publishes its own keys through a KeyStore:
before serving, every renew_interval (the lease renewal) and after a rotation. `RemovingEndedKeys`
is that KeyStore: after each publication it deletes the rows whose publication has ended, which
are exactly the rows list_published already leaves out (publish_until at or before now). So no
second rule decides what may go: publish_until is where the publishing replica applied its rule
(a lease for a key that signs, the expiry of its last token for a retired one), and a retired
key's row stays until every token it signed has expired. Without this, every rotation and every
replica started without its old key_dir left a row behind for ever.

Any replica removes any replica's ended rows (the rule does not depend on who published), each
with a `key_unshared` audit record, the mirror of the `key_shared` one. Removal is not announced
to the other replicas: what their JWKS lists does not change. A failed removal is logged and tried
again at the next renewal; it never fails the publication it follows.
"""

from __future__ import annotations

import datetime as dt
import logging

from taskpass.server.clock import Clock
from taskpass.server.errors import TaskpassError
from taskpass.server.issuer.shared_jwks import SERVER_ACTOR
from taskpass.server.store.base import KeyTable
from taskpass.server.store.records import AuditEntry, PublishedKey

log = logging.getLogger("taskpass.replication")

UNSHARED = "key_unshared"
"""The audit kind of a removed row: the key is in no replica's JWKS any more."""


class RemovingEndedKeys:
    """The KeyStore SharedKeys publishes through: `keys`, whose ended rows each publication
    (a renewal, every renew_interval) also removes. `replica` names this replica in the audit."""

    def __init__(self, keys: KeyTable, *, clock: Clock, replica: str) -> None:
        self._keys = keys
        self._clock = clock
        self._replica = replica

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        stored = await self._keys.publish(key, audit=audit)
        await self.remove_ended()
        return stored

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        return await self._keys.list_published(now)

    async def remove_ended(self) -> list[PublishedKey]:
        """Remove the rows whose publication has ended now; returns them ([] on a store error,
        which is logged: the next renewal tries again)."""
        now = self._clock.now()
        try:
            removed = await self._keys.remove_ended(now, audit=lambda key: self._audit(key, now))
        except TaskpassError as error:
            log.warning("taskpass: ended key publications could not be removed: %s", error.message)
            return []
        if removed:
            log.info(
                "taskpass: removed ended key publications: %s", ", ".join(k.kid for k in removed)
            )
        return removed

    def _audit(self, key: PublishedKey, now: dt.datetime) -> AuditEntry:
        return AuditEntry(
            kind=UNSHARED,
            actor=SERVER_ACTOR,
            at=now,
            payload={
                "kid": key.kid,
                "published_by": key.published_by,
                "publish_until": key.publish_until.isoformat(),
                "removed_by": self._replica,
            },
        )
