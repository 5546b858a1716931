"""Records <-> PostgreSQL rows: row_codec's, with times and lists of names as asyncpg takes and
gives them (aware datetimes for timestamptz, lists for text[])."""

from __future__ import annotations

import datetime as dt

from taskpass.server.store.records import utc
from taskpass.server.store.row_codec import Dialect, RowCodec


# Out-of-range timestamps fail in the driver (see row_guard.timestamp_out_of_range), except
# +-infinity, which asyncpg decodes as a naive datetime.max / min: not a time a record can hold.
def _timestamp(value: dt.datetime) -> dt.datetime:
    return utc(value, "timestamp")


codec = RowCodec(
    Dialect(
        name="postgres",
        time_to_db=None,
        time_from_db=None,
        time_check=_timestamp,
        names_to_db=list,
        names_from_db=tuple,
    )
)
