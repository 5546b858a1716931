from __future__ import annotations

import pytest

from taskpass.server.policy.patterns import PatternKind, WorkloadPattern, patterns_covering

BASE = "spiffe://example.org/agents"


@pytest.mark.parametrize(
    ("pattern", "workload_id", "expected"),
    [
        pytest.param(f"{BASE}/bot", f"{BASE}/bot", True, id="exact-same"),
        pytest.param(f"{BASE}/bot", f"{BASE}/bot2", False, id="exact-longer-name"),
        pytest.param(f"{BASE}/bot", f"{BASE}/bot/x", False, id="exact-child"),
        pytest.param(f"{BASE}/*", f"{BASE}/bot", True, id="star-one-segment"),
        pytest.param(f"{BASE}/*", f"{BASE}/team/bot", False, id="star-two-segments"),
        pytest.param(f"{BASE}/*", BASE, False, id="star-needs-a-segment"),
        pytest.param(f"{BASE}/*", f"{BASE}/", False, id="star-empty-segment"),
        pytest.param(f"{BASE}/*", f"{BASE}x/bot", False, id="star-sibling-prefix"),
        pytest.param(f"{BASE}/**", f"{BASE}/bot", True, id="globstar-one-segment"),
        pytest.param(f"{BASE}/**", f"{BASE}/team/bot", True, id="globstar-two-segments"),
        pytest.param(f"{BASE}/**", BASE, False, id="globstar-needs-a-segment"),
        pytest.param(f"{BASE}/**", f"{BASE}/team//bot", False, id="globstar-empty-segment"),
        pytest.param(f"{BASE}/**", "spiffe://example.org/humans/x", False, id="globstar-other"),
        pytest.param("spiffe://example.org/*", f"{BASE}", True, id="domain-star-top-level"),
        pytest.param("spiffe://example.org/**", f"{BASE}/bot", True, id="domain-globstar"),
        pytest.param("spiffe://example.org/**", "spiffe://example.com/a", False, id="other-domain"),
        pytest.param("*", "spiffe://other.org/x", True, id="any-spiffe"),
        pytest.param("*", "legacy-batch", True, id="any-mapped"),
        pytest.param("legacy-batch", "legacy-batch", True, id="mapped-exact"),
        pytest.param("legacy-batch", "legacy-batch-2", False, id="mapped-not-prefix"),
    ],
)
def test_pattern_matches_only_what_it_says(pattern: str, workload_id: str, expected: bool) -> None:
    assert WorkloadPattern.parse(pattern).matches(workload_id) is expected


def test_pattern_is_a_precompiled_structure() -> None:
    parsed = WorkloadPattern.parse(f"{BASE}/**")
    assert (parsed.kind, parsed.base) == (PatternKind.ONE_OR_MORE_SEGMENTS, BASE)


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(f"{BASE}/b*t", id="wildcard-inside-segment"),
        pytest.param("spiffe://example.org/*/bot", id="wildcard-not-last"),
        pytest.param("spiffe://example.org", id="trust-domain-only"),
        pytest.param("spiffe://Example.org/agents/x", id="upper-case-domain"),
        pytest.param("spiffe://example.org/agents//x", id="empty-segment"),
        pytest.param("spiffe://example.org/agents/../x", id="dot-dot-segment"),
        pytest.param("spiffe://example.org/agents/", id="trailing-slash"),
        pytest.param("spiffe://example.org/agents/a%20b", id="percent-encoding"),
        pytest.param("spiffe:/example.org/x", id="malformed-scheme"),
        pytest.param("legacy*", id="wildcard-on-mapped-identity"),
        pytest.param("legacy batch", id="space-in-mapped-identity"),
        pytest.param(f"{BASE}/bot\n", id="trailing-newline"),
        pytest.param("spiffe://example.org\n/agents/x", id="newline-after-trust-domain"),
        pytest.param("legacy\n", id="newline-in-mapped-identity"),
        pytest.param("spiffe://" + "a" * 2050, id="too-long"),
    ],
)
def test_bad_pattern_is_rejected(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        WorkloadPattern.parse(pattern)


def test_regex_metacharacters_in_a_pattern_are_literal() -> None:
    # a pattern is never turned into a regex: '.' means a dot, not any character
    pattern = WorkloadPattern.parse("spiffe://example.org/a.b/*")
    assert pattern.matches("spiffe://example.org/a.b/x")
    assert not pattern.matches("spiffe://example.org/axb/x")


@pytest.mark.parametrize(
    ("workload_id", "expected"),
    [
        pytest.param(
            f"{BASE}/bot",
            [f"{BASE}/bot", f"{BASE}/*", f"{BASE}/**", "spiffe://example.org/**"],
            id="one-below-agents",
        ),
        pytest.param(
            "spiffe://example.org/a",
            ["spiffe://example.org/a", "spiffe://example.org/*", "spiffe://example.org/**"],
            id="one-segment",
        ),
        pytest.param("legacy-batch", ["legacy-batch"], id="mapped-identity"),
    ],
)
def test_patterns_covering_an_id_are_exactly_those_that_match_it(
    workload_id: str, expected: list[str]
) -> None:
    covering = patterns_covering(workload_id)

    assert covering == expected
    near_misses = [
        f"{BASE}/bot/*",
        f"{BASE}/bot/**",
        f"{BASE}/x",
        "spiffe://example.org/a/*",
        "spiffe://other.org/**",
        "legacy",
    ]
    for pattern in [*expected, *near_misses]:
        matches = WorkloadPattern.parse(pattern).matches(workload_id)
        assert matches == (pattern in covering), pattern
