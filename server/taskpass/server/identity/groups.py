"""Security-owned groups: names bound to SPIFFE IDs in the bootstrap config, never by workloads.

A member entry is an exact ID or a pattern (`spiffe://td/path/*` for one more segment,
`spiffe://td/path/**` for any depth), the same syntax as policy's workload matcher.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from taskpass.server.errors import ConfigError
from taskpass.server.policy.patterns import PatternKind, WorkloadPattern


class Groups:
    def __init__(self, members: Mapping[str, Sequence[str]]) -> None:
        self._groups: dict[str, tuple[WorkloadPattern, ...]] = {}
        for name, entries in members.items():
            patterns = []
            for entry in entries:
                try:
                    pattern = WorkloadPattern.parse(entry)
                except ValueError as exc:
                    raise ConfigError(f"config: groups.{name}: {entry!r} {exc}") from None
                if pattern.kind is PatternKind.ANY:
                    raise ConfigError(f"config: groups.{name}: '*' would admit every workload")
                patterns.append(pattern)
            self._groups[name] = tuple(patterns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._groups)

    def is_member(self, workload_id: str, group: str) -> bool:
        return any(p.matches(workload_id) for p in self._groups.get(group, ()))

    def member_of_any(self, workload_id: str, groups: Iterable[str]) -> bool:
        return any(self.is_member(workload_id, g) for g in groups)

    def groups_of(self, workload_id: str) -> tuple[str, ...]:
        return tuple(name for name in self._groups if self.is_member(workload_id, name))
