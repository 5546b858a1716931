"""The one place where domain errors become gRPC statuses.

The status message is the error's own message (written to be safe to show); structured details go
into trailing metadata as `taskpass-<name>` (escaped to printable ASCII, as metadata must be) so
the SDK can rebuild a typed error. Anything that is not a TaskpassError is logged with its cause
and answered with a generic INTERNAL.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from taskpass.server.errors import ErrorCode, TaskpassError, printable

log = logging.getLogger("taskpass.api")

GRPC_CODES: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

DETAIL_PREFIX = "taskpass-"


def status_of(error: TaskpassError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    trailers = tuple(
        (DETAIL_PREFIX + key.replace("_", "-"), printable(value))
        for key, value in sorted(error.details.items())
        if value
    )
    return GRPC_CODES[error.code], error.message, trailers


async def abort_with(
    context: grpc.aio.ServicerContext[object, object], error: Exception
) -> NoReturn:
    """Abort the call with the status that `error` maps to. Never returns.

    Trailers already set on the call (the request id, see api/observability.py) are kept:
    grpcio's abort replaces them with the ones it is given."""
    kept = tuple(context.trailing_metadata() or ())
    if isinstance(error, TaskpassError):
        code, message, trailers = status_of(error)
        if error.code is ErrorCode.INTERNAL:
            log.error("internal error: %s", message, exc_info=error)
        elif error.code is ErrorCode.DATA_LOSS:
            # The operator's to fix, not the caller's. No traceback: the codec's exception text
            # can quote the bad value itself.
            log.error("%s", message)
        await context.abort(code, message, trailing_metadata=(*kept, *trailers))
    log.error("unexpected error", exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        "internal error; the server log has details",
        trailing_metadata=kept,
    )
