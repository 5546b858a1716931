"""Approvals on the real SQLite store with a fixed clock: no mocks, no sleeps."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.approvals.service import Approvals
from taskpass.server.clock import FixedClock
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.store.sqlite import SqliteStore
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(minutes=15)
AGENT = "spiffe://example.org/agents/billing-bot"
ALICE = "spiffe://example.org/humans/approvers/alice"
BOB = "spiffe://example.org/humans/approvers/bob"
ONCALL = "spiffe://example.org/platform/oncall"
GROUPS = {
    "security-approvers": ["spiffe://example.org/humans/approvers/*"],
    "platform-approvers": ["spiffe://example.org/platform/*"],
}


def workload(spiffe_id: str = AGENT) -> Workload:
    return Workload(
        id=spiffe_id,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=NOW + dt.timedelta(days=1),
        cert_thumbprint="thumb-" + spiffe_id.rsplit("/", 1)[-1],
    )


def task(**changes: object) -> TaskDescriptor:
    base = TaskDescriptor(
        task_id="t-1",
        audience="payments-api",
        action="write",
        sensitivity=Sensitivity.INTERNAL,
        requested_ttl=dt.timedelta(minutes=5),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def pending_decision(**changes: object) -> Decision:
    base = Decision(
        outcome=Outcome.PENDING_APPROVAL,
        policy_version="sha256:policy",
        matched_rules=("grant.payments.write", "approval.payments.write"),
        ttl=dt.timedelta(minutes=5),
        scopes=("payments:write",),
        approval_rules=("approval.payments.write",),
        approver_groups=("security-approvers",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def allowed(decision: Decision) -> Decision:
    return dataclasses.replace(
        decision, outcome=Outcome.ALLOW, approval_rules=(), approver_groups=()
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "taskpass.db") as opened:
        yield opened


@pytest.fixture
def approvals(store: SqliteStore, clock: FixedClock) -> Approvals:
    return Approvals(store=store, groups=Groups(GROUPS), clock=clock, ttl=TTL)
