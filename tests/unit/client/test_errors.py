"""gRPC statuses become the SDK's typed errors, details read from `taskpass-*` trailers."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from taskpass.client.errors import (
    ResourceExhausted,
    StoreCorrupted,
    TaskpassClientError,
    Unavailable,
    from_rpc_error,
)

MESSAGE = "rate limit exceeded: spiffe://example.org/agents/billing-bot ...; retry in 1.50 s"


def exhausted(*trailers: tuple[str, str]) -> ResourceExhausted:
    error = from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*trailers),
            details=MESSAGE,
            debug_error_string=None,
        )
    )
    assert isinstance(error, ResourceExhausted)
    return error


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1500", dt.timedelta(milliseconds=1500), id="ms"),
        pytest.param("0", dt.timedelta(0), id="zero"),
        pytest.param("100000", dt.timedelta(seconds=100), id="long"),
    ],
)
def test_retry_after_is_read_from_the_trailer(value: str, expected: dt.timedelta) -> None:
    error = exhausted(("taskpass-retry-after-ms", value), ("x-request-id", "r-1"))

    assert error.retry_after == expected
    assert error.message == MESSAGE


def test_without_the_trailer_there_is_no_retry_after_even_if_the_message_names_one() -> None:
    # The message's "retry in 1.50 s" is prose for people; only the trailer is read.
    assert exhausted(("x-request-id", "r-1")).retry_after is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("soon", id="words"),
        pytest.param("1.5", id="fraction"),
        pytest.param("-5", id="negative"),
        pytest.param("+5", id="plus-sign"),
        pytest.param(" 5", id="space"),
        pytest.param("1_000", id="underscore"),
        pytest.param("١٢", id="arabic-indic-digits"),
        pytest.param("9" * 20, id="past-timedelta"),
        pytest.param("9" * 5000, id="past-int-digit-limit"),
    ],
)
def test_a_malformed_retry_after_trailer_is_ignored(value: str) -> None:
    error = exhausted(("taskpass-retry-after-ms", value))

    assert error.retry_after is None
    assert error.details == {"retry_after_ms": value}
    assert error.message == MESSAGE


CORRUPTED = (
    "store corrupted: column expires_at of table credentials holds a value taskpass cannot have "
    "written (out of range or malformed); the database may have been edited outside taskpass or "
    "damaged: restore the row from a backup, or correct it"
)


def rpc_error(code: grpc.StatusCode, message: str) -> TaskpassClientError:
    return from_rpc_error(
        grpc.aio.AioRpcError(
            code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(("x-request-id", "r-1")),
            details=message,
            debug_error_string=None,
        )
    )


def test_data_loss_is_store_corrupted_with_the_servers_message_and_not_retryable() -> None:
    error = rpc_error(grpc.StatusCode.DATA_LOSS, CORRUPTED)

    assert type(error) is StoreCorrupted
    # Not an Unavailable: what the SDK (a task handle's refresh) treats as "try again later".
    assert not isinstance(error, Unavailable)
    assert error.message == CORRUPTED
    assert error.details == {}


def test_unavailable_stays_unavailable() -> None:
    error = rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")

    assert type(error) is Unavailable
    assert error.message.startswith("cannot reach the server (Socket closed)")
