"""The typed CEL environment every `when:` condition is compiled in.

Variables are declared by their dotted names (`task.sensitivity`, ...), which cel-expr-python's
checker resolves as qualified identifiers: a misspelled attribute is an undeclared reference and a
wrong type is a missing overload, both at load time. Declaring flat names needs no protobuf
descriptors and keeps the per-decision activation a plain dict.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from typing import Any

from cel_expr_python import cel

from taskpass.server.errors import ConfigError
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.tasks.descriptor import Sensitivity

_STRING = cel.Type.STRING
_INT = cel.Type.INT

ATTRIBUTES: Mapping[str, Any] = {
    "workload.id": _STRING,
    "workload.trust_domain": _STRING,
    "workload.path": _STRING,
    "workload.method": _STRING,  # "x509-svid" | "jwt-svid" | "mtls-cert"
    "task.id": _STRING,
    "task.audience": _STRING,
    "task.action": _STRING,
    "task.tool": _STRING,
    "task.sensitivity": _INT,  # 0 public < 1 internal < 2 confidential < 3 restricted
    "task.environment": _STRING,
    "task.ttl_seconds": _INT,
    "task.reason": _STRING,
    "task.attributes": cel.Type.Map(_STRING, _STRING),
    "task.orchestrator": _STRING,
    "request.time": cel.Type.TIMESTAMP,
    "request.delegation_depth": _INT,
    "request.parent_rules": cel.Type.List(_STRING),
    "request.parent_id": _STRING,
}

# sensitivity names usable in conditions: `task.sensitivity <= confidential`
CONSTANTS: Mapping[str, int] = {level.name.lower(): int(level) for level in Sensitivity}

_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")


@functools.cache
def _env() -> cel.Env:
    declared = dict(ATTRIBUTES)
    declared.update({name: _INT for name in CONSTANTS})
    return cel.NewEnv(variables=declared)


def compile_condition(source: str) -> cel.Expression:
    """Compile and type-check one condition; raise ConfigError unless it is a boolean."""
    try:
        expression = _env().compile(source)
    except RuntimeError as exc:
        raise ConfigError(_explain(str(exc))) from None
    if expression.return_type() != cel.Type.BOOL:
        raise ConfigError(
            f"must be a boolean expression, but it yields {expression.return_type().name().lower()}"
        )
    return expression


def compile_list(source: str) -> cel.Expression:
    """Compile a list of already-checked conditions into one program (see engine.py)."""
    try:
        expression = _env().compile(source)
    except RuntimeError as exc:
        raise ConfigError(_explain(str(exc))) from None
    if expression.return_type() != cel.Type.List(cel.Type.BOOL):
        raise ConfigError("a combined program must yield a list of booleans")
    return expression


def activation(request: PolicyRequest) -> cel.Activation:
    """Bind every attribute of one request; built once per decision, shared by all conditions."""
    workload = request.workload
    task = request.task
    data: dict[str, Any] = {
        "workload.id": workload.id,
        "workload.trust_domain": workload.trust_domain,
        "workload.path": workload.path,
        "workload.method": workload.method.value,
        "task.id": task.task_id,
        "task.audience": task.audience,
        "task.action": task.action,
        "task.tool": task.tool,
        "task.sensitivity": int(task.sensitivity),
        "task.environment": task.environment,
        "task.ttl_seconds": int(task.requested_ttl.total_seconds()),
        "task.reason": task.reason,
        "task.attributes": dict(task.attributes),
        "task.orchestrator": task.orchestrator,
        "request.time": request.now,
        "request.delegation_depth": request.delegation_depth,
        "request.parent_rules": list(request.parent_rules),
        "request.parent_id": request.parent_id,
    }
    data.update(CONSTANTS)
    return _env().Activation(data)


def is_error(value: cel.Value) -> bool:
    return bool(value.type() == cel.Type.ERROR)


def _explain(message: str) -> str:
    """Turn a checker message into one a policy author can act on."""
    message = message.removeprefix("INVALID_ARGUMENT: ").removesuffix(" [INVALID_ARGUMENT]")
    message = message.replace("ERROR: <input>:", "at ").replace(" (in container '')", "")
    undeclared = _UNDECLARED.search(message)
    if undeclared:
        known = [*ATTRIBUTES, *CONSTANTS]
        close = difflib.get_close_matches(undeclared.group(1), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        message += f"\n{hint}known attributes: {', '.join(ATTRIBUTES)}"
    return message
