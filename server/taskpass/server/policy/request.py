"""What the engine is asked: who, which task, when, and what is already approved."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from taskpass.server.errors import InvalidRequest
from taskpass.server.identity.workload import Workload
from taskpass.server.tasks.descriptor import TaskDescriptor


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One decision's input.

    `satisfied_approvals` holds the ids of require_approval rules an approver has already
    satisfied for this exact request. `delegation_depth`, `parent_id` and `parent_rules` describe a
    delegation: how many hops below a directly issued credential, which workload holds the parent
    credential, and which rules allowed it (0 and empty for a direct exchange).
    """

    workload: Workload
    task: TaskDescriptor
    now: dt.datetime
    satisfied_approvals: frozenset[str] = frozenset()
    delegation_depth: int = 0
    parent_rules: tuple[str, ...] = ()
    parent_id: str = ""

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise InvalidRequest("now", "must carry a timezone")
        if self.delegation_depth < 0:
            raise InvalidRequest("delegation_depth", "must not be negative")
