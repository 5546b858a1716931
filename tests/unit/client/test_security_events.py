"""Identity patterns as the watcher matches them: the same syntax as groups and policy."""

from __future__ import annotations

import pytest

from taskpass.client.security_events import pattern_matches

AGENTS = "spiffe://example.org/agents"


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/a", True, id="exact"),
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/ab", False, id="exact-is-not-a-prefix"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a", True, id="one-segment"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a/b", False, id="one-segment-not-deeper"),
        pytest.param(f"{AGENTS}/*", AGENTS, False, id="one-segment-not-the-base"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}/a/b/c", True, id="any-depth"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}x/a", False, id="a-sibling-with-the-same-prefix"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}/a//b", False, id="an-empty-segment"),
        pytest.param("legacy-batch", "legacy-batch", True, id="mapped-identity"),
    ],
)
def test_a_pattern_covers_exactly_the_identities_it_names(
    pattern: str, subject: str, matches: bool
) -> None:
    assert pattern_matches(pattern, subject) is matches
