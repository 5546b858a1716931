"""One delegation hop may only narrow; each escalation is refused with a reason that says which."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from taskpass.server.delegation.chain import ParentCredential, actor_depth, plan_hop
from taskpass.server.errors import InvalidRequest, PermissionDenied
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ROOT = "spiffe://example.org/agents/billing-bot"
TOOL = "spiffe://example.org/tools/runner"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "jti": "parent-jti",
        "sub": ROOT,
        "client_id": ROOT,
        "aud": "payments-api",
        "scope": "payments:read payments:list",
        "txn": "t-1",
        "exp": int((NOW + dt.timedelta(minutes=10)).timestamp()),
        "cnf": {"x5t#S256": "thumb"},
        "task": {
            "rules": ["grant.read"],
            "action": "read",
            "sensitivity": "internal",
            "environment": "",
        },
    }
    base.update(overrides)
    return base


def caller(spiffe_id: str = TOOL) -> Workload:
    return Workload(
        id=spiffe_id,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=NOW + dt.timedelta(hours=1),
        cert_thumbprint="child-thumb",
    )


def task(**overrides: Any) -> TaskDescriptor:
    fields: dict[str, Any] = {
        "task_id": "t-1",
        "audience": "payments-api",
        "action": "read",
        "sensitivity": Sensitivity.INTERNAL,
        "requested_ttl": dt.timedelta(minutes=2),
    }
    fields.update(overrides)
    return TaskDescriptor(**fields)


def test_first_hop_keeps_the_principal_and_names_the_actor() -> None:
    parent = ParentCredential.from_claims(claims())
    hop = plan_hop(
        parent,
        caller=caller(),
        task=task(),
        requested_scopes=["payments:read"],
        max_depth=3,
        now=NOW,
    )
    assert hop.subject == ROOT
    assert hop.actor == {"sub": TOOL}
    assert hop.depth == 1
    assert hop.scopes == {"payments:read"}
    assert parent.rules == ("grant.read",)


def test_second_hop_nests_the_previous_actor_oldest_last() -> None:
    parent = ParentCredential.from_claims(claims(client_id=TOOL, act={"sub": TOOL}))
    hop = plan_hop(
        parent,
        caller=caller("spiffe://example.org/tools/sub"),
        task=task(),
        requested_scopes=[],
        max_depth=3,
        now=NOW,
    )
    assert hop.actor == {"sub": "spiffe://example.org/tools/sub", "act": {"sub": TOOL}}
    assert hop.depth == 2
    assert hop.scopes == {"payments:read", "payments:list"}


@pytest.mark.parametrize(
    ("parent_claims", "kwargs", "error", "words"),
    [
        pytest.param(
            {},
            {"requested_scopes": ["payments:write"]},
            PermissionDenied,
            "payments:write are wider",
            id="wider-scope",
        ),
        pytest.param(
            {},
            {"task": task(audience="reports-api")},
            PermissionDenied,
            "not the parent credential's audience",
            id="other-audience",
        ),
        pytest.param(
            {},
            {"task": task(requested_ttl=dt.timedelta(minutes=30))},
            PermissionDenied,
            "outlives the parent",
            id="longer-lifetime",
        ),
        pytest.param(
            {"exp": int(NOW.timestamp()) - 1},
            {},
            PermissionDenied,
            "has expired",
            id="expired-parent",
        ),
        pytest.param(
            {"act": {"sub": "a", "act": {"sub": "b"}}, "client_id": "x"},
            {},
            PermissionDenied,
            "depth 3 exceeds the configured maximum of 2",
            id="too-deep",
        ),
        pytest.param(
            {},
            {"task": task(task_id="t-other")},
            InvalidRequest,
            "parent credential's task",
            id="other-task",
        ),
        pytest.param(
            {},
            {"task": task(action="write")},
            PermissionDenied,
            "action write is not the parent credential's action read",
            id="other-action",
        ),
        pytest.param(
            {},
            {"task": task(environment="dev")},
            PermissionDenied,
            r"environment dev is not the parent credential's environment \(none\)",
            id="other-environment",
        ),
        pytest.param(
            {},
            {"task": task(sensitivity=Sensitivity.PUBLIC)},
            PermissionDenied,
            "sensitivity public is below the parent credential's internal",
            id="less-sensitive",
        ),
        pytest.param(
            {"client_id": TOOL},
            {},
            PermissionDenied,
            "cannot delegate to itself",
            id="self-delegation",
        ),
    ],
)
def test_escalations_are_refused_with_a_reason(
    parent_claims: dict[str, Any], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    parent = ParentCredential.from_claims(claims(**parent_claims))
    arguments: dict[str, Any] = {"task": task(), "requested_scopes": [], "max_depth": 2}
    arguments.update(kwargs)
    with pytest.raises(error, match=words):
        plan_hop(parent, caller=caller(), now=NOW, **arguments)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"jti": None}, id="no-jti"),
        pytest.param({"scope": 3}, id="scope-not-text"),
        pytest.param({"exp": "soon"}, id="exp-not-number"),
        pytest.param({"task": "x"}, id="task-not-object"),
        pytest.param({"task": {"action": "read", "sensitivity": "secret"}}, id="bad-sensitivity"),
    ],
)
def test_malformed_subject_token_claims_are_invalid(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match="subject_token"):
        ParentCredential.from_claims(claims(**bad))


def test_actor_depth_counts_nested_acts() -> None:
    assert actor_depth(None) == 0
    assert actor_depth({"sub": "a"}) == 1
    assert actor_depth({"sub": "a", "act": {"sub": "b", "act": {"sub": "c"}}}) == 3
