"""The watcher's reconnect backoff."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.client.watcher import Backoff

MS = dt.timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [
        pytest.param(1, 0.1, id="first"),
        pytest.param(2, 0.2, id="doubles"),
        pytest.param(4, 0.8, id="doubles-again"),
        pytest.param(40, 5.0, id="capped"),
    ],
)
def test_the_wait_doubles_up_to_the_maximum_with_jitter_below_it(
    failures: int, ceiling: float
) -> None:
    backoff = Backoff(initial=100 * MS, maximum=5000 * MS)
    waits = [backoff.delay(failures) for _ in range(50)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 1  # jittered


@pytest.mark.parametrize(
    ("initial", "maximum"),
    [pytest.param(0 * MS, MS, id="zero-initial"), pytest.param(2 * MS, MS, id="max-below-initial")],
)
def test_a_backoff_that_makes_no_sense_is_refused(
    initial: dt.timedelta, maximum: dt.timedelta
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial=initial, maximum=maximum)
