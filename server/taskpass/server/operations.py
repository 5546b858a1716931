"""What the composition root adds for operators, kept out of app.py: the interceptor,
metrics wired to the components, and the store's write observer.

The server has one interceptor, a CallPipeline (api/pipeline.py) of these stages in this order:

    Observability    request id, metrics, access line, a bug never leaks its text
    (parsing)        unparseable requests refused
    Authorization    attestation and the authorization table (api/authz.py)
    RateLimiting     the per-identity rate limit, only when [limits] sets one

so the rate limit knows the attested caller, and the access line and metrics see every
outcome, refusals included. Each interceptor costs every call 10-15 us of CPU under load, so
the stages share one, and the rate-limit stage is left out when no limit is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import grpc

from taskpass.server.api import credential_servicer
from taskpass.server.api.authz import Authorization
from taskpass.server.api.observability import Observability
from taskpass.server.api.pipeline import CallPipeline
from taskpass.server.api.rate_limit import RateLimiting
from taskpass.server.clock import Clock
from taskpass.server.config import AccessLog, LimitsConfig
from taskpass.server.limits import RateLimit, RateLimiter
from taskpass.server.metrics import Metrics
from taskpass.server.revocation.hub import RevocationHub
from taskpass.server.store.base import MAX_PAGE, ApprovalStore

if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor

EXCHANGE = f"/{credential_servicer.SERVICE}/Exchange"
RATE_LIMITED = frozenset({EXCHANGE})
LIMIT_SETTING = "[limits] exchanges_per_second and burst"


def rate_limiter(limits: LimitsConfig) -> RateLimiter | None:
    if limits.exchanges_per_second is None:
        return None
    return RateLimiter(
        RateLimit(per_second=limits.exchanges_per_second, burst=limits.burst),
        what="exchanges",
        setting=LIMIT_SETTING,
    )


def interceptor_chain(
    *,
    metrics: Metrics,
    authorization: Authorization,
    limits: LimitsConfig,
    access_log: AccessLog = "failures",
) -> list[Interceptor]:
    """The server's interceptors: one pipeline of every stage (see the module docstring)."""
    limiter = rate_limiter(limits)
    return [
        CallPipeline(
            observability=Observability(
                metrics=metrics, exchange_method=EXCHANGE, access_log=access_log
            ),
            authorization=authorization,
            rate_limit=(
                RateLimiting(limiter=limiter, limited_methods=RATE_LIMITED, metrics=metrics)
                if limiter is not None
                else None
            ),
        )
    ]


def watch_components(
    metrics: Metrics, *, hub: RevocationHub, approvals: ApprovalStore, clock: Clock
) -> None:
    """Gauges read from the components: live subscribers now, pending approvals at scrape."""
    metrics.revocation_subscribers.set_function(lambda: hub.subscribers)

    async def count_pending() -> None:
        pending = await approvals.list_pending(clock.now(), limit=MAX_PAGE)
        metrics.approvals_pending.set(len(pending))

    metrics.on_scrape(count_pending)


@runtime_checkable
class ObservableWrites(Protocol):
    """A store whose writer reports each committed batch (size, seconds to run and commit)."""

    def observe_writes(self, observer: Callable[[int, float], None]) -> None: ...


def observe_store_writes(store: object, metrics: Metrics) -> None:
    if isinstance(store, ObservableWrites):
        store.observe_writes(metrics.store_batch)
