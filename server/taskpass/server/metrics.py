"""Every Prometheus metric the server exports, on one registry per server instance.

One registry per `Metrics` (not prometheus-client's global one) so several servers in one
process (tests, benchmarks) keep their own counts. The HTTP listener serves `render()` at
/metrics; README "Operations" lists the names.

Hot-path cost: an observation is a lock and a bisect (~0.5 us); label children are cached so
recording an RPC does not re-hash label values on every call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("taskpass.metrics")

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Outcomes of an Exchange, from its gRPC status (see outcome_of).
ALLOW, DENY, PENDING, ERROR = "allow", "deny", "pending", "error"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_POLICY_BUCKETS = (
    0.000005, 0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.005, 0.01,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RefreshHook = Callable[[], Awaitable[None]]


def outcome_of(code: str, *, approval_pending: bool) -> str:
    """An Exchange's outcome from its status code name: OK is allow, PERMISSION_DENIED deny
    (policy, approver or ban), FAILED_PRECONDITION with an approval to wait for is pending;
    anything else is an error."""
    if code == "OK":
        return ALLOW
    if code == "PERMISSION_DENIED":
        return DENY
    if code == "FAILED_PRECONDITION" and approval_pending:
        return PENDING
    return ERROR


class Metrics:
    """The server's metrics. Build one per server; pass its bound methods to the components."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.rpcs = Counter(
            "taskpass_grpc_requests",
            "gRPC calls handled, by full method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.exchanges = Counter(
            "taskpass_exchanges",
            "Exchange calls by outcome (allow, deny, pending, error) and status code.",
            ["outcome", "code"],
            registry=r,
        )
        self.exchange_seconds = Histogram(
            "taskpass_exchange_duration_seconds",
            "Exchange latency in the server, from call start to status, by outcome.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.policy_seconds = Histogram(
            "taskpass_policy_evaluation_seconds",
            "Time to evaluate the policy for one decision.",
            buckets=_POLICY_BUCKETS,
            registry=r,
        )
        self.attestation_failures = Counter(
            "taskpass_attestation_failures",
            "Callers that failed attestation, by the DESIGN.md rule that failed (X-9, J-8, ...).",
            ["rule"],
            registry=r,
        )
        self.rate_limited = Counter(
            "taskpass_rate_limited",
            "Calls refused by the per-identity rate limit.",
            ["method"],
            registry=r,
        )
        self.revocation_subscribers = Gauge(
            "taskpass_revocation_subscribers",
            "Watch streams subscribed to live revocation events.",
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "taskpass_revocation_fanout_seconds",
            "From a revocation event's commit being signalled to its being queued to every "
            "subscriber.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.approvals_pending = Gauge(
            "taskpass_approvals_pending",
            "Approval requests waiting for an approver (read at scrape time, at most 1000).",
            registry=r,
        )
        self.store_batch_size = Histogram(
            "taskpass_store_write_batch_size",
            "Write operations committed together in one store transaction.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "taskpass_store_write_batch_seconds",
            "Time to run and commit one batch of store writes (durable when it ends).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ready = Gauge(
            "taskpass_ready",
            "1 when the store answers and a signing key is active, else 0.",
            registry=r,
        )
        self._rpc_children: dict[tuple[str, str], Counter] = {}
        self._exchange_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._rule_children: dict[str, Counter] = {}
        self._refresh: list[RefreshHook] = []

    # -- recording (hot path: keep these cheap) -------------------------------------------------

    def rpc_done(self, method: str, code: str) -> None:
        child = self._rpc_children.get((method, code))
        if child is None:
            child = self._rpc_children[(method, code)] = self.rpcs.labels(method, code)
        child.inc()

    def exchange_done(self, outcome: str, code: str, seconds: float) -> None:
        children = self._exchange_children.get((outcome, code))
        if children is None:
            children = (
                self.exchanges.labels(outcome, code),
                self.exchange_seconds.labels(outcome),
            )
            self._exchange_children[(outcome, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def attestation_failed(self, rule: str) -> None:
        child = self._rule_children.get(rule)
        if child is None:
            child = self._rule_children[rule] = self.attestation_failures.labels(rule)
        child.inc()

    def policy_evaluated(self, seconds: float) -> None:
        self.policy_seconds.observe(seconds)

    def fanned_out(self, seconds: float) -> None:
        self.fanout_seconds.observe(seconds)

    def store_batch(self, size: int, seconds: float) -> None:
        self.store_batch_size.observe(size)
        self.store_commit_seconds.observe(seconds)

    # -- scraping -------------------------------------------------------------------------------

    def on_scrape(self, hook: RefreshHook) -> None:
        """Run `hook` before each scrape (for values read from the store, such as pending
        approvals); a hook that fails leaves its metric at its last value."""
        self._refresh.append(hook)

    async def render(self) -> bytes:
        """The text exposition format, after running the scrape hooks."""
        for hook in self._refresh:
            try:
                await hook()
            except Exception as error:  # a scrape must still answer; readiness shows the cause
                log.warning("a metric could not be refreshed: %s", error)
        return generate_latest(self.registry)
