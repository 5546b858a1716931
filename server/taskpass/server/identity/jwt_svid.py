"""Where a JWT-SVID is checked: rules J-1..J-9 of DESIGN.md.

JOSE parsing and signature checks are joserfc's. The token is parsed unverified only to learn
which trust domain (from `sub`) and key (from `kid`) must have signed it; nothing in it is trusted
before the signature verifies with that trust domain's own JWT authority.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError, MissingAlgorithmError

from taskpass.server.clock import Clock
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.spiffe_id import InvalidSpiffeId, SpiffeId, parse_spiffe_id, shown
from taskpass.server.identity.workload import AttestationMethod, Workload

ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
)
ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
ALLOWED_TYPES = frozenset({"JWT", "JOSE"})
MAX_TOKEN_BYTES = 8 * 1024
DEFAULT_LEEWAY = dt.timedelta(seconds=30)

# Three base64url segments; an empty signature is let through here so that `alg: none` is
# reported as the J-2 violation it is.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


class JwtSvidVerifier:
    """Verifies JWT-SVID bearer tokens for one audience (this server)."""

    def __init__(
        self,
        bundles: TrustBundles,
        audience: str,
        clock: Clock,
        leeway: dt.timedelta = DEFAULT_LEEWAY,
    ) -> None:
        if not audience:
            raise ValueError("audience must be non-empty")
        if leeway < dt.timedelta(0):
            raise ValueError("leeway must not be negative")
        self._bundles = bundles
        self._audience = audience
        self._clock = clock
        self._leeway = leeway

    @property
    def audience(self) -> str:
        return self._audience

    def verify(self, token: str) -> Workload:
        signed = _parse_compact(token)
        header = signed.headers()
        alg = _check_header(header)
        claims = _claims(signed.payload)
        spiffe_id = _subject(claims)
        self._check_signature(signed, alg, header.get("kid"), spiffe_id)
        self._check_audience(claims)
        expires_at = self._check_times(claims)
        return Workload(
            id=str(spiffe_id),
            method=AttestationMethod.JWT_SVID,
            trust_domain=spiffe_id.trust_domain,
            expires_at=expires_at,
            cert_thumbprint=None,
        )

    def _check_signature(
        self, signed: jws.CompactSignature, alg: str, kid: object, spiffe_id: SpiffeId
    ) -> None:
        """J-9: signed by the JWT authority `kid` of the subject's own trust domain."""
        trust_domain = spiffe_id.trust_domain
        bundle = self._bundles.get(trust_domain)
        if bundle is None or not bundle.jwt_authorities:
            raise AttestationFailed(
                "J-9",
                f"no JWT bundle is configured for trust domain {trust_domain!r}; this server "
                "does not trust its JWT-SVIDs",
            )
        if not isinstance(kid, str) or not kid:
            raise AttestationFailed(
                "J-9", "the token header has no 'kid'; a JWT-SVID must name its signing key"
            )
        key = bundle.jwt_authorities.get(kid)
        if key is None:
            raise AttestationFailed(
                "J-9",
                f"kid {shown(kid)} is not in the JWT bundle of {trust_domain}; the key may have "
                "been rotated out, or the token was signed by another trust domain",
            )
        try:
            valid = jws.validate_compact(signed, key, algorithms=[alg])
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise AttestationFailed(
                "J-9",
                f"the signature does not verify with key {shown(kid)} of {trust_domain} "
                f"using {alg}",
            )

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        """J-7: `aud` is present and names this server."""
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AttestationFailed("J-7", "the token has no 'aud' claim (string or string list)")
        if self._audience not in audiences:
            raise AttestationFailed(
                "J-7",
                f"the token's audience does not include {self._audience!r}; mint the JWT-SVID "
                "for this server's audience",
            )

    def _check_times(self, claims: Mapping[str, Any]) -> dt.datetime:
        """J-8: `exp` is present and not past (with leeway); an `nbf` is honoured too."""
        now = self._clock.now()
        expires_at = _timestamp(claims, "exp")
        if expires_at is None:
            raise AttestationFailed("J-8", "the token has no 'exp' claim; a JWT-SVID must expire")
        if now > expires_at + self._leeway:
            raise AttestationFailed(
                "J-8", f"the token expired at {expires_at.isoformat()}; fetch a fresh JWT-SVID"
            )
        not_before = _timestamp(claims, "nbf")
        if not_before is not None and now + self._leeway < not_before:
            raise AttestationFailed(
                "J-8", f"the token is not valid before {not_before.isoformat()}"
            )
        return expires_at


def _parse_compact(token: object) -> jws.CompactSignature:
    """J-1: a bounded JWS compact serialization whose header and payload decode."""
    if not isinstance(token, str):
        raise AttestationFailed("J-1", "the bearer token is not text")
    if len(token) > MAX_TOKEN_BYTES:
        raise AttestationFailed(
            "J-1", f"the token is {len(token)} bytes; JWT-SVIDs over {MAX_TOKEN_BYTES} are refused"
        )
    if _COMPACT_JWS.fullmatch(token) is None:
        raise AttestationFailed(
            "J-1",
            "the token is not a JWS compact serialization (three base64url parts joined by "
            "'.'); JWE and JSON serializations are not JWT-SVIDs",
        )
    try:
        signed = jws.extract_compact(token.encode("ascii"))
    except MissingAlgorithmError:
        raise AttestationFailed("J-2", "the token header has no 'alg'") from None
    except (JoseError, ValueError, TypeError):
        raise AttestationFailed(
            "J-1", "the token header or payload is not base64url-encoded JSON"
        ) from None
    if not isinstance(signed.headers(), dict):
        raise AttestationFailed("J-1", "the token header is not a JSON object")
    return signed


def _check_header(header: Mapping[str, Any]) -> str:
    """J-2, J-3, J-5. Returns the algorithm."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        shown_alg = shown(alg, 20) if isinstance(alg, str) else "(not a string)"
        raise AttestationFailed(
            "J-2",
            f"alg {shown_alg} is not allowed; a JWT-SVID is signed with RS, ES or PS "
            "256/384/512, never 'none' or HMAC",
        )
    extra = sorted(set(header) - ALLOWED_HEADERS)
    if extra:
        names = ", ".join(shown(str(name), 20) for name in extra[:5])
        raise AttestationFailed(
            "J-3",
            f"header parameter(s) {names} are not allowed; a JWT-SVID header has only alg, "
            "kid and typ",
        )
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ not in ALLOWED_TYPES:
        shown_typ = shown(typ, 20) if isinstance(typ, str) else "(not a string)"
        raise AttestationFailed(
            "J-5", f"typ {shown_typ} is not allowed; a JWT-SVID's typ is absent, JWT or JOSE"
        )
    return alg


def _claims(payload: bytes | None) -> Mapping[str, Any]:
    try:
        claims = json.loads(payload or b"")
    except (ValueError, UnicodeDecodeError):
        claims = None
    if not isinstance(claims, dict):
        raise AttestationFailed("J-1", "the token payload is not a JSON object of claims")
    return claims


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    """J-6: `sub` is a valid SPIFFE ID naming a workload."""
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise AttestationFailed("J-6", "the token has no 'sub' claim; it must be a SPIFFE ID")
    try:
        spiffe_id = parse_spiffe_id(sub)
    except InvalidSpiffeId as exc:
        raise AttestationFailed(
            "J-6", f"sub {shown(sub)} is not a valid SPIFFE ID [{exc.rule}]: {exc.reason}"
        ) from None
    if spiffe_id.is_root:
        raise AttestationFailed(
            "J-6", f"sub {shown(sub)} names a trust domain, not a workload; it needs a path"
        )
    return spiffe_id


def _timestamp(claims: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AttestationFailed("J-8", f"the '{name}' claim is not a NumericDate")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise AttestationFailed("J-8", f"the '{name}' claim is out of range") from None
