"""A bounded LRU of successful attestations, so a reconnecting or busy caller skips path validation.

An entry is served only while the trust bundle generation it was verified under is current and
the clock is inside the validity window of the verified chain.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass

from taskpass.server.identity.workload import Workload


@dataclass(frozen=True, slots=True)
class _Entry:
    workload: Workload
    valid_from: dt.datetime
    valid_until: dt.datetime
    generation: int


class VerificationCache:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # Servers may verify from several threads; OrderedDict reordering is not atomic.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, *, now: dt.datetime, generation: int) -> Workload | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.generation != generation or not (entry.valid_from <= now <= entry.valid_until):
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry.workload

    def put(
        self,
        key: bytes,
        workload: Workload,
        *,
        valid_from: dt.datetime,
        valid_until: dt.datetime,
        generation: int,
    ) -> None:
        with self._lock:
            self._entries[key] = _Entry(workload, valid_from, valid_until, generation)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
