"""Checks a credential this server issued (for Introspect): signature, typ, iss and lifetime.

Parsing and signature checks are joserfc's; this module only decides which keys and claims count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from taskpass.server.clock import Clock

ALGORITHMS = ("ES256", "EdDSA")
MAX_TOKEN_BYTES = 16 * 1024


class TokenVerifier:
    def __init__(self, *, issuer: str, jwks: Callable[[], dict[str, Any]], clock: Clock) -> None:
        self._issuer = issuer
        self._jwks = jwks
        self._clock = clock
        self._cached: tuple[dict[str, Any], KeySet] | None = None

    def _key_set(self) -> KeySet:
        current = self._jwks()
        if self._cached is None or self._cached[0] is not current:
            self._cached = (current, KeySet.import_key_set(current))  # type: ignore[arg-type]
        return self._cached[1]

    def verify(self, token: str, *, check_lifetime: bool = True) -> dict[str, Any] | None:
        """The claims of a valid, unexpired at+jwt from this issuer; None for anything else.

        `check_lifetime=False` accepts an expired (or not yet valid) one, for a caller that
        explains expiry itself (a delegation's subject token).
        """
        if not token or len(token) > MAX_TOKEN_BYTES:
            return None
        try:
            decoded = jwt.decode(token, self._key_set(), algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError):
            return None
        if decoded.header.get("typ") != "at+jwt":
            return None
        claims = decoded.claims
        if not check_lifetime:
            return claims if claims.get("iss") == self._issuer else None
        now = int(self._clock.now().timestamp())
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if claims.get("iss") != self._issuer or not isinstance(exp, int) or exp <= now:
            return None
        if not isinstance(nbf, int) or nbf > now + 5:
            return None
        return claims
