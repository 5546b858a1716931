"""The policy engine: one compiled document, deciding one request at a time.

Combining (DESIGN.md "Policy-as-code"): any matched deny wins; no matched grant means deny; a
matched require_approval rule not yet satisfied means pending; otherwise allow, with the union of
the matched grants' scopes and the least TTL of every source.

Which rules match is matching.py's job (structural pre-filter, then one CEL eval per decision);
this module combines the matches into a decision.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from taskpass.server.errors import ConfigError
from taskpass.server.policy import cel_env
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.policy.document import Effect, PolicyDocument, parse_policy
from taskpass.server.policy.durations import format_duration
from taskpass.server.policy.matching import CompiledRule, Matches, RuleIndex
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.policy.safe_yaml import read_bounded

_ZERO = dt.timedelta(0)
_ONE_SECOND = dt.timedelta(seconds=1)


class PolicyEngine:
    """Decides requests under one policy document; immutable once built, safe to share."""

    def __init__(self, document: PolicyDocument) -> None:
        self.document = document
        compiled: list[CompiledRule] = []
        for rule in document.rules:
            if rule.when is None:
                compiled.append(CompiledRule(rule, None))
                continue
            try:
                condition = cel_env.compile_condition(rule.when)
            except ConfigError as exc:
                raise ConfigError(
                    f"{document.source}: rule {rule.id!r} key 'when': {exc.message}"
                ) from None
            compiled.append(CompiledRule(rule, condition, cel_env.names_read(rule.when)))
        self._index = RuleIndex(tuple(compiled))
        self._approvers = {
            rule.id: frozenset(rule.approvers)
            for rule in document.rules
            if rule.effect is Effect.REQUIRE_APPROVAL
        }

    def approvers_of(self, rule_id: str) -> frozenset[str] | None:
        """The approver groups of an approval rule of this document; None for any other id."""
        return self._approvers.get(rule_id)

    @classmethod
    def from_yaml(cls, text: bytes, *, source: str) -> PolicyEngine:
        return cls(parse_policy(text, source=source))

    @classmethod
    def from_file(cls, path: Path | str) -> PolicyEngine:
        path = Path(path)
        return cls.from_yaml(read_bounded(path), source=str(path))

    @property
    def version(self) -> str:
        """The content hash of the document: what every decision records."""
        return self.document.content_hash

    def decide(self, request: PolicyRequest) -> Decision:
        task = request.task
        plan = self._index.plan(task.audience, task.action, request.workload.id)
        matches = plan.evaluate(request, policy_version=self.version)
        return self._combine(request, matches)

    def _combine(self, request: PolicyRequest, matches: Matches) -> Decision:
        ids = matches.ids
        note = ""
        if matches.errored:
            note = (
                f"; condition of {_rules_phrase(matches.errored)} failed to evaluate and was"
                " treated as matched for deny/approval/cap rules, unmatched for grants"
                " (fail closed)"
            )
        if matches.denies:
            return self._deny(ids, f"denied by {_rules_phrase(matches.denies)}{note}")
        task = request.task
        if not matches.grants:
            return self._deny(
                ids, f"no grant matched audience {task.audience} action {task.action}{note}"
            )

        now = request.now
        ttl, limited_by = task.requested_ttl, "the requested ttl"
        if matches.max_ttl is not None and matches.max_ttl < ttl:
            ttl, limited_by = matches.max_ttl, f"rule {matches.max_ttl_rule}"
        if task.deadline is not None and task.deadline - now < ttl:
            ttl, limited_by = task.deadline - now, "the task deadline"
        if request.workload.expires_at - now < ttl:
            ttl, limited_by = request.workload.expires_at - now, "the caller's SVID expiry"
        # whole seconds, rounded down, so a token never outlives the deadline or the SVID
        if ttl.microseconds:
            ttl = dt.timedelta(days=ttl.days, seconds=ttl.seconds)
        if ttl < _ONE_SECOND:
            return self._deny(ids, f"no lifetime left: {limited_by} has passed{note}")

        ttl_phrase = f"ttl {format_duration(ttl)} set by {limited_by}"
        satisfied = request.satisfied_approvals
        pending = [rule for rule in matches.approvals if rule.id not in satisfied]
        if pending:
            groups: dict[str, None] = {}
            for rule in pending:
                groups.update(dict.fromkeys(rule.approvers))
            pending_ids = tuple(rule.id for rule in pending)
            return Decision(
                outcome=Outcome.PENDING_APPROVAL,
                policy_version=self.version,
                matched_rules=ids,
                ttl=ttl,
                scopes=matches.scopes,
                approval_rules=pending_ids,
                approver_groups=tuple(groups),
                reason=(
                    f"approval required by {_rules_phrase(pending_ids)} from "
                    f"{', '.join(groups)}; {ttl_phrase}{note}"
                ),
            )
        return Decision(
            outcome=Outcome.ALLOW,
            policy_version=self.version,
            matched_rules=ids,
            ttl=ttl,
            scopes=matches.scopes,
            reason=f"allowed by {_rules_phrase(matches.grants)}; {ttl_phrase}{note}",
        )

    def _deny(self, ids: tuple[str, ...], reason: str) -> Decision:
        return Decision(
            outcome=Outcome.DENY,
            policy_version=self.version,
            matched_rules=ids,
            ttl=_ZERO,
            reason=reason,
        )


def _rules_phrase(ids: Sequence[str]) -> str:
    return ("rule " if len(ids) == 1 else "rules ") + ", ".join(ids)
