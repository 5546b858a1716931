"""The per-identity token bucket, on an injected monotonic clock."""

from __future__ import annotations

import pytest

from taskpass.server.errors import ResourceExhausted
from taskpass.server.limits import RateLimit, RateLimiter


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(ticks: Ticks, *, per_second: float = 2.0, burst: int = 3, **kw: int) -> RateLimiter:
    return RateLimiter(
        RateLimit(per_second=per_second, burst=burst),
        what="exchanges",
        setting="[limits] exchanges_per_second",
        monotonic=ticks,
        **kw,
    )


def test_an_idle_identity_may_make_a_burst_then_waits_for_the_refill() -> None:
    ticks = Ticks()
    limit = limiter(ticks)
    assert [limit.retry_after("a") for _ in range(3)] == [None, None, None]
    assert limit.retry_after("a") == pytest.approx(0.5)  # 2 per second: a token every 0.5 s
    ticks.now += 0.5
    assert limit.retry_after("a") is None
    assert limit.retry_after("a") == pytest.approx(0.5)


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    ticks = Ticks()
    limit = limiter(ticks)
    limit.retry_after("a")
    ticks.now += 3600
    assert [limit.retry_after("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_identities_have_their_own_buckets() -> None:
    limit = limiter(Ticks(), burst=1)
    assert limit.retry_after("a") is None
    assert limit.retry_after("a") is not None
    assert limit.retry_after("b") is None


def test_refusal_names_the_identity_the_limit_the_setting_and_when_to_retry() -> None:
    limit = limiter(Ticks(), per_second=0.5, burst=1)
    limit.admit("spiffe://example.org/agents/a")
    with pytest.raises(ResourceExhausted) as refused:
        limit.admit("spiffe://example.org/agents/a")
    assert refused.value.message == (
        "rate limit exceeded: spiffe://example.org/agents/a may make 0.5 exchanges per second "
        "(bursts of 1; set by [limits] exchanges_per_second); retry in 2.00 s"
    )
    assert refused.value.details == {"retry_after_ms": "2000"}


def test_a_refused_call_does_not_spend_a_token() -> None:
    ticks = Ticks()
    limit = limiter(ticks, per_second=1.0, burst=1)
    limit.retry_after("a")
    for _ in range(5):
        assert limit.retry_after("a") == pytest.approx(1.0)
    ticks.now += 1.0
    assert limit.retry_after("a") is None


def test_memory_stays_bounded_dropping_refilled_buckets_first() -> None:
    ticks = Ticks()
    limit = limiter(ticks, per_second=1.0, burst=2, max_keys=3)
    limit.retry_after("idle")
    ticks.now += 10  # "idle" has refilled: as good as new
    limit.retry_after("busy-1")
    limit.retry_after("busy-1")
    limit.retry_after("busy-2")
    limit.retry_after("new")  # the fourth key: "idle" goes
    assert len(limit) == 3
    assert limit.retry_after("busy-1") is not None  # still remembered as empty


@pytest.mark.parametrize(
    ("per_second", "burst"),
    [
        pytest.param(0.0, 1, id="zero-rate"),
        pytest.param(-1.0, 1, id="negative-rate"),
        pytest.param(float("inf"), 1, id="infinite-rate"),
        pytest.param(float("nan"), 1, id="nan-rate"),
        pytest.param(1.0, 0, id="zero-burst"),
    ],
)
def test_a_limit_must_be_a_positive_rate_and_burst(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimit(per_second=per_second, burst=burst)
