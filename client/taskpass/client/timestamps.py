"""protobuf Timestamps as timezone-aware UTC datetimes: the one conversion every client uses;
and the range of seconds since the epoch (JWT NumericDates) a datetime can hold."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

FIRST_SECOND: Final = -62_135_596_800
"""0001-01-01T00:00:00Z, the earliest datetime (and protobuf Timestamp)."""
LAST_SECOND: Final = 253_402_300_799
"""9999-12-31T23:59:59Z, the last whole second of the latest datetime (and protobuf Timestamp)."""


def from_timestamp(ts: Any) -> dt.datetime:
    """A google.protobuf.Timestamp as an aware UTC datetime (ValueError outside years 1..9999)."""
    value: dt.datetime = ts.ToDatetime(tzinfo=dt.UTC)
    return value


def representable(seconds: float) -> bool:
    """Whether seconds since the epoch name a datetime (years 1..9999): a signed token's
    NumericDate need not, and converting one that does not raises ValueError or OverflowError."""
    return FIRST_SECOND <= seconds <= LAST_SECOND
