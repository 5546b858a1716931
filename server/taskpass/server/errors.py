"""One exception tree for the whole server domain.

    TaskpassError          (code -> one gRPC status; the message is safe to show a caller)
    ├── InvalidRequest     INVALID_ARGUMENT     a field is missing, malformed or too large
    ├── AttestationFailed  UNAUTHENTICATED      the caller did not prove a workload identity
    ├── PermissionDenied   PERMISSION_DENIED    the identity may not do this
    │   └── PolicyDenied   PERMISSION_DENIED    policy decided deny (carries rule ids)
    ├── ApprovalRequired   FAILED_PRECONDITION  policy wants an approver first
    ├── Conflict           FAILED_PRECONDITION  state does not allow it (task completed, ...)
    ├── NotFound           NOT_FOUND
    ├── ResourceExhausted  RESOURCE_EXHAUSTED   rate or size limits
    ├── Unavailable        UNAVAILABLE          a dependency (store) is down; retry later
    ├── StoreCorrupted     DATA_LOSS            a stored row holds a value taskpass cannot have
    │                                           written: retrying cannot help, restore the row
    └── ConfigError        (startup only)       a config, bundle, key or policy file is wrong

Domain code raises these; `taskpass.server.api.status` is the single place that maps them to gRPC.
Messages must never contain key material, whole tokens or internal exception text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


def printable(text: str) -> str:
    """`text` with everything but printable ASCII escaped (a newline as \\n, NUL as \\x00): a
    caller's value named in a message, a log line or a gRPC trailer (printable ASCII only)."""
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    FAILED_PRECONDITION = "failed_precondition"
    NOT_FOUND = "not_found"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DATA_LOSS = "data_loss"
    INTERNAL = "internal"


class TaskpassError(Exception):
    """Root of every error the server domain raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, str] = dict(details or {})


class InvalidRequest(TaskpassError):
    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", details={"field": field})
        self.field = field


class AttestationFailed(TaskpassError):
    """The peer's certificate or token did not prove a workload identity.

    `rule` names the DESIGN.md rule that failed (ID-2, X-3, J-9, ...) so tests and operators can
    tell exactly which check it was.
    """

    code = ErrorCode.UNAUTHENTICATED

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"attestation failed [{rule}]: {message}", details={"rule": rule})
        self.rule = rule


class PermissionDenied(TaskpassError):
    code = ErrorCode.PERMISSION_DENIED


class PolicyDenied(PermissionDenied):
    def __init__(self, message: str, *, decision_id: str, matched_rules: tuple[str, ...]) -> None:
        rules = ",".join(matched_rules) or "(no rule matched: default deny)"
        super().__init__(
            f"{message} (decision {decision_id}, rules {rules})",
            details={"decision_id": decision_id, "matched_rules": ",".join(matched_rules)},
        )
        self.decision_id = decision_id
        self.matched_rules = matched_rules


class ApprovalRequired(TaskpassError):
    code = ErrorCode.FAILED_PRECONDITION

    def __init__(
        self,
        *,
        decision_id: str,
        rules: tuple[str, ...],
        approver_groups: tuple[str, ...],
        approval_id: str = "",
    ) -> None:
        message = (
            f"approval required by rule(s) {','.join(rules)} from group(s) "
            f"{','.join(approver_groups)} (decision {decision_id})"
        )
        if approval_id:
            message += f"; approval id {approval_id}"
        super().__init__(
            message,
            details={
                "decision_id": decision_id,
                "matched_rules": ",".join(rules),
                "approver_groups": ",".join(approver_groups),
                "approval_id": approval_id,
            },
        )
        self.decision_id = decision_id
        self.rules = rules
        self.approver_groups = approver_groups
        self.approval_id = approval_id


class Conflict(TaskpassError):
    code = ErrorCode.FAILED_PRECONDITION


class NotFound(TaskpassError):
    code = ErrorCode.NOT_FOUND


class ResourceExhausted(TaskpassError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class Unavailable(TaskpassError):
    code = ErrorCode.UNAVAILABLE


class StoreCorrupted(TaskpassError):
    """A row read from the store holds a value taskpass cannot have written (see
    store/row_guard.py): the database was edited outside taskpass or damaged. Not Unavailable:
    every retry reads the same row, until an operator restores or corrects it."""

    code = ErrorCode.DATA_LOSS


class ConfigError(TaskpassError):
    """A configuration, bundle, key or policy file is wrong. Raised at startup or reload."""

    code = ErrorCode.INVALID_ARGUMENT
