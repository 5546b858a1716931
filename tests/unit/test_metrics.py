"""The metrics registry: outcomes from status codes, one registry per server, scrape hooks."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskpass.server.metrics import ALLOW, DENY, ERROR, PENDING, Metrics, outcome_of


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("code", "pending", "outcome"),
    [
        pytest.param("OK", False, ALLOW, id="ok-allow"),
        pytest.param("PERMISSION_DENIED", False, DENY, id="denied"),
        pytest.param("FAILED_PRECONDITION", True, PENDING, id="approval-pending"),
        pytest.param("FAILED_PRECONDITION", False, ERROR, id="conflict-is-an-error"),
        pytest.param("INVALID_ARGUMENT", False, ERROR, id="invalid"),
        pytest.param("RESOURCE_EXHAUSTED", False, ERROR, id="rate-limited"),
        pytest.param("UNAUTHENTICATED", False, ERROR, id="unauthenticated"),
    ],
)
def test_an_exchange_outcome_follows_its_status(code: str, pending: bool, outcome: str) -> None:
    assert outcome_of(code, approval_pending=pending) == outcome


async def test_each_server_counts_in_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.exchange_done(ALLOW, "OK", 0.003)
    one.exchange_done(ALLOW, "OK", 0.004)
    two.exchange_done(DENY, "PERMISSION_DENIED", 0.002)

    first, second = samples(await one.render()), samples(await two.render())

    allowed = ("taskpass_exchanges_total", (("code", "OK"), ("outcome", "allow")))
    assert first[allowed] == 2
    assert allowed not in second
    assert first[("taskpass_exchange_duration_seconds_count", (("outcome", "allow"),))] == 2


async def test_recording_helpers_land_in_their_metrics() -> None:
    metrics = Metrics()
    metrics.rpc_done("/s/M", "OK")
    metrics.attestation_failed("X-9")
    metrics.attestation_failed("X-9")
    metrics.policy_evaluated(0.00002)
    metrics.fanned_out(0.01)
    metrics.store_batch(12, 0.004)

    got = samples(await metrics.render())

    assert got[("taskpass_grpc_requests_total", (("code", "OK"), ("method", "/s/M")))] == 1
    assert got[("taskpass_attestation_failures_total", (("rule", "X-9"),))] == 2
    assert got[("taskpass_policy_evaluation_seconds_count", ())] == 1
    assert got[("taskpass_revocation_fanout_seconds_count", ())] == 1
    assert got[("taskpass_store_write_batch_size_sum", ())] == 12
    assert got[("taskpass_store_write_batch_seconds_sum", ())] == pytest.approx(0.004)


async def test_scrape_hooks_refresh_values_and_a_failing_hook_does_not_fail_the_scrape() -> None:
    metrics = Metrics()
    calls: list[str] = []

    async def pending() -> None:
        calls.append("pending")
        metrics.approvals_pending.set(7)

    async def broken() -> None:
        raise RuntimeError("store down")

    metrics.on_scrape(broken)
    metrics.on_scrape(pending)

    got = samples(await metrics.render())

    assert calls == ["pending"]
    assert got[("taskpass_approvals_pending", ())] == 7
