"""Which rules match a request: cheap structural filters first, then CEL conditions.

A request is reduced to a key: its audience and action (each folded to None when no rule names
it, so callers cannot grow the caches) plus which of the candidate rules' workload patterns its
caller matches. Each key gets a `Plan`, built once: the applicable rules in document order and
one CEL program yielding all their conditions as a list, so a decision costs one activation and
one eval call however many conditions apply.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cel_expr_python import cel

from taskpass.server.errors import ConfigError
from taskpass.server.policy import cel_env
from taskpass.server.policy.document import Effect, Rule
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern
from taskpass.server.policy.request import PolicyRequest

_log = logging.getLogger(__name__)

# plans are bounded by the document in practice; past this, plans are built per decision uncached
MAX_PLANS = 4096
# per plan, digested matches are cached per pattern of condition results, up to this many
_MAX_RESULT_PATTERNS = 256

_Key = tuple[str | None, str | None]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    condition: cel.Expression | None
    reads: frozenset[str] = frozenset()
    """The attributes and constants its condition reads (cel_env.names_read)."""

    @property
    def match_on_error(self) -> bool:
        """A condition that fails to evaluate matches a deny, approval or cap rule, never a
        grant: each answer is the stricter one (fail closed)."""
        return self.rule.effect in (Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.CAP)


@dataclass(frozen=True, slots=True)
class Matches:
    """The matched rules of one decision, pre-digested for combining (cached per plan)."""

    rules: tuple[Rule, ...]  # document order
    ids: tuple[str, ...]
    errored: tuple[str, ...]  # ids of rules whose condition failed to evaluate
    denies: tuple[str, ...]
    grants: tuple[str, ...]
    approvals: tuple[Rule, ...]
    scopes: tuple[str, ...]  # union of the grants' scopes, sorted
    max_ttl: dt.timedelta | None  # least max_ttl of the matched grants and caps
    max_ttl_rule: str

    @classmethod
    def of(cls, rules: Sequence[Rule], errored: Sequence[str]) -> Matches:
        max_ttl: dt.timedelta | None = None
        max_ttl_rule = ""
        for rule in rules:
            if rule.max_ttl is not None and (max_ttl is None or rule.max_ttl < max_ttl):
                max_ttl, max_ttl_rule = rule.max_ttl, rule.id
        grants = [rule for rule in rules if rule.effect is Effect.GRANT]
        return cls(
            rules=tuple(rules),
            ids=tuple(rule.id for rule in rules),
            errored=tuple(errored),
            denies=tuple(rule.id for rule in rules if rule.effect is Effect.DENY),
            grants=tuple(rule.id for rule in grants),
            approvals=tuple(rule for rule in rules if rule.effect is Effect.REQUIRE_APPROVAL),
            scopes=tuple(sorted({scope for rule in grants for scope in rule.scopes})),
            max_ttl=max_ttl,
            max_ttl_rule=max_ttl_rule,
        )


class Plan:
    """The rules that apply to one key, and how to evaluate their conditions."""

    def __init__(self, applicable: Sequence[CompiledRule], *, combine: bool) -> None:
        self.applicable = tuple(applicable)
        self.conditional = tuple(c for c in applicable if c.condition is not None)
        self.reads = frozenset().union(*(c.reads for c in self.conditional))
        self.unconditional_matches = Matches.of([c.rule for c in applicable], ())
        self._by_results: dict[tuple[bool | None, ...], Matches] = {}
        self.program: cel.Expression | None = None
        if combine and len(self.conditional) > 1:
            source = "[" + ", ".join(f"({c.rule.when})" for c in self.conditional) + "]"
            try:
                self.program = cel_env.compile_list(source)
            except ConfigError:
                self.program = None  # e.g. too large for the parser: evaluate one by one

    def evaluate(self, request: PolicyRequest, *, policy_version: str) -> Matches:
        if not self.conditional:
            return self.unconditional_matches
        bound = cel_env.activation(request, self.reads)
        results: tuple[bool | None, ...] | None = None
        if self.program is not None:
            value = self.program.eval(bound)
            # an error in any element fails the whole list; then find which one, one by one
            if not cel_env.is_error(value):
                items = value.plain_value()
                if isinstance(items, list) and all(type(item) is bool for item in items):
                    results = tuple(items)
        if results is None:
            results = tuple(self._evaluate_one(c, bound, policy_version) for c in self.conditional)
        matches = self._by_results.get(results)
        if matches is None:
            matches = self._digest(results)
            if len(self._by_results) < _MAX_RESULT_PATTERNS:
                self._by_results[results] = matches
        return matches

    def _digest(self, results: tuple[bool | None, ...]) -> Matches:
        matched: list[Rule] = []
        errored: list[str] = []
        position = 0
        for candidate in self.applicable:
            if candidate.condition is not None:
                result = results[position]
                position += 1
                if result is None:
                    errored.append(candidate.rule.id)
                    if not candidate.match_on_error:
                        continue
                elif not result:
                    continue
            matched.append(candidate.rule)
        return Matches.of(matched, errored)

    @staticmethod
    def _evaluate_one(
        candidate: CompiledRule, bound: cel.Activation, policy_version: str
    ) -> bool | None:
        assert candidate.condition is not None  # only conditional rules get here
        result = candidate.condition.eval(bound).value()
        if result is True or result is False:
            return result
        _log.warning(
            "policy %s rule %s: condition failed to evaluate: %s",
            policy_version,
            candidate.rule.id,
            result,
        )
        return None


class _Candidates:
    """The rules one (audience, action) key can match, and their distinct workload patterns."""

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules
        distinct: dict[WorkloadPattern, int] = {}
        for c in rules:
            if c.rule.workload_pattern.kind is not PatternKind.ANY:
                distinct.setdefault(c.rule.workload_pattern, len(distinct))
        self.pattern_bit = distinct
        # An exact ID is one dict look-up, however many rules name one; only wildcards are tried.
        self._exact: dict[str, int] = {}
        self._wildcards: list[tuple[int, WorkloadPattern]] = []
        for pattern, bit in distinct.items():
            if pattern.kind is PatternKind.EXACT:
                self._exact[pattern.base] = self._exact.get(pattern.base, 0) | 1 << bit
            else:
                self._wildcards.append((bit, pattern))

    def signature(self, workload_id: str) -> int:
        """A bit per distinct pattern, set where the caller matches it."""
        mask = self._exact.get(workload_id, 0)
        for bit, pattern in self._wildcards:
            if pattern.matches(workload_id):
                mask |= 1 << bit
        return mask

    def applicable(self, mask: int) -> list[CompiledRule]:
        out = []
        for c in self.rules:
            pattern = c.rule.workload_pattern
            if pattern.kind is PatternKind.ANY or mask >> self.pattern_bit[pattern] & 1:
                out.append(c)
        return out


class RuleIndex:
    """Finds the plan for a request. Caches are plain dicts: a race only builds a plan twice."""

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self._rules = rules
        self._audiences = frozenset(a for c in rules for a in c.rule.audience or ())
        self._actions = frozenset(a for c in rules for a in c.rule.actions or ())
        self._candidates: dict[_Key, _Candidates] = {}
        self._plans: dict[tuple[_Key, int], Plan] = {}

    def plan(self, audience: str, action: str, workload_id: str) -> Plan:
        key: _Key = (
            audience if audience in self._audiences else None,
            action if action in self._actions else None,
        )
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = _Candidates(
                tuple(
                    c
                    for c in self._rules
                    if (c.rule.audience is None or key[0] in c.rule.audience)
                    and (c.rule.actions is None or key[1] in c.rule.actions)
                )
            )
            self._candidates[key] = candidates
        mask = candidates.signature(workload_id)
        plan = self._plans.get((key, mask))
        if plan is None:
            if len(self._plans) >= MAX_PLANS:
                return Plan(candidates.applicable(mask), combine=False)
            plan = Plan(candidates.applicable(mask), combine=True)
            self._plans[(key, mask)] = plan
        return plan
