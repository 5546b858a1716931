from __future__ import annotations

from urllib.parse import quote

import pytest

from taskpass.client.errors import InvalidRequest
from taskpass.client.verifier import certificate_thumbprint
from taskpass.client.xfcc import elements, peer_certificate
from tests.unit.client.factories import AGENT_CERT, BINDING, OTHER_CERT

PEM = AGENT_CERT.pem.decode()
HASH = "a" * 64


def test_the_certificate_envoy_forwards_is_the_callers() -> None:
    header = f'By=spiffe://example.org/payments;Hash={HASH};Cert="{quote(PEM)}";URI=spiffe://x/a'
    pem = peer_certificate(header)
    assert pem == PEM
    assert pem is not None
    assert certificate_thumbprint(pem) == BINDING


def test_the_nearest_hop_is_the_last_element() -> None:
    far, near = quote(OTHER_CERT.pem.decode()), quote(PEM)
    assert peer_certificate(f'Hash={HASH};Cert="{far}",Hash={HASH};Cert="{near}"') == PEM


def test_quoted_values_may_hold_separators() -> None:
    parsed = elements('By="spiffe://a;b,c";Subject="CN=x, O=y";Hash=00')
    assert parsed == [{"by": "spiffe://a;b,c", "subject": "CN=x, O=y", "hash": "00"}]


def test_an_escaped_quote_is_part_of_the_value_and_unescaped() -> None:
    parsed = elements(r'Subject="CN=\"x, y\";O=\\z";Hash=00')
    assert parsed == [{"subject": 'CN="x, y";O=\\z', "hash": "00"}]


def test_an_escaped_quote_in_the_subject_cannot_switch_the_certificate() -> None:
    # Envoy escapes a '"' inside a quoted value as \"; a caller whose certificate Subject is
    #   CN=x",Cert=<the victim's certificate>;a="
    # must not have it read as another element carrying the victim's certificate.
    mine, victim = quote(OTHER_CERT.pem.decode()), quote(PEM)
    subject = f'CN=x\\",Cert={victim};a=\\"'
    header = f'Hash={HASH};Cert="{mine}";Subject="{subject}";URI=spiffe://example.org/x'
    assert peer_certificate(header) == OTHER_CERT.pem.decode()


@pytest.mark.parametrize(
    "header", [None, "", f"By=spiffe://x;Hash={HASH}"], ids=["absent", "empty", "without-cert"]
)
def test_no_certificate_in_the_header_is_none(header: str | None) -> None:
    assert peer_certificate(header) is None


@pytest.mark.parametrize(
    "header",
    [
        'Cert="unterminated',
        'Cert="ends in a backslash\\',
        'Cert="escaped quote at the end\\"',
        'Cert="quoted"then-more',
        'Cert=half"quoted"',
        "Cert",
        "x" * 70_000,
    ],
    ids=[
        "quote",
        "trailing-backslash",
        "escaped-closing-quote",
        "text-after-the-closing-quote",
        "quote-inside-an-unquoted-value",
        "no-value",
        "huge",
    ],
)
def test_a_malformed_header_is_a_bad_request(header: str) -> None:
    with pytest.raises(InvalidRequest, match="x-forwarded-client-cert"):
        peer_certificate(header)
