"""The bans in force, in memory: every exchange asks, so the answer must be a lookup, not a query.

Loaded from the store at start and changed here on ban/unban; `refresh()` re-reads the store so
bans made by another replica arrive too. A ban is added here *before* its write and removed only
*after* an unban's write: in between, exchanges are refused early rather than late.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskpass.server.policy.patterns import patterns_covering
from taskpass.server.store.base import BanStore, banned
from taskpass.server.store.records import BanRecord


class BanList:
    def __init__(self, bans: Iterable[BanRecord] = ()) -> None:
        self._bans: dict[str, BanRecord] = {}  # by pattern text (an exact ID is one too)
        self._generation = 0
        self._set(bans)

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(self._bans)

    def banned(self, workload_id: str) -> BanRecord | None:
        """The ban that covers `workload_id`, if any: a look-up of each pattern text that could
        (patterns_covering, as the PostgreSQL issuance check does), not a scan of every ban."""
        if not self._bans:
            return None
        return next(
            (self._bans[p] for p in patterns_covering(workload_id) if p in self._bans), None
        )

    def check(self, workload_id: str) -> None:
        """Raise PermissionDenied if `workload_id` is banned."""
        ban = self.banned(workload_id)
        if ban is not None:
            raise banned(workload_id, ban.pattern)

    def add(self, ban: BanRecord) -> None:
        self._generation += 1
        self._bans[ban.pattern] = ban

    def remove(self, pattern: str) -> None:
        self._generation += 1
        self._bans.pop(pattern, None)

    async def refresh(self, store: BanStore) -> None:
        """Replace the list with the store's, unless a local ban/unban happened meanwhile (the
        next refresh then picks the store's state up)."""
        generation = self._generation
        bans = await store.list_bans()
        if generation == self._generation:
            self._set(bans)

    def _set(self, bans: Iterable[BanRecord]) -> None:
        self._bans = {ban.pattern: ban for ban in bans}
