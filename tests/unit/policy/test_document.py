from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.policy.document import MAX_RULES, Effect, parse_policy
from taskpass.server.policy.patterns import PatternKind

from .factories import READ_GRANT, policy_yaml


def test_document_parses_into_frozen_rules() -> None:
    raw = policy_yaml(
        READ_GRANT
        + """
- id: approval.write
  effect: require_approval
  audience: [payments-api, ledger-api]
  approvers: [security-approvers]
- id: cap.prod
  effect: cap
  when: task.environment == "prod"
  max_ttl: 1h30m
"""
    )
    document = parse_policy(raw, source="p.yaml")
    grant, approval, cap = document.rules
    assert document.version_label == "test-1"
    assert (grant.id, grant.effect, grant.audience, grant.actions) == (
        "grant.read",
        Effect.GRANT,
        ("payments-api",),
        ("read",),
    )
    assert grant.scopes == ("payments:read",)
    assert grant.max_ttl == dt.timedelta(minutes=15)
    assert grant.workload_pattern.kind is PatternKind.ONE_SEGMENT
    assert approval.audience == ("payments-api", "ledger-api")
    assert approval.approvers == ("security-approvers",)
    assert approval.workload is None
    assert cap.max_ttl == dt.timedelta(hours=1, minutes=30)
    assert cap.when == 'task.environment == "prod"'
    with pytest.raises(AttributeError):
        grant.id = "other"  # type: ignore[misc]


def test_content_hash_is_sha256_of_the_exact_bytes() -> None:
    raw = policy_yaml(READ_GRANT)
    document = parse_policy(raw)
    assert document.content_hash == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_content_hash_changes_with_any_byte_even_a_comment() -> None:
    raw = policy_yaml(READ_GRANT)
    assert parse_policy(raw).content_hash != parse_policy(raw + b"# reviewed\n").content_hash


def test_empty_rule_list_is_a_valid_deny_everything_policy() -> None:
    assert parse_policy(b"rules: []\n").rules == ()


def _rule(body: str) -> bytes:
    return policy_yaml(body)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param(
            """
- id: r1
  effect: grant
  scopes: [a]
  audiense: payments-api
""",
            r"rule 'r1' key 'audiense': unknown key",
            id="unknown-key",
        ),
        pytest.param(
            READ_GRANT + READ_GRANT,
            r"rule 'grant.read' key 'id': used by an earlier rule",
            id="duplicate-id",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  scopes: [a]
  max_ttl: 15x
""",
            r"rule 'r1' key 'max_ttl': '15x' is not a duration; use forms like 90s",
            id="bad-duration",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  max_ttl: 900
  scopes: [a]
""",
            r"rule 'r1' key 'max_ttl': must be a duration string",
            id="duration-as-number",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  audience: payments-api
""",
            r"rule 'r1' key 'scopes': a grant must list the scopes",
            id="grant-without-scopes",
        ),
        pytest.param(
            """
- id: r1
  effect: require_approval
  actions: [write]
""",
            r"rule 'r1' key 'approvers': .*must list approver groups",
            id="approval-without-approvers",
        ),
        pytest.param(
            """
- id: r1
  effect: cap
  when: task.environment == "prod"
""",
            r"rule 'r1' key 'max_ttl': a cap must set max_ttl",
            id="cap-without-max-ttl",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  scopes: [a]
""",
            r"rule 'r1' key 'scopes': has no meaning on a deny rule",
            id="scopes-on-deny",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  scopes: [a]
  approvers: [g]
""",
            r"rule 'r1' key 'approvers': has no meaning on a grant rule",
            id="approvers-on-grant",
        ),
        pytest.param(
            """
- id: r1
  effect: allow
""",
            r"rule 'r1' key 'effect': must be one of grant, deny, require_approval, cap",
            id="unknown-effect",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  workload: "spiffe://example.org/*/bot"
""",
            r"rule 'r1' key 'workload': .*wildcard may only be the whole last segment",
            id="bad-pattern",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  audience: "*"
""",
            r"rule 'r1' key 'audience': '\*' is not a wildcard here",
            id="star-audience",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  actions: read
""",
            r"rule 'r1' key 'actions': must be a non-empty list",
            id="actions-not-a-list",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  scopes: ["payments read"]
""",
            r"rule 'r1' key 'scopes': entry 'payments read' has characters",
            id="scope-with-space",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  when: 42
""",
            r"rule 'r1' key 'when': must be a CEL expression string",
            id="when-not-a-string",
        ),
        pytest.param(
            """
- effect: deny
""",
            r"rule #1 key 'id': required",
            id="missing-id",
        ),
        pytest.param(
            """
- id: "bad id"
  effect: deny
""",
            r"rule #1 key 'id'",
            id="id-with-space",
        ),
        pytest.param(
            """
- id: "r1\\n"
  effect: deny
""",
            r"rule #1 key 'id'",
            id="id-with-trailing-newline",
        ),
        pytest.param(
            """
- id: r1
  effect: grant
  scopes: ["payments:read\\n"]
""",
            r"rule 'r1' key 'scopes': entry 'payments:read\\n' has characters",
            id="scope-with-trailing-newline",
        ),
        pytest.param(
            """
- id: r1
  effect: deny
  actions: ["delete\\n"]
""",
            r"rule 'r1' key 'actions': entry 'delete\\n' has characters",
            id="action-with-trailing-newline",
        ),
        pytest.param(
            """
- id: r1
  effect: require_approval
  approvers: ["security-approvers\\n"]
""",
            r"rule 'r1' key 'approvers': entry 'security-approvers\\n' has characters",
            id="group-with-trailing-newline",
        ),
        pytest.param(
            """
- just a string
""",
            r"rule #1 must be a mapping",
            id="rule-not-a-mapping",
        ),
    ],
)
def test_load_error_names_the_rule_and_the_key(rules: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"^p\.yaml: {expected}"):
        parse_policy(_rule(rules), source="p.yaml")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"- a\n", "a policy is a mapping", id="not-a-mapping"),
        pytest.param(b"version: x\n", "`rules` is required", id="no-rules"),
        pytest.param(b"rules: {}\n", "`rules` must be a list", id="rules-not-a-list"),
        pytest.param(b"rules: []\nrule: []\n", "unknown top-level key", id="unknown-top-key"),
        pytest.param(b"version: 3\nrules: []\n", "quoted string", id="version-not-a-string"),
        pytest.param(
            b"rules:\n- id: a\n  effect: deny\n  effect: grant\n",
            "'effect' appears twice",
            id="repeated-yaml-key",
        ),
    ],
)
def test_malformed_document_is_rejected(raw: bytes, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_policy(raw, source="p.yaml")


def test_too_many_rules_are_rejected() -> None:
    rules = "".join(f"- id: r{i}\n  effect: deny\n" for i in range(MAX_RULES + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_RULES}"):
        parse_policy(policy_yaml(rules), source="p.yaml")
