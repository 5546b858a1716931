"""Builders for policy tests: requests from real Workload/TaskDescriptor values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap

from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
AGENT = "spiffe://example.org/agents/billing-bot"


def make_workload(**changes: object) -> Workload:
    workload = Workload(
        id=AGENT,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=NOW + dt.timedelta(hours=1),
    )
    return dataclasses.replace(workload, **changes)  # type: ignore[arg-type]


def make_task(**changes: object) -> TaskDescriptor:
    task = TaskDescriptor(
        task_id="task-1",
        audience="payments-api",
        action="read",
        sensitivity=Sensitivity.INTERNAL,
        requested_ttl=dt.timedelta(minutes=10),
    )
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def make_request(
    *,
    workload: Workload | None = None,
    approved: frozenset[str] = frozenset(),
    now: dt.datetime = NOW,
    **task_changes: object,
) -> PolicyRequest:
    return PolicyRequest(
        workload=workload or make_workload(),
        task=make_task(**task_changes),
        now=now,
        satisfied_approvals=approved,
    )


def policy_yaml(rules: str, *, version: str = "test-1") -> bytes:
    """A document from an indented block of rules (the list items under `rules:`)."""
    return (
        f'version: "{version}"\nrules:\n' + textwrap.indent(textwrap.dedent(rules), "  ")
    ).encode()


def engine(rules: str) -> PolicyEngine:
    return PolicyEngine.from_yaml(policy_yaml(rules), source="test.yaml")


READ_GRANT = """
- id: grant.read
  effect: grant
  workload: "spiffe://example.org/agents/*"
  audience: payments-api
  actions: [read]
  max_ttl: 15m
  scopes: ["payments:read"]
"""
