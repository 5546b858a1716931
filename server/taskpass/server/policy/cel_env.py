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
from collections.abc import Callable, Mapping
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


_VALUES: Mapping[str, Callable[[PolicyRequest], Any]] = {
    "workload.id": lambda r: r.workload.id,
    "workload.trust_domain": lambda r: r.workload.trust_domain,
    "workload.path": lambda r: r.workload.path,
    "workload.method": lambda r: r.workload.method.value,
    "task.id": lambda r: r.task.task_id,
    "task.audience": lambda r: r.task.audience,
    "task.action": lambda r: r.task.action,
    "task.tool": lambda r: r.task.tool,
    "task.sensitivity": lambda r: int(r.task.sensitivity),
    "task.environment": lambda r: r.task.environment,
    "task.ttl_seconds": lambda r: int(r.task.requested_ttl.total_seconds()),
    "task.reason": lambda r: r.task.reason,
    "task.attributes": lambda r: dict(r.task.attributes),
    "task.orchestrator": lambda r: r.task.orchestrator,
    "request.time": lambda r: r.now,
    "request.delegation_depth": lambda r: r.delegation_depth,
    "request.parent_rules": lambda r: list(r.parent_rules),
    "request.parent_id": lambda r: r.parent_id,
}
ALL_NAMES: frozenset[str] = frozenset([*ATTRIBUTES, *CONSTANTS])


def names_read(source: str) -> frozenset[str]:
    """The attributes and constants a condition (already compiled) reads, so that a decision
    binds only those: each one bound costs about half a microsecond.

    The checker finds them: compiled where nothing is declared, it names every undeclared
    reference (`task.attributes.x` of `has(task.attributes.x)` is `task.attributes`). The set is
    then confirmed by compiling where only it is declared; should that fail, all names."""
    try:
        _bare_env().compile(source)
        return frozenset()  # reads nothing: literals only
    except RuntimeError as exc:
        found = {_declared_prefix(name) for name in _UNDECLARED.findall(str(exc))}
    if None in found:
        return ALL_NAMES
    names = frozenset(name for name in found if name is not None)
    try:
        _env_of(names).compile(source)
    except RuntimeError:
        return ALL_NAMES
    return names


def activation(request: PolicyRequest, names: frozenset[str] = ALL_NAMES) -> cel.Activation:
    """Bind the `names` (see names_read) of one request; built once per decision, shared by all
    the conditions that apply."""
    data: dict[str, Any] = {}
    for name in names:
        value = CONSTANTS.get(name)
        data[name] = _VALUES[name](request) if value is None else value
    return _env().Activation(data)


def _declared_prefix(name: str) -> str | None:
    """`name`, or the declared name it selects a field of; None if there is none."""
    while name not in ALL_NAMES:
        name, dot, _ = name.rpartition(".")
        if not dot:
            return None
    return name


@functools.cache
def _bare_env() -> cel.Env:
    return cel.NewEnv(variables={})


def _env_of(names: frozenset[str]) -> cel.Env:
    declared = {name: ATTRIBUTES.get(name, _INT) for name in names}
    return cel.NewEnv(variables=declared)


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
