from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.policy import cel_env
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.tasks.descriptor import Sensitivity

from .factories import NOW, make_task, make_workload


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "task.sensitivty <= 1",
            r"(?s)undeclared reference to 'task.sensitivty'.*did you mean task.sensitivity\?",
            id="misspelled-attribute",
        ),
        pytest.param("task == 1", r"undeclared reference to 'task'", id="bare-namespace"),
        pytest.param("secret == 1", r"undeclared reference to 'secret'", id="unknown-variable"),
        pytest.param(
            'task.sensitivity == "x"', r"no matching overload for '_==_'", id="int-vs-string"
        ),
        pytest.param("task.ttl_seconds > 1.5", r"no matching overload", id="int-vs-double"),
        pytest.param(
            "task.audience", r"must be a boolean expression, but it yields string", id="string"
        ),
        pytest.param("task.ttl_seconds + 1", r"yields int", id="int"),
        pytest.param("task.sensitivity <=", r"Syntax error", id="syntax-error"),
    ],
)
def test_bad_condition_fails_to_compile(source: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        cel_env.compile_condition(source)


def test_compile_error_does_not_leak_the_internal_status_tag() -> None:
    with pytest.raises(ConfigError) as caught:
        cel_env.compile_condition("task.sensitivty <= 1")
    assert "[INVALID_ARGUMENT]" not in caught.value.message
    assert "<input>" not in caught.value.message


def _request(**task_changes: object) -> PolicyRequest:
    workload = make_workload(
        id="spiffe://example.org/agents/billing-bot", method=AttestationMethod.JWT_SVID
    )
    task = make_task(
        task_id="t-9",
        audience="payments-api",
        action="write",
        tool="ledger",
        sensitivity=Sensitivity.CONFIDENTIAL,
        environment="prod",
        requested_ttl=dt.timedelta(minutes=5),
        reason="monthly close",
        attributes={"team": "billing"},
        **task_changes,
    )
    return PolicyRequest(workload=workload, task=task, now=NOW, delegation_depth=0, parent_rules=())


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('workload.id == "spiffe://example.org/agents/billing-bot"', id="workload.id"),
        pytest.param('workload.trust_domain == "example.org"', id="workload.trust_domain"),
        pytest.param('workload.path == "/agents/billing-bot"', id="workload.path"),
        pytest.param('workload.method == "jwt-svid"', id="workload.method"),
        pytest.param('task.id == "t-9"', id="task.id"),
        pytest.param('task.audience == "payments-api"', id="task.audience"),
        pytest.param('task.action == "write"', id="task.action"),
        pytest.param('task.tool == "ledger"', id="task.tool"),
        pytest.param("task.sensitivity == 2", id="task.sensitivity"),
        pytest.param("task.sensitivity == confidential", id="sensitivity-constant"),
        pytest.param(
            "public < internal && internal < confidential && confidential < restricted",
            id="constants-ordered",
        ),
        pytest.param('task.environment == "prod"', id="task.environment"),
        pytest.param("task.ttl_seconds == 300", id="task.ttl_seconds"),
        pytest.param('task.reason.contains("close")', id="task.reason"),
        pytest.param('task.attributes["team"] == "billing"', id="task.attributes"),
        pytest.param('request.time == timestamp("2026-06-01T12:00:00Z")', id="request.time"),
        pytest.param("request.delegation_depth == 0", id="request.delegation_depth"),
        pytest.param("size(request.parent_rules) == 0", id="request.parent_rules"),
        pytest.param('request.parent_id == ""', id="request.parent_id"),
    ],
)
def test_every_attribute_is_bound_with_its_value(source: str) -> None:
    result = cel_env.compile_condition(source).eval(cel_env.activation(_request()))
    assert result.value() is True


def test_missing_map_key_is_a_runtime_error_value_not_an_exception() -> None:
    result = cel_env.compile_condition('task.attributes["absent"] == "x"').eval(
        cel_env.activation(_request())
    )
    assert cel_env.is_error(result)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("true", set(), id="literals-only"),
        pytest.param(
            "task.sensitivity <= confidential",
            {"task.sensitivity", "confidential"},
            id="attribute-and-constant",
        ),
        pytest.param("task . tool == 'x'", {"task.tool"}, id="spaced-selection"),
        pytest.param(
            'has(task.attributes.team) && task.attributes["team"] == "b"',
            {"task.attributes"},
            id="field-of-a-map-attribute",
        ),
        pytest.param(
            '[1, 2].exists(task, task > 1) && task.environment == "prod"',
            {"task.environment"},
            id="a-comprehension-variable-shadows-nothing",
        ),
        pytest.param(
            'request.time > timestamp("2026-01-01T00:00:00Z") && workload.path.startsWith("/a")',
            {"request.time", "workload.path"},
            id="several",
        ),
    ],
)
def test_names_read_are_the_attributes_and_constants_a_condition_reads(
    source: str, expected: set[str]
) -> None:
    cel_env.compile_condition(source)
    assert cel_env.names_read(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        'workload.id == "spiffe://example.org/agents/billing-bot" && public == 0',
        'task.attributes["team"] == "billing" && task.ttl_seconds == 300',
        "size(request.parent_rules) == 0 && request.delegation_depth == 0",
    ],
)
def test_binding_only_the_names_read_gives_the_same_result(source: str) -> None:
    condition = cel_env.compile_condition(source)
    only = cel_env.activation(_request(), cel_env.names_read(source))
    assert condition.eval(only).value() is True
    assert condition.eval(cel_env.activation(_request())).value() is True
