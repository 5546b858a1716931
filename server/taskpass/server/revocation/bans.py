"""The bans in force, in memory: every exchange asks, so the answer must be a lookup, not a query.

Loaded from the store at start and changed here on ban/unban; `refresh()` re-reads the store so
bans made by another replica arrive too. A ban is added here *before* its write and removed only
*after* an unban's write: in between, exchanges are refused early rather than late.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.store.base import BanStore, banned
from taskpass.server.store.records import BanRecord


class BanList:
    def __init__(self, bans: Iterable[BanRecord] = ()) -> None:
        self._exact: dict[str, BanRecord] = {}
        self._patterns: dict[str, tuple[WorkloadPattern, BanRecord]] = {}
        self._generation = 0
        self._set(bans)

    @property
    def patterns(self) -> tuple[str, ...]:
        return (*self._exact, *self._patterns)

    def banned(self, workload_id: str) -> BanRecord | None:
        """The ban that covers `workload_id`, if any."""
        if not self._exact and not self._patterns:
            return None
        found = self._exact.get(workload_id)
        if found is not None:
            return found
        for pattern, ban in self._patterns.values():
            if pattern.matches(workload_id):
                return ban
        return None

    def check(self, workload_id: str) -> None:
        """Raise PermissionDenied if `workload_id` is banned."""
        ban = self.banned(workload_id)
        if ban is not None:
            raise banned(workload_id, ban.pattern)

    def add(self, ban: BanRecord) -> None:
        self._generation += 1
        self._put(ban)

    def remove(self, pattern: str) -> None:
        self._generation += 1
        self._exact.pop(pattern, None)
        self._patterns.pop(pattern, None)

    async def refresh(self, store: BanStore) -> None:
        """Replace the list with the store's, unless a local ban/unban happened meanwhile (the
        next refresh then picks the store's state up)."""
        generation = self._generation
        bans = await store.list_bans()
        if generation == self._generation:
            self._set(bans)

    def _set(self, bans: Iterable[BanRecord]) -> None:
        self._exact.clear()
        self._patterns.clear()
        for ban in bans:
            self._put(ban)

    def _put(self, ban: BanRecord) -> None:
        pattern = WorkloadPattern.parse(ban.pattern)
        if pattern.kind is PatternKind.EXACT:
            self._exact[ban.pattern] = ban
        else:
            self._patterns[ban.pattern] = (pattern, ban)
