"""Time for the SDK, injected so tests reach an expiry or a refresh point without sleeping.

Structurally the same protocol as the server's clock: any object with `now()` will do.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)
