"""TaskDescriptor: validated in its constructor, so an invalid task cannot exist."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskpass.server.errors import InvalidRequest, printable
from taskpass.server.identity.spiffe_id import InvalidSpiffeId, parse_spiffe_id
from taskpass.server.store.audit_chain import canonical_json

MAX_TASK_ID = 128
MAX_AUDIENCE = 256
MAX_ACTION = 64
MAX_TOOL = 128
MAX_ENVIRONMENT = 64
MAX_REASON = 1024
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 512
MAX_TTL_SECONDS = 24 * 3600

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
_ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_.-]*")


class Sensitivity(enum.IntEnum):
    """Ordered, so policy can say `task.sensitivity <= 1`."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @classmethod
    def parse(cls, name: str) -> Sensitivity:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            allowed = ", ".join(s.name.lower() for s in cls)
            raise InvalidRequest("sensitivity", f"must be one of {allowed}") from None


def _check_token(field_name: str, value: str, limit: int, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidRequest(field_name, "is required")
        return
    if len(value.encode()) > limit:
        raise InvalidRequest(field_name, f"is longer than {limit} bytes")
    if not _TOKEN.fullmatch(value):
        raise InvalidRequest(
            field_name, "may hold only letters, digits and . _ : / @ + - (starting alphanumeric)"
        )


@dataclass(frozen=True, slots=True)
class TaskDescriptor:
    task_id: str
    audience: str
    action: str
    sensitivity: Sensitivity
    requested_ttl: dt.timedelta
    tool: str = ""
    environment: str = ""
    deadline: dt.datetime | None = None
    reason: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    orchestrator: str = ""
    """The SPIFFE ID of the orchestrator that may complete this task for the requester (optional;
    it must also be in the `orchestrators` group, and policy can refuse tasks that name one)."""

    def __post_init__(self) -> None:
        _check_token("task_id", self.task_id, MAX_TASK_ID)
        _check_token("audience", self.audience, MAX_AUDIENCE)
        _check_token("action", self.action, MAX_ACTION)
        _check_token("tool", self.tool, MAX_TOOL, required=False)
        _check_token("environment", self.environment, MAX_ENVIRONMENT, required=False)
        ttl = self.requested_ttl.total_seconds()
        if ttl <= 0:
            raise InvalidRequest("requested_ttl_seconds", "must be greater than zero")
        if ttl > MAX_TTL_SECONDS:
            raise InvalidRequest("requested_ttl_seconds", f"must be at most {MAX_TTL_SECONDS}")
        if len(self.reason.encode()) > MAX_REASON:
            raise InvalidRequest("reason", f"is longer than {MAX_REASON} bytes")
        if not self.reason.isprintable():
            raise InvalidRequest("reason", "must be printable text on one line")
        if self.orchestrator:
            try:
                parse_spiffe_id(self.orchestrator)
            except InvalidSpiffeId as exc:
                raise InvalidRequest(
                    "orchestrator", f"is not a valid SPIFFE ID: {exc.reason}"
                ) from None
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise InvalidRequest("deadline", "must carry a timezone")
        if len(self.attributes) > MAX_ATTRIBUTES:
            raise InvalidRequest("attributes", f"at most {MAX_ATTRIBUTES} entries")
        for key, value in self.attributes.items():
            if len(key) > MAX_ATTRIBUTE_KEY or not _ATTRIBUTE_KEY.fullmatch(key):
                raise InvalidRequest(
                    f"attributes[{printable(key[:MAX_ATTRIBUTE_KEY])}]",
                    f"key must match [a-z][a-z0-9_.-]* and be at most {MAX_ATTRIBUTE_KEY} bytes",
                )
            if len(value.encode()) > MAX_ATTRIBUTE_VALUE or not value.isprintable():
                raise InvalidRequest(
                    f"attributes[{key}]",
                    f"value must be printable and at most {MAX_ATTRIBUTE_VALUE} bytes",
                )
        # frozen dataclass: store an immutable copy of the attributes
        object.__setattr__(self, "attributes", dict(sorted(self.attributes.items())))

    def as_dict(self) -> dict[str, object]:
        """A JSON-able form, used for audit records and the digest."""
        return {
            "task_id": self.task_id,
            "audience": self.audience,
            "action": self.action,
            "tool": self.tool,
            "sensitivity": self.sensitivity.name.lower(),
            "environment": self.environment,
            "requested_ttl_seconds": int(self.requested_ttl.total_seconds()),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "reason": self.reason,
            "attributes": dict(self.attributes),
            "orchestrator": self.orchestrator,
        }

    def digest(self) -> str:
        """SHA-256 over a canonical JSON form: what an approval and a task record are bound to."""
        return digest_of(self.as_dict())


def digest_of(fields: Mapping[str, object]) -> str:
    """`TaskDescriptor.digest()` of the descriptor whose `as_dict()` is `fields`."""
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()
