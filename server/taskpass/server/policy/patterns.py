"""Workload patterns in policy rules, parsed once into a structure that matches without regex.

spiffe://example.org/agents/billing-bot   exactly that ID
spiffe://example.org/agents/*             exactly one more path segment (agents/x, not agents/x/y)
spiffe://example.org/agents/**            one or more more segments (agents/x, agents/x/y)
*                                         any workload
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_PATTERN = 2048


class PatternKind(enum.Enum):
    ANY = "any"
    EXACT = "exact"
    ONE_SEGMENT = "one_segment"
    ONE_OR_MORE_SEGMENTS = "one_or_more_segments"


@dataclass(frozen=True, slots=True)
class WorkloadPattern:
    """`base` is the whole ID for EXACT, the ID the wildcard hangs off (without `/`) otherwise."""

    kind: PatternKind
    base: str
    source: str

    @classmethod
    def parse(cls, source: str) -> WorkloadPattern:
        """Raise ValueError with a sentence saying what is wrong (the caller adds the rule id)."""
        if source == "*":
            return cls(PatternKind.ANY, "", source)
        if len(source.encode()) > _MAX_PATTERN:
            raise ValueError(f"is longer than {_MAX_PATTERN} bytes")
        if not source.lower().startswith("spiffe:"):
            _check_mapped_identity(source)
            return cls(PatternKind.EXACT, source, source)
        kind = PatternKind.EXACT
        base = source
        if source.endswith("/**"):
            kind, base = PatternKind.ONE_OR_MORE_SEGMENTS, source[:-3]
        elif source.endswith("/*"):
            kind, base = PatternKind.ONE_SEGMENT, source[:-2]
        _check_spiffe_id(base, allow_root=kind is not PatternKind.EXACT)
        return cls(kind, base, source)

    @classmethod
    def any(cls) -> WorkloadPattern:
        return cls(PatternKind.ANY, "", "*")

    def matches(self, workload_id: str) -> bool:
        kind = self.kind
        if kind is PatternKind.ANY:
            return True
        if kind is PatternKind.EXACT:
            return workload_id == self.base
        base = self.base
        # "<base>/" then a non-empty rest; startswith + slicing is far cheaper than a regex
        if len(workload_id) <= len(base) + 1 or not workload_id.startswith(base):
            return False
        if workload_id[len(base)] != "/":
            return False
        rest = workload_id[len(base) + 1 :]
        if kind is PatternKind.ONE_SEGMENT:
            return "/" not in rest
        return "" not in rest.split("/")


def patterns_covering(workload_id: str) -> list[str]:
    """Every pattern text that matches `workload_id`: the ID itself, `<parent>/*`, and
    `<ancestor>/**` for each ancestor up to the trust domain. A store can then look up the
    patterns covering an identity by equality (bans: see store/postgres.py)."""
    covering = [workload_id]
    if not workload_id.lower().startswith("spiffe://"):
        return covering  # a mapped identity matches only itself
    base, _, _ = workload_id.rpartition("/")
    if base.count("/") < 2:  # "spiffe:" + "" + trust domain: the ID has no path
        return covering
    covering.append(f"{base}/*")
    while base.count("/") >= 2:
        covering.append(f"{base}/**")
        base, _, _ = base.rpartition("/")
    return covering


def _check_mapped_identity(text: str) -> None:
    # mirrors what identity/mapped_cert.py accepts as a mapped identity; matched exactly
    if "*" in text:
        raise ValueError(
            f"{text!r}: wildcards work only in SPIFFE ID patterns (spiffe://domain/path/* or /**);"
            " a mapped certificate identity is matched exactly"
        )
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError(f"{text[:64]!r}: an identity has no spaces or control characters")


def _check_spiffe_id(text: str, *, allow_root: bool) -> None:
    hint = (
        "must be *, a SPIFFE ID such as spiffe://example.org/agents/bot, or one ending in /* "
        "(one more segment) or /** (one or more segments)"
    )
    if "*" in text:
        raise ValueError(f"{text!r}: a wildcard may only be the whole last segment; {hint}")
    if not text.startswith("spiffe://"):
        raise ValueError(f"{text!r}: {hint}")
    trust_domain, slash, path = text[len("spiffe://") :].partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(
            f"{text!r}: trust domain must be 1-255 characters of lower-case a-z, 0-9, '.', '_', '-'"
        )
    if not slash:
        if allow_root:
            return
        raise ValueError(f"{text!r}: names a whole trust domain, not a workload; {hint}")
    for segment in path.split("/"):
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise ValueError(
                f"{text!r}: path segment {segment!r} must be non-empty a-z, A-Z, 0-9, '.', '_', '-'"
                " and not '.' or '..'"
            )
