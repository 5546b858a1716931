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
    satisfied for this exact request. `delegation_depth` and `parent_rules` describe a delegation
    chain (0 and empty until delegation exists).
    """

    workload: Workload
    task: TaskDescriptor
    now: dt.datetime
    satisfied_approvals: frozenset[str] = frozenset()
    delegation_depth: int = 0
    parent_rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise InvalidRequest("now", "must carry a timezone")
        if self.delegation_depth < 0:
            raise InvalidRequest("delegation_depth", "must not be negative")
