"""proto <-> domain conversions. Validation of values happens in the domain constructors."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.errors import InvalidRequest
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

_SENSITIVITY = {
    pb.SENSITIVITY_PUBLIC: Sensitivity.PUBLIC,
    pb.SENSITIVITY_INTERNAL: Sensitivity.INTERNAL,
    pb.SENSITIVITY_CONFIDENTIAL: Sensitivity.CONFIDENTIAL,
    pb.SENSITIVITY_RESTRICTED: Sensitivity.RESTRICTED,
}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(value: dt.datetime) -> Timestamp:
    """`value` (timezone-aware) as a Timestamp.

    Hot path (one per revocation event sent): built from the offset to the epoch, 0.5 us,
    where Timestamp.FromDatetime takes 1.6 us. A timedelta keeps its seconds and microseconds
    non-negative, as Timestamp wants its nanos, also before 1970.
    """
    offset = value - _EPOCH
    return Timestamp(
        seconds=offset.days * 86_400 + offset.seconds, nanos=offset.microseconds * 1000
    )


def set_timestamp(target: Timestamp, value: dt.datetime) -> None:
    """Set a message's Timestamp field to `value` in place, as `timestamp` makes it (no
    Timestamp built and then copied into the field: two per exchange)."""
    offset = value - _EPOCH
    target.seconds = offset.days * 86_400 + offset.seconds
    target.nanos = offset.microseconds * 1000


def datetime_from(value: Timestamp, field: str) -> dt.datetime:
    """A request's Timestamp as a UTC datetime; InvalidRequest naming `field` when its seconds or
    nanos are out of range."""
    try:
        return value.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):  # seconds or nanos out of range
        raise InvalidRequest(field, "is not a valid timestamp") from None


def task_from_proto(message: pb.TaskDescriptor) -> TaskDescriptor:
    if message.sensitivity not in _SENSITIVITY:
        raise InvalidRequest(
            "task.sensitivity", "must be one of public, internal, confidential, restricted"
        )
    deadline = None
    if message.HasField("deadline"):
        deadline = datetime_from(message.deadline, "task.deadline")
    try:
        return TaskDescriptor(
            task_id=message.task_id,
            audience=message.audience,
            action=message.action,
            sensitivity=_SENSITIVITY[message.sensitivity],
            requested_ttl=dt.timedelta(seconds=message.requested_ttl_seconds),
            tool=message.tool,
            environment=message.environment,
            deadline=deadline,
            reason=message.reason,
            attributes=dict(message.attributes),
            orchestrator=message.orchestrator,
        )
    except InvalidRequest as error:
        # Name the field as the caller sees it in the request message.
        raise InvalidRequest(f"task.{error.field}", error.message.split(": ", 1)[-1]) from None
