"""Per-identity rate limiting: one token bucket per workload id.

A bucket holds up to `burst` tokens and refills at `per_second`; each call takes one. A caller
that finds its bucket empty gets ResourceExhausted saying which limit it hit and how long until
a token is back. Buckets are per attested identity, so one noisy workload cannot starve others.

Memory stays bounded: past `max_keys` buckets, those that have refilled (equivalent to a new
bucket) are dropped, then the oldest ones if still too many (which only ever lets a caller in
early, never refuses one wrongly).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from taskpass.server.errors import ResourceExhausted

DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    per_second: float
    """Sustained calls per second per identity."""
    burst: int
    """Calls an idle identity may make at once."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0) or self.burst < 1:
            raise ValueError("per_second must be a positive number and burst at least 1")


class RateLimiter:
    def __init__(
        self,
        limit: RateLimit,
        *,
        what: str,
        setting: str,
        monotonic: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        """`what` names the calls in messages ("exchanges"); `setting` names the config that
        sets the limit, so the message says what an operator would change."""
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._rate = limit.per_second
        self._burst = float(limit.burst)
        self._limit = limit
        self._what = what
        self._setting = setting
        self._now = monotonic
        self._max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill time]

    @property
    def limit(self) -> RateLimit:
        return self._limit

    def __len__(self) -> int:
        return len(self._buckets)

    def retry_after(self, key: str) -> float | None:
        """Take a token for `key`: None when one was there, else seconds until one is."""
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            self._buckets[key] = [self._burst - 1.0, now]
            return None
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return (1.0 - tokens) / self._rate

    def admit(self, key: str) -> None:
        """Take a token for `key` or raise ResourceExhausted (with `retry_after_ms`)."""
        wait = self.retry_after(key)
        if wait is None:
            return
        limit = self._limit
        raise ResourceExhausted(
            f"rate limit exceeded: {key} may make {limit.per_second:g} {self._what} per second "
            f"(bursts of {limit.burst}; set by {self._setting}); retry in {wait:.2f} s",
            details={"retry_after_ms": str(math.ceil(wait * 1000))},
        )

    def _prune(self, now: float) -> None:
        full_after = self._burst / self._rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]
        excess = len(self._buckets) - self._max_keys + 1
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]
