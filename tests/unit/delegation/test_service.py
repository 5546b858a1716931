"""The exchange's view of a hop: what policy is told, how its decision is held inside the parent,
what the issuer sees and what the audit trail records."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from taskpass.server.delegation.chain import Hop, ParentCredential, plan_hop
from taskpass.server.delegation.service import audit, bound, narrow, policy_request
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ROOT = "spiffe://example.org/agents/billing-bot"
RUNNER = "spiffe://example.org/tools/runner"
SUB = "spiffe://example.org/tools/sub"
PARENT_LEFT = dt.timedelta(minutes=5)


def workload(spiffe_id: str = SUB, *, svid_left: dt.timedelta = dt.timedelta(hours=1)) -> Workload:
    return Workload(
        id=spiffe_id,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=NOW + svid_left,
        cert_thumbprint="sub-thumb",
    )


TASK = TaskDescriptor(
    task_id="t-1",
    audience="payments-api",
    action="read",
    sensitivity=Sensitivity.INTERNAL,
    requested_ttl=dt.timedelta(minutes=2),
)


def hop(requested: tuple[str, ...] = ()) -> Hop:
    """A second hop: the runner (under the billing bot) hands on to SUB."""
    parent = ParentCredential.from_claims(
        {
            "jti": "runner-jti",
            "sub": ROOT,
            "client_id": RUNNER,
            "aud": "payments-api",
            "scope": "payments:read payments:list",
            "txn": "t-1",
            "exp": int((NOW + PARENT_LEFT).timestamp()),
            "act": {"sub": RUNNER},
            "cnf": {"x5t#S256": "runner-thumb"},
            "task": {"rules": ["grant.delegated"], "action": "read", "sensitivity": "internal"},
        }
    )
    return plan_hop(
        parent, caller=workload(), task=TASK, requested_scopes=requested, max_depth=3, now=NOW
    )


def decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = {
        "outcome": Outcome.ALLOW,
        "policy_version": "sha256:p",
        "matched_rules": ("grant.delegated",),
        "ttl": dt.timedelta(minutes=2),
        "scopes": ("payments:list", "payments:read", "payments:write"),
        "reason": "allowed by rule grant.delegated",
    }
    fields.update(overrides)
    return Decision(**fields)


def test_policy_is_told_the_depth_the_parents_holder_and_its_rules() -> None:
    request = policy_request(workload(), TASK, NOW, hop())

    assert (request.delegation_depth, request.parent_id) == (2, RUNNER)
    assert request.parent_rules == ("grant.delegated",)
    direct = policy_request(workload(), TASK, NOW, None, frozenset({"approval.x"}))
    assert (direct.delegation_depth, direct.parent_id, direct.parent_rules) == (0, "", ())
    assert direct.satisfied_approvals == {"approval.x"}


@pytest.mark.parametrize(
    ("requested", "granted", "expected"),
    [
        pytest.param((), ("payments:read", "payments:write"), ("payments:read",), id="parent"),
        pytest.param(("payments:list",), None, ("payments:list",), id="requested"),
    ],
)
def test_the_decision_keeps_only_scopes_both_the_policy_and_the_hop_allow(
    requested: tuple[str, ...], granted: tuple[str, ...] | None, expected: tuple[str, ...]
) -> None:
    decided = decision() if granted is None else decision(scopes=granted)

    narrowed = narrow(decided, hop(requested), NOW)

    assert narrowed.outcome is Outcome.ALLOW
    assert narrowed.scopes == expected
    assert "narrowed to the parent credential" in narrowed.reason


def test_nothing_in_common_is_a_deny_that_says_so() -> None:
    narrowed = narrow(decision(scopes=("ledger:audit",)), hop(), NOW)

    assert narrowed.outcome is Outcome.DENY
    assert narrowed.scopes == ()
    assert narrowed.matched_rules == ("grant.delegated",)
    assert narrowed.reason == (
        "delegation can only narrow, and nothing is left: the policy grants ledger:audit, "
        "the parent credential allows at most payments:list payments:read"
    )


def test_a_pending_decision_with_nothing_in_common_asks_no_approver() -> None:
    pending = decision(
        outcome=Outcome.PENDING_APPROVAL,
        scopes=("ledger:audit",),
        approval_rules=("approval.x",),
        approver_groups=("security-approvers",),
    )

    narrowed = narrow(pending, hop(), NOW)

    assert narrowed.outcome is Outcome.DENY
    assert (narrowed.approval_rules, narrowed.approver_groups) == ((), ())


def test_the_lifetime_never_passes_the_parents_expiry() -> None:
    narrowed = narrow(decision(ttl=dt.timedelta(minutes=30)), hop(), NOW + dt.timedelta(seconds=1))

    assert narrowed.ttl == PARENT_LEFT - dt.timedelta(seconds=1)
    assert "ttl 299s set by the parent" in narrowed.reason


def test_a_parent_expiring_now_leaves_no_lifetime_to_give() -> None:
    late = NOW + PARENT_LEFT - dt.timedelta(milliseconds=500)

    narrowed = narrow(decision(), hop(), late)

    assert narrowed.outcome is Outcome.DENY
    assert "expires now" in narrowed.reason


def test_a_deny_stays_as_the_policy_wrote_it() -> None:
    denied = decision(outcome=Outcome.DENY, scopes=(), reason="denied by rule deny.x")

    assert narrow(denied, hop(), NOW) is denied


def test_a_decision_already_inside_the_parent_is_left_as_it_is() -> None:
    inside = decision(scopes=("payments:read",))

    assert narrow(inside, hop(), NOW) is inside


@pytest.mark.parametrize(
    ("svid_left", "expected"),
    [
        pytest.param(dt.timedelta(hours=1), NOW + PARENT_LEFT, id="parent-ends-first"),
        pytest.param(dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=1), id="svid-first"),
    ],
)
def test_the_issuer_sees_the_caller_expiring_no_later_than_the_parent(
    svid_left: dt.timedelta, expected: dt.datetime
) -> None:
    caller = workload(svid_left=svid_left)

    assert bound(caller, hop()).expires_at == expected
    assert bound(caller, None) is caller


def test_the_audit_names_the_parent_the_depth_and_the_chain_back_to_the_principal() -> None:
    assert audit(hop()) == {
        "parent_jti": "runner-jti",
        "parent_holder": RUNNER,
        "principal": ROOT,
        "depth": 2,
        "chain": [SUB, RUNNER, ROOT],
        "parent_rules": ["grant.delegated"],
    }
