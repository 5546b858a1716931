from __future__ import annotations

from pathlib import Path

import pytest

import taskpass.server.policy as policy_package
from taskpass.server.errors import ConfigError
from taskpass.server.policy.decision import Outcome
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.testing import load_cases, run_cases, run_policy_cases

from .factories import READ_GRANT, engine

POLICY_DIR = Path(next(iter(policy_package.__path__)))


def test_dev_policy_passes_its_cases_file() -> None:
    dev = PolicyEngine.from_file(POLICY_DIR / "dev_policy.yaml")
    results = run_policy_cases(dev, POLICY_DIR / "dev_policy_cases.yaml")
    assert len(results) >= 10
    assert [(r.name, r.differences) for r in results if not r.passed] == []
    outcomes = {r.decision.outcome for r in results}
    assert outcomes == {Outcome.ALLOW, Outcome.DENY, Outcome.PENDING_APPROVAL}


def test_each_difference_is_reported_in_words() -> None:
    cases = load_cases(
        b"""
- name: wrong on every count
  workload: spiffe://example.org/agents/billing-bot
  task: {audience: payments-api, action: read, ttl: 10m}
  expect:
    outcome: pending_approval
    rules: [other.rule]
    ttl_seconds: 60
    scopes: ["payments:write"]
    approvers: [security-approvers]
""",
        source="cases.yaml",
    )
    (result,) = run_cases(engine(READ_GRANT), cases)
    assert not result.passed
    assert result.differences == (
        "outcome: expected pending_approval, got allow (allowed by rule grant.read;"
        " ttl 10m set by the requested ttl)",
        "matched rules: expected [other.rule], got [grant.read]",
        "ttl: expected 60s, got 600s",
        "scopes: expected [payments:write], got [payments:read]",
        "approvers: expected [security-approvers], got none",
    )


def test_only_the_expected_keys_are_compared() -> None:
    cases = load_cases(
        b"""
- name: outcome only
  workload: spiffe://example.org/agents/billing-bot
  task: {audience: payments-api, action: read}
  expect: {outcome: allow}
""",
        source="cases.yaml",
    )
    assert run_cases(engine(READ_GRANT), cases)[0].passed


def test_case_fields_reach_the_request() -> None:
    (case,) = load_cases(
        b"""
- name: everything set
  workload: spiffe://example.org/agents/billing-bot
  method: jwt-svid
  svid_ttl: 30m
  now: "2026-06-01T12:00:00+00:00"
  approved: [approval.write]
  task:
    id: t-7
    audience: payments-api
    action: write
    sensitivity: confidential
    ttl: 5m
    tool: ledger
    environment: prod
    reason: close the month
    attributes: {team: billing}
    deadline_in: 2m
  expect: {outcome: allow}
""",
        source="cases.yaml",
    )
    request = case.request
    assert request.workload.method.value == "jwt-svid"
    assert request.workload.trust_domain == "example.org"
    assert request.workload.expires_at - request.now == request.task.requested_ttl * 6
    assert request.satisfied_approvals == frozenset({"approval.write"})
    assert (request.task.task_id, request.task.environment, request.task.tool) == (
        "t-7",
        "prod",
        "ledger",
    )
    assert request.task.sensitivity.name == "CONFIDENTIAL"
    assert request.task.attributes == {"team": "billing"}
    assert request.task.deadline is not None
    assert (request.task.deadline - request.now).total_seconds() == 120


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"name: x\n", "a cases file is a YAML list", id="not-a-list"),
        pytest.param(b"- workload: x\n", r"case #1 key 'name'", id="no-name"),
        pytest.param(
            b"- name: a\n  workload: w\n  task: {audience: x, action: y}\n  expect: {}\n",
            r"case 'a' key 'expect'",
            id="empty-expect",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  tsk: {}\n  expect: {outcome: allow}\n",
            r"case 'a' key 'tsk': unknown key",
            id="unknown-key",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  task: {audience: x, action: y, ttl: 5x}\n"
            b"  expect: {outcome: allow}\n",
            r"case 'a' key 'task.ttl'",
            id="bad-ttl",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  task: {audience: 'bad aud', action: y}\n"
            b"  expect: {outcome: allow}\n",
            r"case 'a' key 'task.audience'",
            id="invalid-task-field",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  task: {audience: x, action: y}\n"
            b"  expect: {outcome: maybe}\n",
            r"case 'a' key 'expect.outcome': must be one of allow, deny, pending_approval",
            id="bad-outcome",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  now: '2026-06-01T12:00:00'\n"
            b"  task: {audience: x, action: y}\n  expect: {outcome: allow}\n",
            r"case 'a' key 'now': .*timezone",
            id="naive-now",
        ),
        pytest.param(
            b"- name: a\n  workload: w\n  task: {audience: x, action: y}\n"
            b"  expect: {outcome: allow}\n"
            b"- name: a\n  workload: w\n  task: {audience: x, action: y}\n"
            b"  expect: {outcome: allow}\n",
            r"case 'a': name used by an earlier case",
            id="duplicate-name",
        ),
    ],
)
def test_malformed_cases_file_names_the_case_and_key(raw: bytes, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"^cases\.yaml: {expected}"):
        load_cases(raw, source="cases.yaml")


def test_a_delegation_case_reaches_the_request() -> None:
    (case, direct) = load_cases(
        b"""
- name: a tool runner acts for the billing bot
  workload: spiffe://example.org/tools/runner
  delegation:
    depth: 2
    parent: spiffe://example.org/agents/billing-bot
    parent_rules: [grant.read]
  task: {audience: payments-api, action: read}
  expect: {outcome: deny}
- name: a direct exchange
  workload: spiffe://example.org/tools/runner
  task: {audience: payments-api, action: read}
  expect: {outcome: deny}
""",
        source="cases.yaml",
    )
    request = case.request
    assert request.delegation_depth == 2
    assert request.parent_id == "spiffe://example.org/agents/billing-bot"
    assert request.parent_rules == ("grant.read",)
    assert (direct.request.delegation_depth, direct.request.parent_id) == (0, "")


@pytest.mark.parametrize(
    ("delegation", "expected"),
    [
        pytest.param(b"{depth: 1}", r"key 'delegation.parent': required", id="no-parent"),
        pytest.param(b"{parent: p, depth: 0}", r"key 'delegation.depth'", id="depth-zero"),
        pytest.param(b"{parent: p, hops: 1}", r"key 'delegation.hops': unknown", id="unknown"),
        pytest.param(b"[p]", r"key 'delegation': must be a mapping", id="not-a-mapping"),
    ],
)
def test_a_malformed_delegation_case_names_the_key(delegation: bytes, expected: str) -> None:
    raw = (
        b"- name: a\n  workload: w\n  delegation: " + delegation + b"\n"
        b"  task: {audience: x, action: y}\n  expect: {outcome: allow}\n"
    )
    with pytest.raises(ConfigError, match=rf"^cases\.yaml: case 'a' {expected}"):
        load_cases(raw, source="cases.yaml")
