"""The measuring wrappers: a timed policy that follows reloads, an attestor counting failures."""

from __future__ import annotations

import pytest

from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.workload import Workload
from taskpass.server.instrumentation import CountingAttestor, TimedPolicy
from taskpass.server.policy.decision import Decision
from taskpass.server.policy.request import PolicyRequest


class Engine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.decided = 0

    def decide(self, request: PolicyRequest) -> Decision:
        self.decided += 1
        return self.name  # type: ignore[return-value]  # stands in for a Decision


class Source:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def current(self) -> Engine:
        return self.engine


REQUEST: PolicyRequest = None  # type: ignore[assignment]  # the fakes never look at it


def test_every_decision_is_timed_and_a_reloaded_policy_is_followed() -> None:
    observed: list[float] = []
    source = Source(Engine("v1"))
    timed = TimedPolicy(source, observed.append)

    first = timed.current().decide(REQUEST)
    again = timed.current().decide(REQUEST)
    source.engine = Engine("v2")  # a reload
    second = timed.current().decide(REQUEST)

    assert [str(d) for d in (first, again, second)] == ["v1", "v1", "v2"]
    assert len(observed) == 3
    assert all(0 <= seconds < 1 for seconds in observed)


def test_a_decision_that_raises_is_still_timed() -> None:
    class Broken(Engine):
        def decide(self, request: PolicyRequest) -> Decision:
            raise RuntimeError("bug")

    observed: list[float] = []
    with pytest.raises(RuntimeError):
        TimedPolicy(Source(Broken("x")), observed.append).current().decide(REQUEST)
    assert len(observed) == 1


class Attestor:
    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload:
        raise AttestationFailed("X-9", "untrusted")

    def attest_bearer(self, authorization: str) -> Workload:
        if authorization == "ok":
            return "workload"  # type: ignore[return-value]  # stands in for a Workload
        raise AttestationFailed("J-8", "expired")


def test_attestation_failures_are_reported_by_rule_and_still_raised() -> None:
    failed: list[str] = []
    counting = CountingAttestor(Attestor(), failed.append)

    with pytest.raises(AttestationFailed):
        counting.attest_peer_certificate(b"pem", None)
    with pytest.raises(AttestationFailed):
        counting.attest_bearer("Bearer x")
    assert str(counting.attest_bearer("ok")) == "workload"

    assert failed == ["X-9", "J-8"]
