"""A policy document: YAML rules parsed and checked into frozen values.

Structure only; the `when:` conditions are compiled by the engine (see cel_env.py). Every error
names the source, the rule and the key, so a reviewer can fix the file without guessing.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskpass.server.errors import ConfigError
from taskpass.server.policy.durations import parse_duration
from taskpass.server.policy.patterns import WorkloadPattern
from taskpass.server.policy.safe_yaml import load_yaml

MAX_RULES = 1000
MAX_CONDITION_CHARS = 4096
MAX_LIST_ITEMS = 64
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 2048

_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# audience/action values mirror what a TaskDescriptor accepts, so a rule can match them
_TASK_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
# RFC 6749 scope-token: printable ASCII except space, '"' and '\'
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")

_DOCUMENT_KEYS = frozenset({"version", "description", "rules"})


class Effect(enum.Enum):
    GRANT = "grant"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    CAP = "cap"


# which optional keys each effect takes; anything else on a rule is a mistake worth stopping for
_COMMON_KEYS = frozenset({"id", "effect", "description", "workload", "audience", "actions", "when"})
_EFFECT_KEYS: Mapping[Effect, frozenset[str]] = {
    Effect.GRANT: _COMMON_KEYS | {"scopes", "max_ttl"},
    Effect.DENY: _COMMON_KEYS,
    Effect.REQUIRE_APPROVAL: _COMMON_KEYS | {"approvers"},
    Effect.CAP: _COMMON_KEYS | {"max_ttl"},
}
_ALL_RULE_KEYS = frozenset().union(*_EFFECT_KEYS.values())


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. `None` for workload/audience/actions/when means "any" / "always"."""

    id: str
    effect: Effect
    workload: str | None = None
    audience: tuple[str, ...] | None = None
    actions: tuple[str, ...] | None = None
    when: str | None = None
    max_ttl: dt.timedelta | None = None
    scopes: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    description: str = ""
    workload_pattern: WorkloadPattern = field(default_factory=WorkloadPattern.any, compare=False)


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """`content_hash` ("sha256:<hex>" of the exact bytes) is the version every decision carries;
    `version_label` is the human label from the document's `version:` key, if any."""

    version_label: str
    rules: tuple[Rule, ...]
    content_hash: str
    source: str = "<policy>"


def parse_policy(raw: bytes, *, source: str = "<policy>") -> PolicyDocument:
    """Parse and check a YAML policy document; raise ConfigError naming what is wrong."""
    content_hash = "sha256:" + hashlib.sha256(raw).hexdigest()
    data = load_yaml(raw, source=source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy is a mapping with `version` and `rules` keys")
    unknown = sorted(str(key) for key in data if key not in _DOCUMENT_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_DOCUMENT_KEYS))}"
        )
    label = data.get("version", "")
    if not isinstance(label, str) or len(label) > MAX_NAME_CHARS:
        raise ConfigError(f"{source}: `version` must be a quoted string of at most 256 characters")
    if not isinstance(data.get("description", ""), str):
        raise ConfigError(f"{source}: `description` must be a string")
    if "rules" not in data:
        raise ConfigError(f"{source}: `rules` is required (an empty list denies everything)")
    raw_rules = data["rules"]
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: `rules` must be a list of rules")
    if len(raw_rules) > MAX_RULES:
        raise ConfigError(f"{source}: {len(raw_rules)} rules; at most {MAX_RULES} are allowed")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_rules):
        rule = _parse_rule(item, index=index, source=source)
        if rule.id in seen:
            raise ConfigError(f"{source}: rule {rule.id!r} key 'id': used by an earlier rule too")
        seen.add(rule.id)
        rules.append(rule)
    return PolicyDocument(
        version_label=label, rules=tuple(rules), content_hash=content_hash, source=source
    )


class _RuleReader:
    """Reads one rule's keys, raising ConfigError("<source>: rule 'x' key 'y': ...")."""

    def __init__(self, data: Mapping[object, object], *, name: str, source: str) -> None:
        self.data = data
        self.name = name
        self.source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: rule {self.name} key {key!r}: {problem}")

    def string(self, key: str, pattern: re.Pattern[str] | None, limit: int) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "must be a non-empty string")
        if len(value) > limit:
            raise self.error(key, f"is longer than {limit} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.error(key, f"{value[:64]!r} has characters that are not allowed here")
        return value

    def strings(
        self, key: str, pattern: re.Pattern[str], *, allow_single: bool
    ) -> tuple[str, ...] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if allow_single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.error(key, "must be a non-empty list of strings")
        if len(value) > MAX_LIST_ITEMS:
            raise self.error(key, f"at most {MAX_LIST_ITEMS} entries")
        items: list[str] = []
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.error(key, f"entry {item!r} must be a non-empty string (quote it)")
            if item == "*":
                raise self.error(key, "'*' is not a wildcard here; leave the key out to match any")
            if len(item) > MAX_NAME_CHARS or not pattern.fullmatch(item):
                raise self.error(key, f"entry {item[:64]!r} has characters that are not allowed")
            if item not in items:
                items.append(item)
        return tuple(items)


def _parse_rule(item: object, *, index: int, source: str) -> Rule:
    where = f"#{index + 1}"
    if not isinstance(item, dict):
        raise ConfigError(f"{source}: rule {where} must be a mapping with at least id and effect")
    raw_id = item.get("id")
    if not isinstance(raw_id, str) or not _RULE_ID.fullmatch(raw_id):
        raise ConfigError(
            f"{source}: rule {where} key 'id': required; 1-128 characters of letters, digits "
            "and . _ : - (starting with a letter or digit)"
        )
    reader = _RuleReader(item, name=repr(raw_id), source=source)

    unknown = sorted(str(key) for key in item if key not in _ALL_RULE_KEYS)
    if unknown:
        raise reader.error(unknown[0], f"unknown key; allowed: {', '.join(sorted(_ALL_RULE_KEYS))}")

    raw_effect = item.get("effect")
    try:
        effect = Effect(raw_effect)
    except ValueError:
        allowed = ", ".join(e.value for e in Effect)
        raise reader.error("effect", f"must be one of {allowed}") from None
    misplaced = sorted(str(key) for key in item if key not in _EFFECT_KEYS[effect])
    if misplaced:
        raise reader.error(misplaced[0], f"has no meaning on a {effect.value} rule; remove it")

    workload = reader.string("workload", None, 2048)
    pattern = WorkloadPattern.any()
    if workload is not None:
        try:
            pattern = WorkloadPattern.parse(workload)
        except ValueError as exc:
            raise reader.error("workload", str(exc)) from None

    max_ttl: dt.timedelta | None = None
    if item.get("max_ttl") is not None:
        try:
            max_ttl = parse_duration(item["max_ttl"])
        except ValueError as exc:
            raise reader.error("max_ttl", str(exc)) from None

    scopes = reader.strings("scopes", _SCOPE, allow_single=False) or ()
    approvers = reader.strings("approvers", _GROUP, allow_single=False) or ()
    if effect is Effect.GRANT and not scopes:
        raise reader.error("scopes", "a grant must list the scopes it grants")
    if effect is Effect.REQUIRE_APPROVAL and not approvers:
        raise reader.error("approvers", "a require_approval rule must list approver groups")
    if effect is Effect.CAP and max_ttl is None:
        raise reader.error("max_ttl", "a cap must set max_ttl (e.g. 5m)")

    when = item.get("when")
    if when is not None and (not isinstance(when, str) or not when.strip()):
        raise reader.error("when", "must be a CEL expression string")
    if isinstance(when, str) and len(when) > MAX_CONDITION_CHARS:
        raise reader.error("when", f"is longer than {MAX_CONDITION_CHARS} characters")

    return Rule(
        id=raw_id,
        effect=effect,
        workload=workload,
        audience=reader.strings("audience", _TASK_TOKEN, allow_single=True),
        actions=reader.strings("actions", _TASK_TOKEN, allow_single=False),
        when=when,
        max_ttl=max_ttl,
        scopes=scopes,
        approvers=approvers,
        description=reader.string("description", None, MAX_DESCRIPTION_CHARS) or "",
        workload_pattern=pattern,
    )
