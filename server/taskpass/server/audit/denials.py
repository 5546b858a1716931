"""Which refused calls get an audit record: the first of each caller, method and reason per
window, and no more.

Why: a refusal is answered before the rate limit applies (it needs no work), but its audit
record is a durable, hash-chained write. A banned or misconfigured workload retrying in a loop
would otherwise write one per call: slowing every other workload's exchanges behind the single
writer and growing the log without bound. The access log and the metrics still count each call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0
MAX_REMEMBERED = 10_000


class DenialThrottle:
    def __init__(
        self,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window
        self._clock = clock
        self._last: dict[tuple[str, str, str], float] = {}

    def should_audit(self, caller: str, method: str, why: str) -> bool:
        now = self._clock()
        key = (caller, method, why)
        last = self._last.get(key)
        if last is not None and now - last < self._window:
            return False
        if len(self._last) >= MAX_REMEMBERED:  # many callers at once: forget, never grow
            self._last = {k: t for k, t in self._last.items() if now - t < self._window}
            if len(self._last) >= MAX_REMEMBERED:
                self._last.clear()
        self._last[key] = now
        return True
