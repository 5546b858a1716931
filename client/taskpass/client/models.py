"""Typed values the SDK takes and returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

SENSITIVITIES = ("public", "internal", "confidential", "restricted")


@dataclass(frozen=True, slots=True)
class Task:
    """The task about to be performed. The server validates every field and names a bad one."""

    task_id: str
    audience: str
    action: str
    sensitivity: str = "internal"
    ttl: dt.timedelta = dt.timedelta(minutes=10)
    tool: str = ""
    environment: str = ""
    deadline: dt.datetime | None = None
    reason: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    orchestrator: str = ""
    """SPIFFE ID of an orchestrator allowed to complete this task for you (optional)."""


@dataclass(frozen=True, slots=True)
class TaskCredential:
    token: str
    jti: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    scopes: tuple[str, ...]
    decision_id: str
    policy_version: str
    matched_rules: tuple[str, ...]
    approval_id: str = ""
    """Set when an approver allowed this credential (traceable in the audit log)."""

    def as_json(self) -> dict[str, object]:
        return {
            "token": self.token,
            "jti": self.jti,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "scopes": list(self.scopes),
            "decision_id": self.decision_id,
            "policy_version": self.policy_version,
            "matched_rules": list(self.matched_rules),
            "approval_id": self.approval_id,
        }


@dataclass(frozen=True, slots=True)
class Introspection:
    active: bool
    claims: Mapping[str, object]
