"""`taskpass policy test`: run a file of cases with expected decisions against a policy.

A cases file is a YAML list; each case names a caller, a task and what the policy must decide:

    - name: billing bot reads payments
      workload: spiffe://example.org/agents/billing-bot
      method: x509-svid            # optional: x509-svid (default), jwt-svid, mtls-cert
      svid_ttl: 1h                 # optional: the caller's SVID expires this long after `now`
      now: "2026-06-01T12:00:00Z"  # optional; a fixed default keeps runs reproducible
      approved: [approval.x]       # optional: require_approval rules already satisfied
      delegation:                  # optional: the request delegates a parent credential
        depth: 1                   # hops below a directly issued credential (default 1)
        parent: spiffe://example.org/agents/billing-bot   # who holds the parent (required)
        parent_rules: [grant.x]    # the rules that allowed the parent (default none)
      task:
        audience: payments-api     # required
        action: read               # required
        sensitivity: internal      # optional, default public
        ttl: 10m                   # optional, default 10m
        id, tool, environment, reason, attributes, deadline_in (e.g. 2m)   # optional
      expect:                      # only the keys given are compared
        outcome: allow             # allow | deny | pending_approval
        rules: [grant.x]           # matched rule ids, in document order
        ttl_seconds: 600
        scopes: ["payments:read"]
        approvers: [security-approvers]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.errors import ConfigError, InvalidRequest
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.policy.durations import parse_duration
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.policy.safe_yaml import load_yaml, read_bounded
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

DEFAULT_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEFAULT_SVID_TTL = dt.timedelta(hours=1)
DEFAULT_TASK_TTL = dt.timedelta(minutes=10)
MAX_CASES = 10_000

_CASE_KEYS = frozenset(
    {"name", "workload", "method", "svid_ttl", "now", "approved", "delegation", "task", "expect"}
)
_DELEGATION_KEYS = frozenset({"depth", "parent", "parent_rules"})
_TASK_KEYS = frozenset(
    {
        "id",
        "audience",
        "action",
        "sensitivity",
        "ttl",
        "tool",
        "environment",
        "reason",
        "attributes",
        "deadline_in",
        "orchestrator",
    }
)
_EXPECT_KEYS = frozenset({"outcome", "rules", "ttl_seconds", "scopes", "approvers"})


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a case expects; None means "not checked"."""

    outcome: Outcome | None = None
    rules: tuple[str, ...] | None = None
    ttl_seconds: int | None = None
    scopes: tuple[str, ...] | None = None
    approvers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PolicyCase:
    name: str
    request: PolicyRequest
    expect: Expectation


@dataclass(frozen=True, slots=True)
class CaseResult:
    """`differences` says, in words, each way the decision differs from the expectation."""

    name: str
    decision: Decision
    differences: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.differences


def run_policy_cases(engine: PolicyEngine, cases_path: Path | str) -> list[CaseResult]:
    """Load a cases file and run every case; raise ConfigError if the file is malformed."""
    path = Path(cases_path)
    return run_cases(engine, load_cases(read_bounded(path), source=str(path)))


def run_cases(engine: PolicyEngine, cases: Sequence[PolicyCase]) -> list[CaseResult]:
    results = []
    for case in cases:
        decision = engine.decide(case.request)
        results.append(CaseResult(case.name, decision, _compare(case.expect, decision)))
    return results


def load_cases(raw: bytes, *, source: str) -> list[PolicyCase]:
    data = load_yaml(raw, source=source)
    if not isinstance(data, list):
        raise ConfigError(f"{source}: a cases file is a YAML list of cases")
    if len(data) > MAX_CASES:
        raise ConfigError(f"{source}: more than {MAX_CASES} cases; split the file")
    cases: list[PolicyCase] = []
    names: set[str] = set()
    for index, item in enumerate(data):
        case = _parse_case(item, index=index, source=source)
        if case.name in names:
            raise ConfigError(f"{source}: case {case.name!r}: name used by an earlier case too")
        names.add(case.name)
        cases.append(case)
    return cases


class _CaseError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"key {key!r}: {problem}")


def _parse_case(item: object, *, index: int, source: str) -> PolicyCase:
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: case #{index + 1} must be a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: case #{index + 1} key 'name': required, a string")
    try:
        return PolicyCase(name, _parse_request(item, index), _parse_expect(item.get("expect")))
    except _CaseError as exc:
        raise ConfigError(f"{source}: case {name!r} {exc}") from None


def _check_keys(data: Mapping[object, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise _CaseError(
            f"{where}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
        )


def _parse_request(item: Mapping[object, object], index: int) -> PolicyRequest:
    _check_keys(item, _CASE_KEYS, "")
    now = _timestamp(item.get("now", DEFAULT_NOW), "now")
    workload_id = item.get("workload")
    if not isinstance(workload_id, str) or not workload_id:
        raise _CaseError("workload", "required: the caller's identity, e.g. a SPIFFE ID")
    try:
        method = AttestationMethod(item.get("method", AttestationMethod.X509_SVID.value))
    except ValueError:
        allowed = ", ".join(m.value for m in AttestationMethod)
        raise _CaseError("method", f"must be one of {allowed}") from None
    trust_domain = ""
    if workload_id.startswith("spiffe://"):
        trust_domain = workload_id[len("spiffe://") :].partition("/")[0]
    svid_ttl = _duration(item.get("svid_ttl"), "svid_ttl", DEFAULT_SVID_TTL)
    workload = Workload(
        id=workload_id, method=method, trust_domain=trust_domain, expires_at=now + svid_ttl
    )
    approved = _strings(item.get("approved", []), "approved")
    depth, parent, parent_rules = _parse_delegation(item.get("delegation"))
    return PolicyRequest(
        workload=workload,
        task=_parse_task(item.get("task"), now, index),
        now=now,
        satisfied_approvals=frozenset(approved),
        delegation_depth=depth,
        parent_id=parent,
        parent_rules=parent_rules,
    )


def _parse_delegation(data: object) -> tuple[int, str, tuple[str, ...]]:
    """(depth, parent holder, parent rules); (0, "", ()) for a direct exchange."""
    if data is None:
        return 0, "", ()
    if not isinstance(data, dict):
        raise _CaseError("delegation", "must be a mapping with at least parent")
    _check_keys(data, _DELEGATION_KEYS, "delegation.")
    depth = data.get("depth", 1)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise _CaseError("delegation.depth", "must be a whole number of hops, at least 1")
    parent = data.get("parent")
    if not isinstance(parent, str) or not parent:
        raise _CaseError("delegation.parent", "required: the identity holding the parent")
    return depth, parent, _strings(data.get("parent_rules", []), "delegation.parent_rules")


def _parse_task(data: object, now: dt.datetime, index: int) -> TaskDescriptor:
    if not isinstance(data, dict):
        raise _CaseError("task", "required: a mapping with at least audience and action")
    _check_keys(data, _TASK_KEYS, "task.")
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise _CaseError("task.attributes", "must map strings to strings (quote the values)")
    deadline = None
    if "deadline_in" in data:
        deadline = now + _duration(data["deadline_in"], "task.deadline_in", None)
    try:
        return TaskDescriptor(
            task_id=_text(data.get("id", f"case-{index + 1}"), "task.id"),
            audience=_text(data.get("audience", ""), "task.audience"),
            action=_text(data.get("action", ""), "task.action"),
            sensitivity=Sensitivity.parse(_text(data.get("sensitivity", "public"), "sensitivity")),
            requested_ttl=_duration(data.get("ttl"), "task.ttl", DEFAULT_TASK_TTL),
            tool=_text(data.get("tool", ""), "task.tool"),
            environment=_text(data.get("environment", ""), "task.environment"),
            deadline=deadline,
            reason=_text(data.get("reason", ""), "task.reason"),
            attributes=attributes,
            orchestrator=_text(data.get("orchestrator", ""), "task.orchestrator"),
        )
    except InvalidRequest as exc:
        raise _CaseError(f"task.{exc.field}", exc.message.removeprefix(f"{exc.field}: ")) from None


def _parse_expect(data: object) -> Expectation:
    if not isinstance(data, dict) or not data:
        raise _CaseError("expect", "required: a mapping with at least outcome")
    _check_keys(data, _EXPECT_KEYS, "expect.")
    outcome = None
    if "outcome" in data:
        try:
            outcome = Outcome(data["outcome"])
        except ValueError:
            allowed = ", ".join(o.value for o in Outcome)
            raise _CaseError("expect.outcome", f"must be one of {allowed}") from None
    ttl = data.get("ttl_seconds")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
        raise _CaseError("expect.ttl_seconds", "must be a whole number of seconds")

    def optional_list(key: str) -> tuple[str, ...] | None:
        return _strings(data[key], f"expect.{key}") if key in data else None

    return Expectation(
        outcome=outcome,
        rules=optional_list("rules"),
        ttl_seconds=ttl,
        scopes=optional_list("scopes"),
        approvers=optional_list("approvers"),
    )


def _compare(expect: Expectation, decision: Decision) -> tuple[str, ...]:
    differences: list[str] = []
    if expect.outcome is not None and expect.outcome is not decision.outcome:
        differences.append(
            f"outcome: expected {expect.outcome.value}, got {decision.outcome.value}"
            f" ({decision.reason})"
        )
    if expect.rules is not None and expect.rules != decision.matched_rules:
        differences.append(
            f"matched rules: expected {_listing(expect.rules)},"
            f" got {_listing(decision.matched_rules)}"
        )
    actual_ttl = int(decision.ttl.total_seconds())
    if expect.ttl_seconds is not None and expect.ttl_seconds != actual_ttl:
        differences.append(f"ttl: expected {expect.ttl_seconds}s, got {actual_ttl}s")
    if expect.scopes is not None and sorted(expect.scopes) != sorted(decision.scopes):
        differences.append(
            f"scopes: expected {_listing(expect.scopes)}, got {_listing(decision.scopes)}"
        )
    if expect.approvers is not None and sorted(expect.approvers) != sorted(
        decision.approver_groups
    ):
        differences.append(
            f"approvers: expected {_listing(expect.approvers)},"
            f" got {_listing(decision.approver_groups)}"
        )
    return tuple(differences)


def _listing(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]" if items else "none"


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _CaseError(key, "must be a string (quote it)")
    return value


def _strings(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _CaseError(key, "must be a list of strings")
    return tuple(value)


def _duration(value: object, key: str, default: dt.timedelta | None) -> dt.timedelta:
    if value is None and default is not None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _CaseError(key, str(exc)) from None


def _timestamp(value: object, key: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _CaseError(key, "must be an ISO 8601 timestamp with a timezone") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise _CaseError(key, "must be an ISO 8601 timestamp with a timezone")
    return value
