"""RFC 8414 authorization server metadata, served at /.well-known/oauth-authorization-server.

Only what a verifier of taskpass credentials needs: where the keys are, and that tokens are
sender-constrained to the workload's client certificate (RFC 8705).
"""

from __future__ import annotations

from typing import Any, Final

from taskpass.server.errors import ConfigError

TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"


def authorization_server_metadata(
    issuer: str, jwks_uri: str, *, token_endpoint: str | None = None
) -> dict[str, Any]:
    """The metadata document. `token_endpoint` is set only if an HTTP exchange endpoint exists
    (the exchange itself is a gRPC method)."""
    if not issuer:
        raise ConfigError("the issuer is required for authorization server metadata")
    if not jwks_uri:
        raise ConfigError("jwks_uri is required for authorization server metadata")
    document: dict[str, Any] = {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        # RFC 8414 requires the member; there is no authorization endpoint, hence empty
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "tls_client_certificate_bound_access_tokens": True,
    }
    if token_endpoint:
        document["token_endpoint"] = token_endpoint
    return document


def served_at(issuer: str, jwks_path: str) -> dict[str, Any]:
    """The metadata of a server whose JWKS is at `jwks_path` under the issuer URL. `issuer` is
    kept exactly as the tokens' `iss` carries it (RFC 8414 §3.3: identical, trailing "/" and
    all), only the JWKS URL is joined without a doubled "/"."""
    return authorization_server_metadata(issuer, issuer.rstrip("/") + jwks_path)
