from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.policy.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", dt.timedelta(seconds=90), id="seconds"),
        pytest.param("15m", dt.timedelta(minutes=15), id="minutes"),
        pytest.param("1h", dt.timedelta(hours=1), id="hours"),
        pytest.param("1h30m", dt.timedelta(hours=1, minutes=30), id="hours-minutes"),
        pytest.param("1m30s", dt.timedelta(seconds=90), id="minutes-seconds"),
        pytest.param("24h", dt.timedelta(hours=24), id="the-longest"),
    ],
)
def test_duration_forms_are_accepted(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("15", id="no-unit"),
        pytest.param("15x", id="unknown-unit"),
        pytest.param("30m1h", id="wrong-order"),
        pytest.param("1.5h", id="fraction"),
        pytest.param("-5m", id="negative"),
        pytest.param("0s", id="zero"),
        pytest.param("", id="empty"),
        pytest.param("25h", id="above-24h"),
        pytest.param("99999h", id="huge"),
        pytest.param(" 5m", id="leading-space"),
        pytest.param("5m\n", id="trailing-newline"),
        pytest.param(900, id="bare-number"),
    ],
)
def test_bad_duration_is_rejected_with_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValueError, match=r"90s|longer than|zero"):
        parse_duration(value)


def test_format_duration_round_trips() -> None:
    assert format_duration(dt.timedelta(seconds=5400)) == "1h30m"
    assert parse_duration(format_duration(dt.timedelta(seconds=3725))) == dt.timedelta(seconds=3725)
