"""api/status.py: the one mapping of the server's error tree to gRPC statuses."""

from __future__ import annotations

import grpc

from taskpass.server.api.status import GRPC_CODES, status_of
from taskpass.server.errors import ErrorCode, StoreCorrupted, TaskpassError, Unavailable


def test_every_error_code_has_a_grpc_status() -> None:
    assert set(GRPC_CODES) == set(ErrorCode)


def test_a_corrupted_store_is_data_loss_not_a_retryable_unavailable() -> None:
    message = "store corrupted: column seq of table audit holds a value ..."

    assert status_of(StoreCorrupted(message)) == (grpc.StatusCode.DATA_LOSS, message, ())
    assert status_of(Unavailable("store is closed"))[0] == grpc.StatusCode.UNAVAILABLE


def test_trailers_are_printable_ascii_whatever_the_caller_sent() -> None:
    # grpc refuses a trailer value that is not printable ASCII: the call would end INTERNAL.
    error = TaskpassError("bad", details={"field": "attributes[a\nb]", "rule": "r-é", "ok": "x-1"})

    _, _, trailers = status_of(error)

    assert dict(trailers) == {
        "taskpass-field": "attributes[a\\nb]",
        "taskpass-rule": "r-\\xe9",
        "taskpass-ok": "x-1",
    }
