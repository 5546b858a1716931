from __future__ import annotations

import pytest

from taskpass.server.identity.spiffe_id import (
    InvalidSpiffeId,
    SpiffeId,
    parse_spiffe_id,
    validate_trust_domain,
)

LONGEST_TRUST_DOMAIN = "a" * 255
LONGEST_ID = "spiffe://example.org/" + "a" * (2048 - len("spiffe://example.org/"))


@pytest.mark.parametrize(
    ("value", "trust_domain", "path"),
    [
        pytest.param(
            "spiffe://example.org/agents/billing-bot",
            "example.org",
            "/agents/billing-bot",
            id="ID-valid-workload",
        ),
        pytest.param("spiffe://example.org", "example.org", "", id="ID-valid-trust-domain-only"),
        pytest.param(
            "spiffe://a.b-c_d.9/A.b-c_D/x", "a.b-c_d.9", "/A.b-c_D/x", id="ID-3-valid-charset"
        ),
        pytest.param(
            f"spiffe://{LONGEST_TRUST_DOMAIN}/x",
            LONGEST_TRUST_DOMAIN,
            "/x",
            id="ID-2-valid-255-byte-trust-domain",
        ),
        pytest.param(LONGEST_ID, "example.org", LONGEST_ID[20:], id="ID-4-valid-2048-bytes"),
    ],
)
def test_valid_ids_parse_into_trust_domain_and_path(
    value: str, trust_domain: str, path: str
) -> None:
    spiffe_id = parse_spiffe_id(value)

    assert spiffe_id.trust_domain == trust_domain
    assert spiffe_id.path == path
    assert str(spiffe_id) == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("", "ID-1", id="ID-1-empty"),
        pytest.param("https://example.org/a", "ID-1", id="ID-1-wrong-scheme"),
        pytest.param("SPIFFE://example.org/a", "ID-1", id="ID-1-upper-case-scheme"),
        pytest.param("spiffe:/example.org/a", "ID-1", id="ID-1-missing-slash"),
        pytest.param("spiffe://example.org/a?x=1", "ID-1", id="ID-1-query"),
        pytest.param("spiffe://example.org/a#frag", "ID-1", id="ID-1-fragment"),
        pytest.param("spiffe://user@example.org/a", "ID-1", id="ID-1-userinfo"),
        pytest.param("spiffe://example.org:8443/a", "ID-1", id="ID-1-port"),
        pytest.param("spiffe://Example.org/a", "ID-2", id="ID-2-upper-case-trust-domain"),
        pytest.param("spiffe:///a", "ID-2", id="ID-2-empty-trust-domain"),
        pytest.param("spiffe://", "ID-2", id="ID-2-nothing-after-scheme"),
        pytest.param("spiffe://exa mple.org/a", "ID-2", id="ID-2-space-in-trust-domain"),
        pytest.param("spiffe://ex%41mple.org/a", "ID-2", id="ID-2-percent-encoded-trust-domain"),
        pytest.param("spiffe://exämple.org/a", "ID-2", id="ID-2-non-ascii-trust-domain"),
        pytest.param(
            f"spiffe://a{LONGEST_TRUST_DOMAIN}/x", "ID-2", id="ID-2-256-byte-trust-domain"
        ),
        pytest.param("spiffe://example.org/", "ID-3", id="ID-3-root-with-trailing-slash"),
        pytest.param("spiffe://example.org/a/", "ID-3", id="ID-3-trailing-slash"),
        pytest.param("spiffe://example.org//a", "ID-3", id="ID-3-empty-segment"),
        pytest.param("spiffe://example.org/a/./b", "ID-3", id="ID-3-dot-segment"),
        pytest.param("spiffe://example.org/a/../b", "ID-3", id="ID-3-dot-dot-segment"),
        pytest.param("spiffe://example.org/a%2Fb", "ID-3", id="ID-3-percent-encoding"),
        pytest.param("spiffe://example.org/a b", "ID-3", id="ID-3-space"),
        pytest.param("spiffe://example.org/caf\u00e9", "ID-3", id="ID-3-non-ascii"),
        pytest.param(LONGEST_ID + "a", "ID-4", id="ID-4-2049-bytes"),
    ],
)
def test_invalid_ids_are_rejected_naming_the_rule(value: str, rule: str) -> None:
    with pytest.raises(InvalidSpiffeId) as caught:
        parse_spiffe_id(value)

    assert caught.value.rule == rule


def test_upper_case_trust_domain_message_says_lower_case() -> None:
    with pytest.raises(InvalidSpiffeId, match="lower case"):
        parse_spiffe_id("spiffe://EXAMPLE.org/a")


@pytest.mark.parametrize(
    ("trust_domain", "path", "rule"),
    [
        pytest.param("Example.org", "/a", "ID-2", id="ID-2-constructor-upper-case"),
        pytest.param("example.org", "a", "ID-3", id="ID-3-constructor-path-without-slash"),
        pytest.param("example.org", "/a/", "ID-3", id="ID-3-constructor-trailing-slash"),
        pytest.param("example.org", "/" + "a" * 2030, "ID-4", id="ID-4-constructor-too-long"),
    ],
)
def test_constructor_validates_so_invalid_ids_cannot_exist(
    trust_domain: str, path: str, rule: str
) -> None:
    with pytest.raises(InvalidSpiffeId) as caught:
        SpiffeId(trust_domain, path)

    assert caught.value.rule == rule


def test_root_id_reports_is_root_and_no_segments() -> None:
    root = parse_spiffe_id("spiffe://example.org")
    workload = parse_spiffe_id("spiffe://example.org/humans/approvers/alice")

    assert root.is_root and root.segments == ()
    assert not workload.is_root
    assert workload.segments == ("humans", "approvers", "alice")


def test_ids_compare_by_value() -> None:
    assert parse_spiffe_id("spiffe://example.org/a") == SpiffeId("example.org", "/a")
    assert parse_spiffe_id("spiffe://example.org/a") != parse_spiffe_id("spiffe://example.org/A")


def test_invalid_spiffe_id_is_a_value_error_for_callers_that_convert_it() -> None:
    with pytest.raises(ValueError, match=r"\[ID-2\]"):
        validate_trust_domain("UPPER")
