"""The per-identity rate limit (limits.py) on the methods it applies to (Exchange).

This stage runs after authorization (api/pipeline.py), so the caller is attested and known; a
call over the limit is refused before its handler runs: no policy evaluation, signature or
write. Other methods are handed on untouched. Present only when `[limits]` sets a rate.
"""

from __future__ import annotations

from collections.abc import Collection

from taskpass.server.api.authz import current_workload
from taskpass.server.api.pipeline import Limit
from taskpass.server.errors import TaskpassError
from taskpass.server.limits import RateLimiter
from taskpass.server.metrics import Metrics


class RateLimiting:
    """The rate-limit stage: a limit for each limited method, nothing for the others."""

    def __init__(
        self, *, limiter: RateLimiter, limited_methods: Collection[str], metrics: Metrics
    ) -> None:
        self._limiter = limiter
        self._limited = frozenset(limited_methods)
        self._metrics = metrics

    def limit(self, method: str) -> Limit | None:
        if method not in self._limited:
            return None
        limiter = self._limiter
        rate_limited = self._metrics.rate_limited.labels(method)

        def admit() -> None:
            try:
                limiter.admit(current_workload().id)
            except TaskpassError:
                rate_limited.inc()
                raise

        return admit
