"""protobuf Timestamps as timezone-aware UTC datetimes: the one conversion every client uses."""

from __future__ import annotations

import datetime as dt
from typing import Any


def from_timestamp(ts: Any) -> dt.datetime:
    """A google.protobuf.Timestamp as an aware UTC datetime."""
    value: dt.datetime = ts.ToDatetime(tzinfo=dt.UTC)
    return value
