from __future__ import annotations

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.issuer.metadata import authorization_server_metadata, served_at

ISSUER = "https://taskpass.example.org"
JWKS_URI = "https://taskpass.example.org/.well-known/jwks.json"


def test_metadata_tells_a_verifier_where_keys_are_and_that_tokens_are_certificate_bound() -> None:
    document = authorization_server_metadata(ISSUER, JWKS_URI)

    assert document == {
        "issuer": ISSUER,
        "jwks_uri": JWKS_URI,
        "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": True,
    }


def test_token_endpoint_is_listed_only_when_given() -> None:
    endpoint = "https://taskpass.example.org/token"

    document = authorization_server_metadata(ISSUER, JWKS_URI, token_endpoint=endpoint)

    assert document["token_endpoint"] == endpoint


@pytest.mark.parametrize(
    ("issuer", "jwks_uri", "missing"),
    [("", JWKS_URI, "issuer"), (ISSUER, "", "jwks_uri")],
    ids=["no-issuer", "no-jwks-uri"],
)
def test_metadata_requires_issuer_and_jwks_uri(issuer: str, jwks_uri: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        authorization_server_metadata(issuer, jwks_uri)


@pytest.mark.parametrize("issuer", ["https://taskpass.test", "https://taskpass.test/"])
def test_served_metadata_names_the_issuer_exactly_as_tokens_carry_it(issuer: str) -> None:
    document = served_at(issuer, "/.well-known/jwks.json")

    assert document["issuer"] == issuer  # RFC 8414 §3.3: identical to the tokens' iss
    assert document["jwks_uri"] == "https://taskpass.test/.well-known/jwks.json"
