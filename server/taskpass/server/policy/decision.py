"""What a policy decides about one request."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    PENDING_APPROVAL = "pending_approval"


@dataclass(frozen=True, slots=True)
class Decision:
    """A decision carries everything needed to explain it later.

    `ttl` is the lifetime the credential may have (least of requested, caps, grants, deadline and
    the caller's SVID expiry); it is meaningful for ALLOW and PENDING_APPROVAL.
    `approval_rules` / `approver_groups` are set for PENDING_APPROVAL.
    """

    outcome: Outcome
    policy_version: str
    matched_rules: tuple[str, ...]
    ttl: dt.timedelta
    scopes: tuple[str, ...] = ()
    approval_rules: tuple[str, ...] = ()
    approver_groups: tuple[str, ...] = ()
    reason: str = ""
