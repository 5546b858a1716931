"""api/parsing.py: bytes that do not parse become an Unparsed value naming the message."""

from __future__ import annotations

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.api.parsing import Unparsed, tolerant

GARBAGE = b"\xff\xff\xff\xff"


def test_bytes_that_do_not_parse_become_unparsed_naming_the_expected_message() -> None:
    deserialize = tolerant(pb.ExchangeRequest.FromString)
    assert deserialize is not None

    unparsed = deserialize(GARBAGE)

    assert isinstance(unparsed, Unparsed)
    assert "taskpass.v1.ExchangeRequest" in unparsed.error.message


def test_bytes_that_parse_are_the_message() -> None:
    deserialize = tolerant(pb.ExchangeRequest.FromString)
    assert deserialize is not None
    request = pb.ExchangeRequest(subject_token="t")

    assert deserialize(request.SerializeToString()) == request


def test_each_bad_request_gets_its_own_error() -> None:
    # A shared instance, raised once per bad call, would keep every call's traceback alive.
    deserialize = tolerant(pb.ExchangeRequest.FromString)
    assert deserialize is not None

    first, second = deserialize(GARBAGE), deserialize(GARBAGE)

    assert isinstance(first, Unparsed) and isinstance(second, Unparsed)
    assert first.error is not second.error


def test_no_deserializer_stays_none() -> None:
    assert tolerant(None) is None
