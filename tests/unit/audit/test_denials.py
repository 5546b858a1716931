"""audit/denials.py: the first refusal of a caller, method and reason per window is audited."""

from __future__ import annotations

import pytest

from taskpass.server.audit import denials
from taskpass.server.audit.denials import DenialThrottle


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_refusal_is_audited_once_a_window() -> None:
    ticks = Ticks()
    throttle = DenialThrottle(window=60, clock=ticks)

    first = throttle.should_audit("bot", "/s/Ban", "banned")
    again = [throttle.should_audit("bot", "/s/Ban", "banned") for _ in range(100)]
    other_method = throttle.should_audit("bot", "/s/Unban", "banned")
    other_reason = throttle.should_audit("bot", "/s/Ban", "not in the groups")
    ticks.now = 60.0
    next_window = throttle.should_audit("bot", "/s/Ban", "banned")

    assert (first, any(again), other_method, other_reason, next_window) == (
        True,
        False,
        True,
        True,
        True,
    )


def test_past_its_bound_it_forgets_and_audits_again_rather_than_grow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(denials, "MAX_REMEMBERED", 50)
    throttle = DenialThrottle(window=60, clock=Ticks())

    assert all(throttle.should_audit(f"bot-{n}", "/s/Ban", "banned") for n in range(500))
    # bot-0 was forgotten to make room: a second record, never a missing one
    assert throttle.should_audit("bot-0", "/s/Ban", "banned")
