"""Signing-key rotation: publish the next key first, sign with it only after a grace period,
and keep a retired key published until every token it signed has expired.

The grace period lets every relying party refresh its cached JWKS (the HTTP JWKS says
`max-age=60`) before the first token signed by the new key reaches it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from taskpass.server.clock import Clock
from taskpass.server.issuer.keys import KeyRing, SigningKey

log = logging.getLogger("taskpass.issuer.rotation")

#: Called after every change of the ring, with a short description (for the audit log).
OnChange = Callable[[str, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RotationStarted:
    next_kid: str
    signs_from: dt.datetime


class KeyRotation:
    def __init__(
        self,
        *,
        keys: KeyRing,
        clock: Clock,
        publish_grace: dt.timedelta,
        on_change: OnChange | None = None,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._grace = publish_grace
        self._on_change = on_change

    @property
    def keys(self) -> KeyRing:
        return self._keys

    def signs_from(self, key: SigningKey) -> dt.datetime:
        return key.created_at + self._grace

    async def begin(self, *, by: str) -> RotationStarted:
        """Publish a new key as `next` at `by`'s request (the admin's SPIFFE ID, audited as the
        actor); Conflict if one is already waiting."""
        key = self._keys.rotate()
        started = RotationStarted(next_kid=key.kid, signs_from=self.signs_from(key))
        await self._report(
            "key_published", {"kid": key.kid, "signs_from": started.signs_from, "by": by}
        )
        return started

    async def tick(self) -> None:
        """Promote a `next` key whose grace has passed; drop retired keys nobody can need."""
        upcoming = self._keys.next
        if upcoming is not None and self._clock.now() >= self.signs_from(upcoming):
            retiring = self._keys.active.kid
            self._keys.promote()
            await self._report("key_promoted", {"kid": upcoming.kid, "retired": retiring})
        for kid in self._keys.prune():
            await self._report("key_unpublished", {"kid": kid})

    async def run(self, interval: dt.timedelta) -> None:
        if interval <= dt.timedelta(0):  # the config refuses it too: sleep(0) would spin
            raise ValueError("the rotation check interval must be positive")
        while True:
            await asyncio.sleep(interval.total_seconds())
            try:
                await self.tick()
            except Exception:  # one failed tick must not end rotation for the server's life
                log.exception("signing key rotation tick failed; will retry")

    async def _report(self, what: str, details: dict[str, object]) -> None:
        log.info("signing keys: %s %s", what, details)
        if self._on_change is not None:
            await self._on_change(what, details)
