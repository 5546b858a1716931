"""The SDK's one exception tree; gRPC statuses never reach the caller raw.

TaskpassClientError
├── InvalidRequest       INVALID_ARGUMENT    (field)
├── AttestationFailed    UNAUTHENTICATED     (rule) the server did not accept our identity
├── PermissionDenied     PERMISSION_DENIED
│   └── Denied           policy said deny    (decision_id, matched_rules)
├── ApprovalPending      FAILED_PRECONDITION with an approval requirement (rules, groups, id)
├── FailedPrecondition   FAILED_PRECONDITION otherwise (e.g. task already completed)
├── NotFound             NOT_FOUND
├── ResourceExhausted    RESOURCE_EXHAUSTED  (retry_after) a rate or size limit
├── Unavailable          UNAVAILABLE / DEADLINE_EXCEEDED / handshake refused: retry or fix TLS
├── StoreCorrupted       DATA_LOSS: the server's database holds a row it cannot read; not retryable
└── InvalidToken         (verifier.py) a credential failed offline verification (`reason`)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

import grpc

_PREFIX = "taskpass-"


class TaskpassClientError(Exception):
    def __init__(self, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(TaskpassClientError):
    @property
    def field(self) -> str:
        return self.details.get("field", "")


class AttestationFailed(TaskpassClientError):
    @property
    def rule(self) -> str:
        return self.details.get("rule", "")


class PermissionDenied(TaskpassClientError):
    pass


class Denied(PermissionDenied):
    @property
    def decision_id(self) -> str:
        return self.details.get("decision_id", "")

    @property
    def matched_rules(self) -> tuple[str, ...]:
        raw = self.details.get("matched_rules", "")
        return tuple(r for r in raw.split(",") if r)


class ApprovalPending(TaskpassClientError):
    @property
    def approval_id(self) -> str:
        return self.details.get("approval_id", "")

    @property
    def decision_id(self) -> str:
        return self.details.get("decision_id", "")

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(r for r in self.details.get("matched_rules", "").split(",") if r)

    @property
    def approver_groups(self) -> tuple[str, ...]:
        return tuple(g for g in self.details.get("approver_groups", "").split(",") if g)


class FailedPrecondition(TaskpassClientError):
    pass


class NotFound(TaskpassClientError):
    pass


class ResourceExhausted(TaskpassClientError):
    """A limit refused the call: the message names it."""

    @property
    def retry_after(self) -> dt.timedelta | None:
        """How long until the same call can succeed: the server's `taskpass-retry-after-ms`
        trailer, sent with a rate limit. None when the server named no time (a message over the
        size limit, where retrying the same call will not help) or sent a value that is not a
        whole number of milliseconds."""
        raw = self.details.get("retry_after_ms", "")
        # Only ASCII digits: int() would also take " 5", "+5", "1_000" and other scripts' digits.
        if not (raw.isascii() and raw.isdigit()):
            return None
        try:
            return dt.timedelta(milliseconds=int(raw))
        except (ValueError, OverflowError):  # too many digits for int() or for a timedelta
            return None


class Unavailable(TaskpassClientError):
    pass


class StoreCorrupted(TaskpassClientError):
    """The server read a row of its database that taskpass cannot have written (edited outside
    taskpass, or damaged); the message names the table and column. Not an Unavailable: the same
    call fails the same way until the server's operator restores or corrects the row, so do not
    retry it (RevocationWatcher alone keeps reconnecting, with its usual backoff)."""


def _details(error: grpc.aio.AioRpcError) -> dict[str, str]:
    details: dict[str, str] = {}
    metadata = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in metadata:
        if key.startswith(_PREFIX) and isinstance(value, str):
            details[key[len(_PREFIX) :].replace("-", "_")] = value
    return details


def from_rpc_error(error: grpc.aio.AioRpcError) -> TaskpassClientError:
    """Translate a gRPC error into the SDK's typed error (the one place this happens)."""
    code = error.code()
    message = error.details() or code.name
    details = _details(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequest(message, details=details)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AttestationFailed(message, details=details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        cls = Denied if "decision_id" in details else PermissionDenied
        return cls(message, details=details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        cls2 = ApprovalPending if "approver_groups" in details else FailedPrecondition
        return cls2(message, details=details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message, details=details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, details=details)
    if code == grpc.StatusCode.DATA_LOSS:
        return StoreCorrupted(message, details=details)
    if code == grpc.StatusCode.UNAVAILABLE and "connection refused" in message.lower():
        return Unavailable(
            f"cannot reach the server: nothing listens there ({message}); is it running?",
            details=details,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        # A refused TLS handshake looks like a closed socket from here, so say its causes.
        return Unavailable(
            f"cannot reach the server ({message}); if it is up, check that it trusts your "
            "certificate's CA, that --ca holds the CA of the server's certificate, and that a "
            "JWT-SVID caller dials the server-TLS listener (the mTLS one requires a client "
            "certificate)",
            details=details,
        )
    return Unavailable(message, details=details)
