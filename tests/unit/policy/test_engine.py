from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskpass.server.errors import ConfigError
from taskpass.server.policy.decision import Outcome
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.tasks.descriptor import Sensitivity

from .factories import NOW, READ_GRANT, engine, make_request, make_workload, policy_yaml

DENY_DELETE = """
- id: deny.delete
  effect: deny
  actions: [delete]
"""
APPROVAL_WRITE = """
- id: approval.write
  effect: require_approval
  audience: payments-api
  actions: [write]
  approvers: [security-approvers]
"""
WRITE_GRANT = """
- id: grant.write
  effect: grant
  workload: "spiffe://example.org/agents/billing-bot"
  audience: payments-api
  actions: [write, delete]
  scopes: ["payments:write"]
"""


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        pytest.param("task.sensitivty <= 1", r"undeclared reference", id="typo"),
        pytest.param('task.sensitivity == "high"', r"no matching overload", id="type-error"),
        pytest.param("task.ttl_seconds", r"must be a boolean", id="non-bool"),
    ],
)
def test_bad_condition_fails_the_load_naming_the_rule(when: str, expected: str) -> None:
    rules = f"""
- id: grant.read
  effect: grant
  scopes: [a]
- id: deny.bad
  effect: deny
  when: '{when}'
"""
    with pytest.raises(
        ConfigError, match=rf"^test\.yaml: rule 'deny.bad' key 'when': .*{expected}"
    ):
        engine(rules)


def test_version_is_the_content_hash_and_changes_with_the_document() -> None:
    first = PolicyEngine.from_yaml(policy_yaml(READ_GRANT), source="a")
    same = PolicyEngine.from_yaml(policy_yaml(READ_GRANT), source="b")
    changed = PolicyEngine.from_yaml(policy_yaml(READ_GRANT.replace("15m", "10m")), source="a")
    assert first.version.startswith("sha256:")
    assert first.version == same.version
    assert first.version != changed.version
    assert first.decide(make_request()).policy_version == first.version


def test_from_file_reads_the_document(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(policy_yaml(READ_GRANT))
    assert PolicyEngine.from_file(path).decide(make_request()).outcome is Outcome.ALLOW


# --- combining -----------------------------------------------------------------------------


def test_matching_grant_allows_with_its_scopes_and_rule() -> None:
    decision = engine(READ_GRANT).decide(make_request())
    assert decision.outcome is Outcome.ALLOW
    assert decision.matched_rules == ("grant.read",)
    assert decision.scopes == ("payments:read",)
    assert decision.reason.startswith("allowed by rule grant.read")


def test_no_matching_grant_is_a_default_deny_that_says_what_was_asked() -> None:
    decision = engine(READ_GRANT).decide(make_request(action="write"))
    assert decision.outcome is Outcome.DENY
    assert decision.matched_rules == ()
    assert decision.ttl == dt.timedelta(0)
    assert decision.reason == "no grant matched audience payments-api action write"


def test_matched_deny_wins_over_a_matched_grant() -> None:
    decision = engine(WRITE_GRANT + DENY_DELETE).decide(make_request(action="delete"))
    assert decision.outcome is Outcome.DENY
    assert decision.matched_rules == ("grant.write", "deny.delete")
    assert decision.reason == "denied by rule deny.delete"
    assert decision.scopes == ()


def test_deny_wins_over_a_pending_approval() -> None:
    rules = WRITE_GRANT + APPROVAL_WRITE + DENY_DELETE.replace("[delete]", "[write]")
    assert engine(rules).decide(make_request(action="write")).outcome is Outcome.DENY


def test_unsatisfied_approval_rule_makes_the_decision_pending() -> None:
    decision = engine(WRITE_GRANT + APPROVAL_WRITE).decide(make_request(action="write"))
    assert decision.outcome is Outcome.PENDING_APPROVAL
    assert decision.approval_rules == ("approval.write",)
    assert decision.approver_groups == ("security-approvers",)
    assert decision.matched_rules == ("grant.write", "approval.write")
    assert decision.scopes == ("payments:write",)
    assert decision.ttl == dt.timedelta(minutes=10)


def test_satisfied_approval_allows() -> None:
    decision = engine(WRITE_GRANT + APPROVAL_WRITE).decide(
        make_request(action="write", approved=frozenset({"approval.write"}))
    )
    assert decision.outcome is Outcome.ALLOW
    assert decision.approval_rules == ()


def test_only_the_unsatisfied_approval_rules_stay_pending() -> None:
    second = APPROVAL_WRITE.replace("approval.write", "approval.finance").replace(
        "security-approvers", "finance-approvers"
    )
    decision = engine(WRITE_GRANT + APPROVAL_WRITE + second).decide(
        make_request(action="write", approved=frozenset({"approval.write"}))
    )
    assert decision.outcome is Outcome.PENDING_APPROVAL
    assert decision.approval_rules == ("approval.finance",)
    assert decision.approver_groups == ("finance-approvers",)


def test_approval_without_a_grant_is_still_a_deny() -> None:
    decision = engine(READ_GRANT + APPROVAL_WRITE).decide(make_request(action="write"))
    assert decision.outcome is Outcome.DENY
    assert decision.matched_rules == ("approval.write",)


def test_scopes_are_the_sorted_union_of_every_matched_grant() -> None:
    extra = """
- id: grant.audit
  effect: grant
  audience: payments-api
  scopes: ["payments:audit", "payments:read"]
"""
    decision = engine(READ_GRANT + extra).decide(make_request())
    assert decision.scopes == ("payments:audit", "payments:read")
    assert decision.matched_rules == ("grant.read", "grant.audit")


def test_matched_rules_follow_document_order() -> None:
    rules = """
- id: z.cap
  effect: cap
  max_ttl: 1h
- id: a.grant
  effect: grant
  scopes: [s]
- id: m.cap
  effect: cap
  max_ttl: 2h
"""
    assert engine(rules).decide(make_request()).matched_rules == ("z.cap", "a.grant", "m.cap")


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        pytest.param({}, Outcome.ALLOW, id="all-match"),
        pytest.param({"audience": "reports-api"}, Outcome.DENY, id="other-audience"),
        pytest.param({"action": "write"}, Outcome.DENY, id="other-action"),
        pytest.param(
            {"workload": make_workload(id="spiffe://example.org/agents/team/bot")},
            Outcome.DENY,
            id="workload-too-deep",
        ),
        pytest.param(
            {"workload": make_workload(id="spiffe://example.org/humans/alice")},
            Outcome.DENY,
            id="other-workload",
        ),
    ],
)
def test_structural_matchers_all_must_match(changes: dict[str, object], outcome: Outcome) -> None:
    assert engine(READ_GRANT).decide(make_request(**changes)).outcome is outcome  # type: ignore[arg-type]


def test_mapped_certificate_identity_matches_exactly() -> None:
    rules = """
- id: grant.legacy
  effect: grant
  workload: legacy-batch
  scopes: [s]
"""
    legacy = make_workload(id="legacy-batch", trust_domain="")
    assert engine(rules).decide(make_request(workload=legacy)).outcome is Outcome.ALLOW
    other = make_workload(id="legacy-batch-2", trust_domain="")
    assert engine(rules).decide(make_request(workload=other)).outcome is Outcome.DENY


def test_condition_decides_whether_a_rule_matches() -> None:
    rules = READ_GRANT + "  when: task.sensitivity <= internal\n"
    policy = engine(rules)
    assert policy.decide(make_request(sensitivity=Sensitivity.INTERNAL)).outcome is Outcome.ALLOW
    denied = policy.decide(make_request(sensitivity=Sensitivity.CONFIDENTIAL))
    assert denied.outcome is Outcome.DENY
    assert denied.matched_rules == ()


# --- ttl -----------------------------------------------------------------------------------

TTL_RULES = """
- id: grant.read
  effect: grant
  scopes: [s]
  max_ttl: 20m
- id: cap.prod
  effect: cap
  when: task.environment == "prod"
  max_ttl: 5m
"""


@pytest.mark.parametrize(
    ("request_kwargs", "expected", "limited_by"),
    [
        pytest.param(
            {"requested_ttl": dt.timedelta(minutes=3)},
            dt.timedelta(minutes=3),
            "the requested ttl",
            id="requested",
        ),
        pytest.param(
            {"requested_ttl": dt.timedelta(hours=1)},
            dt.timedelta(minutes=20),
            "rule grant.read",
            id="grant-max-ttl",
        ),
        pytest.param(
            {"requested_ttl": dt.timedelta(hours=1), "environment": "prod"},
            dt.timedelta(minutes=5),
            "rule cap.prod",
            id="cap",
        ),
        pytest.param(
            {"requested_ttl": dt.timedelta(hours=1), "deadline": NOW + dt.timedelta(minutes=2)},
            dt.timedelta(minutes=2),
            "the task deadline",
            id="deadline",
        ),
        pytest.param(
            {
                "requested_ttl": dt.timedelta(hours=1),
                "workload": make_workload(expires_at=NOW + dt.timedelta(seconds=90)),
            },
            dt.timedelta(seconds=90),
            "the caller's SVID expiry",
            id="svid-expiry",
        ),
        pytest.param(
            {
                "requested_ttl": dt.timedelta(hours=1),
                "deadline": NOW + dt.timedelta(seconds=61, microseconds=900_000),
            },
            dt.timedelta(seconds=61),
            "the task deadline",
            id="rounded-down-to-whole-seconds",
        ),
    ],
)
def test_ttl_is_the_least_of_each_source(
    request_kwargs: dict[str, object], expected: dt.timedelta, limited_by: str
) -> None:
    decision = engine(TTL_RULES).decide(make_request(**request_kwargs))  # type: ignore[arg-type]
    assert decision.outcome is Outcome.ALLOW
    assert decision.ttl == expected
    assert f"set by {limited_by}" in decision.reason


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        pytest.param(
            {"deadline": NOW - dt.timedelta(seconds=1)}, "the task deadline has passed", id="past"
        ),
        pytest.param({"deadline": NOW}, "the task deadline has passed", id="deadline-now"),
        pytest.param(
            {"deadline": NOW + dt.timedelta(milliseconds=500)},
            "the task deadline has passed",
            id="under-a-second",
        ),
        pytest.param(
            {"workload": make_workload(expires_at=NOW - dt.timedelta(minutes=1))},
            "the caller's SVID expiry has passed",
            id="svid-expired",
        ),
    ],
)
def test_no_lifetime_left_is_a_deny(request_kwargs: dict[str, object], reason: str) -> None:
    decision = engine(TTL_RULES).decide(make_request(**request_kwargs))  # type: ignore[arg-type]
    assert decision.outcome is Outcome.DENY
    assert decision.ttl == dt.timedelta(0)
    assert reason in decision.reason


@settings(max_examples=200, deadline=None)
@given(
    requested=st.integers(min_value=1, max_value=24 * 3600),
    caps=st.lists(st.integers(min_value=1, max_value=24 * 3600), max_size=4),
    grant_ttl=st.one_of(st.none(), st.integers(min_value=1, max_value=24 * 3600)),
    deadline=st.one_of(st.none(), st.integers(min_value=-100, max_value=30 * 3600)),
    svid_left=st.integers(min_value=-100, max_value=30 * 3600),
)
def test_ttl_never_exceeds_the_request_or_any_matched_limit(
    requested: int, caps: list[int], grant_ttl: int | None, deadline: int | None, svid_left: int
) -> None:
    rules = "- id: grant\n  effect: grant\n  scopes: [s]\n"
    if grant_ttl is not None:
        rules += f"  max_ttl: {grant_ttl}s\n"
    for i, cap in enumerate(caps):
        rules += f"- id: cap{i}\n  effect: cap\n  max_ttl: {cap}s\n"
    request = make_request(
        requested_ttl=dt.timedelta(seconds=requested),
        deadline=None if deadline is None else NOW + dt.timedelta(seconds=deadline),
        workload=make_workload(expires_at=NOW + dt.timedelta(seconds=svid_left)),
    )
    decision = engine(rules).decide(request)
    ttl = int(decision.ttl.total_seconds())
    assert decision.ttl.microseconds == 0
    assert ttl <= requested
    assert all(ttl <= cap for cap in caps)
    assert grant_ttl is None or ttl <= grant_ttl
    assert deadline is None or ttl <= max(deadline, 0)
    assert ttl <= max(svid_left, 0)
    if decision.outcome is Outcome.ALLOW:
        assert ttl >= 1
    else:
        assert ttl == 0


# --- runtime errors fail closed -------------------------------------------------------------

MISSING_ATTRIBUTE = 'task.attributes["team"] == "billing"'


@pytest.mark.parametrize(
    ("rules", "outcome", "matched"),
    [
        pytest.param(
            READ_GRANT + f"- id: deny.team\n  effect: deny\n  when: '{MISSING_ATTRIBUTE}'\n",
            Outcome.DENY,
            ("grant.read", "deny.team"),
            id="deny-matches",
        ),
        pytest.param(
            READ_GRANT
            + "- id: approval.team\n  effect: require_approval\n  approvers: [g]\n"
            + f"  when: '{MISSING_ATTRIBUTE}'\n",
            Outcome.PENDING_APPROVAL,
            ("grant.read", "approval.team"),
            id="approval-matches",
        ),
        pytest.param(
            f"- id: grant.team\n  effect: grant\n  scopes: [s]\n  when: '{MISSING_ATTRIBUTE}'\n",
            Outcome.DENY,
            (),
            id="grant-does-not-match",
        ),
        pytest.param(
            READ_GRANT
            + f"- id: cap.team\n  effect: cap\n  max_ttl: 1m\n  when: '{MISSING_ATTRIBUTE}'\n",
            Outcome.ALLOW,
            ("grant.read", "cap.team"),
            id="cap-matches",  # the shorter lifetime: not applying it would fail open
        ),
    ],
)
def test_condition_error_at_runtime_fails_closed(
    rules: str, outcome: Outcome, matched: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        decision = engine(rules).decide(make_request())
    assert decision.outcome is outcome
    assert decision.matched_rules == matched
    assert "failed to evaluate" in decision.reason
    assert "fail closed" in decision.reason
    assert "Key not found" in caplog.text  # the detail goes to the log, not to the caller
    assert "Key not found" not in decision.reason


def test_one_failing_condition_does_not_spoil_the_others_in_a_combined_program() -> None:
    rules = (
        READ_GRANT
        + "  when: task.sensitivity <= internal\n"
        + f"- id: grant.team\n  effect: grant\n  scopes: [t]\n  when: '{MISSING_ATTRIBUTE}'\n"
        + "- id: cap.internal\n  effect: cap\n  max_ttl: 2m\n  when: task.sensitivity == internal\n"
    )
    policy = engine(rules)
    failing = policy.decide(make_request())
    assert failing.outcome is Outcome.ALLOW
    assert failing.matched_rules == ("grant.read", "cap.internal")
    assert failing.ttl == dt.timedelta(minutes=2)
    working = policy.decide(make_request(attributes={"team": "billing"}))
    assert working.matched_rules == ("grant.read", "grant.team", "cap.internal")
    assert "failed to evaluate" not in working.reason


def test_repeated_decisions_are_identical() -> None:
    # plans and digested matches are cached; the second answer must equal the first
    policy = engine(WRITE_GRANT + APPROVAL_WRITE + READ_GRANT + "  when: task.sensitivity < 2\n")
    for changes in ({"action": "write"}, {}, {"sensitivity": Sensitivity.RESTRICTED}):
        first = policy.decide(make_request(**changes))
        assert policy.decide(make_request(**changes)) == first
