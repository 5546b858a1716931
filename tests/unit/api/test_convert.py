"""Domain values to protobuf: timestamps equal what protobuf's own conversion makes."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.api.convert import set_timestamp, timestamp

PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))


def _reference(value: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC), id="whole-seconds-utc"),
        pytest.param(dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC), id="micros"),
        pytest.param(dt.datetime(2026, 6, 1, 17, 30, 1, 5, tzinfo=PLUS_0530), id="other-offset"),
        pytest.param(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), id="pre-1970"),
        pytest.param(dt.datetime(1970, 1, 1, tzinfo=dt.UTC), id="epoch"),
    ],
)
def test_timestamp_equals_protobufs_conversion(value: dt.datetime) -> None:
    assert timestamp(value) == _reference(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC), id="micros"),
        pytest.param(dt.datetime(2026, 6, 1, 17, 30, 1, 5, tzinfo=PLUS_0530), id="other-offset"),
        pytest.param(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC), id="pre-1970"),
    ],
)
def test_a_timestamp_field_set_in_place_equals_protobufs_conversion(value: dt.datetime) -> None:
    credential = pb.Credential(expires_at=Timestamp(seconds=1, nanos=1))  # overwritten whole

    set_timestamp(credential.expires_at, value)

    assert credential.expires_at == _reference(value)


def test_timestamp_of_a_naive_datetime_is_refused() -> None:
    with pytest.raises(TypeError):
        timestamp(dt.datetime(2026, 6, 1, 12, 0))  # naive: the point of the test
