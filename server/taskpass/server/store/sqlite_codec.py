"""Records <-> SQLite rows: row_codec's, with times as integer microseconds since the epoch and
lists of names as compact JSON text."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from taskpass.server.store.records import utc
from taskpass.server.store.row_codec import Dialect, RowCodec

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
# One encoder reused (json.dumps with options builds one per call): lists of names, compact.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def to_db_time(value: dt.datetime) -> int:
    """Microseconds since the epoch: exact (no float rounding) and ordered."""
    return (utc(value, "timestamp") - _EPOCH) // _MICROSECOND


def from_db_time(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def _json_list(items: Sequence[str]) -> str:
    return _COMPACT.encode(list(items))


def _names(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value))


codec = RowCodec(
    Dialect(
        name="sqlite",
        time_to_db=to_db_time,
        time_from_db=from_db_time,
        time_check=from_db_time,
        names_to_db=_json_list,
        names_from_db=_names,
    )
)
