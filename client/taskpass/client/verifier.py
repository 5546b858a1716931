"""Verifying a taskpass credential where it is used: in a relying party or its sidecar.

    verifier = CredentialVerifier.for_issuer("http://localhost:8080", audience="payments-api")
    credential = await verifier.verify(token, peer_certificate=der_of_the_callers_cert)

Checks, in order, each failing as `InvalidToken` with its `Reason`: a compact JWS of sane size;
`typ` is `at+jwt` (RFC 9068 §4); `alg` is on the allow-list; the `kid` is a published key (an
unknown kid makes the key cache refetch once, within its cooldown); the signature; `iss`; `aud`
holds one of our audiences; `exp`/`nbf`/`iat` within a small leeway, and dates in years 1..9999;
the RFC 9068 claims are present; the `cnf.x5t#S256` binding (RFC 8705) matches the certificate
the caller presented, so a token replayed by another workload fails; and, last, the revocation
checker: the SDK's `RevocationWatcher` (asked with the token's claims, so task and identity
revocations count), or anything with `is_revoked(jti) -> bool`.

JOSE parsing and signature checks are joserfc's; this module decides which keys and claims count
(the checks up to the payload are _jws.py's, shared with security_events.py). The registered
claims are checked here, as joserfc's JWTClaimsRegistry checks them (same rules, same order of
precedence: missing, then malformed or out of time), without its generic per-claim dispatch: that
cost 9 us of a 113 us verification.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeGuard, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from taskpass.client._jws import ALGORITHMS as ALGORITHMS
from taskpass.client._jws import JwsChecks, Refusal, Words, allowed_algorithms
from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import InvalidRequest, TaskpassClientError
from taskpass.client.jwks import JWKS_PATH, GrpcJwks, HttpJwks, JwksCache, JwksSource
from taskpass.client.timestamps import representable

if TYPE_CHECKING:
    from taskpass.client.client import TaskpassClient

ACCESS_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4
MAX_TOKEN_BYTES: Final = 16 * 1024
DEFAULT_CACHE_SIZE: Final = 4096
"""Tokens whose signature checked out, remembered: each entry holds the token and its payload,
about 2 KiB for a taskpass credential (8 MiB for 4,096); only tokens the issuer signed get in,
and at most 2 x MAX_TOKEN_BYTES each."""


class Reason(enum.StrEnum):
    """Why a token was refused: a stable code for logs, metrics and HTTP error bodies."""

    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    NOT_BOUND = "not_bound"
    CERTIFICATE_REQUIRED = "certificate_required"
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    REVOKED = "revoked"


class InvalidToken(TaskpassClientError):
    """The token must not be accepted; `reason` says why (the message says what to do)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, details={"reason": reason.value})
        self.reason = reason


class RevocationChecker(Protocol):
    """Anything that knows revoked credentials by jti.

    Called only for tokens that passed every other check. It may raise to fail closed (say, while
    it has not caught up with the revocation stream); the exception reaches the caller as is.
    """

    def is_revoked(self, jti: str) -> bool: ...


@runtime_checkable
class TokenRevocationChecker(Protocol):
    """A checker that also knows task and identity revocations, which name a task or a workload
    rather than each jti, and so needs the token's claims (`sub`, `txn`, `iat`): the SDK's
    `RevocationWatcher` is one. Preferred over `is_revoked` when a checker has both."""

    def is_token_revoked(self, claims: Mapping[str, Any]) -> bool: ...


PeerCertificate = x509.Certificate | bytes | str
"""The certificate the caller presented on the mTLS connection: a cryptography certificate, DER
bytes (`ssl.SSLSocket.getpeercert(binary_form=True)`), or PEM (`x509_pem_cert` of a gRPC auth
context, or a decoded Envoy XFCC `Cert`)."""


@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    """A credential that passed every check. `claims` holds the whole payload."""

    subject: str
    client_id: str
    audience: tuple[str, ...]
    scopes: tuple[str, ...]
    jti: str
    task_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    kid: str
    bound_to: str | None
    """The `cnf.x5t#S256` thumbprint, or None for a bearer token (JWT-SVID path)."""
    task: Mapping[str, Any] = field(default_factory=dict)
    """The private `task` claim: action, tool, sensitivity, environment, policy_version, ..."""
    claims: Mapping[str, Any] = field(default_factory=dict)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def certificate_thumbprint(certificate: PeerCertificate) -> str:
    """RFC 8705 §3.1 `x5t#S256`: base64url(SHA-256(DER of the certificate)), unpadded."""
    if isinstance(certificate, str):  # text is PEM; bytes are PEM or DER
        certificate = certificate.encode()
        if not certificate.lstrip().startswith(b"-----BEGIN"):
            raise InvalidRequest("the peer certificate is not a PEM certificate")
    if isinstance(certificate, bytes) and certificate.lstrip().startswith(b"-----BEGIN"):
        try:
            certificate = x509.load_pem_x509_certificate(certificate)  # the first of a chain
        except ValueError as exc:
            raise InvalidRequest("the peer certificate is not a PEM certificate") from exc
    if isinstance(certificate, x509.Certificate):
        der = certificate.public_bytes(serialization.Encoding.DER)
    else:
        der = certificate
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class CredentialVerifier:
    """Verifies taskpass credentials offline against the issuer's published keys.

    `audience` is this relying party's audience (or several). `require_binding` (the default)
    refuses bearer tokens, which taskpass issues only on the JWT-SVID path; turn it off to accept
    them. A bound token is always checked against `peer_certificate` whatever this setting.
    `cache_size` tokens whose signature checked out are remembered, so the same credential on
    its holder's next call skips the signature check (most of a verification's cost); expiry,
    the binding and revocation are checked on every call, and a key refresh or rotation sends a
    remembered token through every check again. 0 turns this off.
    """

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str | Collection[str],
        revocation: RevocationChecker | TokenRevocationChecker | None = None,
        require_binding: bool = True,
        algorithms: Collection[str] = ALGORITHMS,
        leeway: dt.timedelta = dt.timedelta(seconds=5),
        max_age: dt.timedelta = dt.timedelta(minutes=5),
        refetch_cooldown: dt.timedelta = dt.timedelta(seconds=30),
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Clock | None = None,
    ) -> None:
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not issuer:
            raise InvalidRequest("issuer: give the taskpass issuer the tokens must name")
        if not audiences or not all(audiences):
            raise InvalidRequest("audience: give this relying party's audience")
        allowed = allowed_algorithms(algorithms)
        if leeway < dt.timedelta(0) or leeway > dt.timedelta(minutes=5):
            raise InvalidRequest("leeway: must be between 0 and 5 minutes")
        if cache_size < 0:
            raise InvalidRequest("cache_size: must be 0 (no cache) or more")
        self._issuer = issuer
        self._audiences = audiences
        self._revoked = _revocation_check(revocation)
        self._require_binding = require_binding
        self._algorithms = allowed
        self._clock = clock or SystemClock()
        self._keys = JwksCache(
            jwks,
            algorithms=self._algorithms,
            max_age=max_age,
            refetch_cooldown=refetch_cooldown,
            clock=self._clock,
        )
        self._jws = JwsChecks(
            self._keys,
            algorithms=self._algorithms,
            types=ACCESS_TOKEN_TYPES,
            max_bytes=MAX_TOKEN_BYTES,
            words=Words(
                it="the token",
                size=f"the token must be a compact JWS of at most {MAX_TOKEN_BYTES} B",
                wrong_type="the token is not a JWT access token (typ must be at+jwt)",
                not_allowed=f"the token's alg is not one of {', '.join(self._algorithms)}",
                unknown_key=lambda kid: (
                    f"no key {kid} is published at {self._keys.source.name}; the token is forged, "
                    "from another issuer, or signed by a key retired long ago"
                ),
            ),
            refuse=_invalid_token,
            cache_size=cache_size,
        )
        self._leeway = int(leeway.total_seconds())

    @classmethod
    def from_jwks_url(cls, url: str, **options: Any) -> CredentialVerifier:
        """Keys from `url` (e.g. `http://localhost:8080/.well-known/jwks.json`); `options` are
        the constructor's keyword arguments."""
        return cls(HttpJwks(url), **options)

    @classmethod
    def for_issuer(
        cls, issuer: str, *, audience: str | Collection[str], **options: Any
    ) -> CredentialVerifier:
        """Keys from where taskpass publishes them under its issuer URL (the `jwks_uri` of its
        metadata: `<issuer>/.well-known/jwks.json`); use `from_jwks_url` if yours differs."""
        url = issuer.rstrip("/") + JWKS_PATH
        return cls(HttpJwks(url), issuer=issuer, audience=audience, **options)

    @classmethod
    def from_client(cls, client: TaskpassClient, **options: Any) -> CredentialVerifier:
        """Keys over gRPC (`GetJwks`) through an open client, which the caller keeps and closes."""
        return cls(GrpcJwks(client), **options)

    @property
    def keys(self) -> JwksCache:
        return self._keys

    async def refresh(self) -> None:
        """Fetch the keys now: call at startup to fail fast if the JWKS cannot be reached."""
        await self._keys.refresh(force=True)

    async def verify(
        self, token: str, *, peer_certificate: PeerCertificate | None = None
    ) -> VerifiedCredential:
        """The verified credential, or InvalidToken; Unavailable if no keys can be fetched."""
        header, claims = await self._jws.open(token)
        self._check_claims(claims)
        bound_to = self._check_binding(claims, peer_certificate)
        if self._revoked is not None and self._revoked(claims):
            raise InvalidToken(
                Reason.REVOKED, "the credential was revoked (its task ended or security revoked it)"
            )
        return _credential(claims, kid=header["kid"], bound_to=bound_to)

    # --- the checks after the JOSE ones (_jws.py), in order -------------------------------

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """RFC 9068 §2.2: the claims every JWT access token carries, then their values."""
        missing = [name for name in REQUIRED_CLAIMS if claims.get(name) is None]
        if missing:
            raise InvalidToken(
                Reason.MISSING_CLAIM, f"the token lacks required claims ({','.join(missing)})"
            )
        iss, aud = claims["iss"], claims["aud"]
        if iss != self._issuer:  # a non-string is never equal to the (string) issuer
            raise _claim_error("iss", self._issuer, self._audiences)
        if not _names_an_audience(aud, self._audiences):
            raise _claim_error("aud", self._issuer, self._audiences)
        for name in ("sub", "client_id", "jti"):
            if not isinstance(claims[name], str):
                raise InvalidToken(Reason.INVALID_CLAIM, f"the token's {name} is not a string")
            if not claims[name]:
                raise _claim_error(name, self._issuer, self._audiences)
        now, leeway = self._now(), self._leeway
        exp = claims["exp"]
        if not _numeric_date(exp):
            raise _claim_error("exp", self._issuer, self._audiences)
        if exp <= now - leeway:
            raise InvalidToken(Reason.EXPIRED, "the token has expired")
        for name in ("nbf", "iat"):  # nbf is optional; iat is required (present by now)
            value = claims.get(name)
            if value is not None and not (_numeric_date(value) and value <= now + leeway):
                raise _claim_error(name, self._issuer, self._audiences)
        for name in ("exp", "nbf", "iat"):  # numbers by now; _credential makes datetimes of them
            value = claims.get(name)
            if value is not None and not representable(value):
                raise InvalidToken(
                    Reason.INVALID_CLAIM,
                    f"the token's {name} is not a date in years 1..9999",
                )
        scope, task, txn = claims.get("scope", ""), claims.get("task", {}), claims.get("txn", "")
        if not isinstance(scope, str) or not isinstance(task, dict) or not isinstance(txn, str):
            raise InvalidToken(Reason.INVALID_CLAIM, "the token's scope, task or txn is malformed")

    def _check_binding(
        self, claims: Mapping[str, Any], peer_certificate: PeerCertificate | None
    ) -> str | None:
        cnf = claims.get("cnf")
        if cnf is None:
            if self._require_binding:
                raise InvalidToken(
                    Reason.NOT_BOUND,
                    "the token is a bearer token (not bound to a client certificate) and this "
                    "verifier requires bound tokens; pass require_binding=False to accept them",
                )
            return None
        expected = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if not isinstance(expected, str) or not expected:
            raise InvalidToken(
                Reason.CERTIFICATE_MISMATCH, "the token's cnf has no x5t#S256 (RFC 8705) binding"
            )
        if peer_certificate is None:
            raise InvalidToken(
                Reason.CERTIFICATE_REQUIRED,
                "the token is bound to a client certificate: pass the certificate the caller "
                "presented on its mTLS connection as peer_certificate",
            )
        if not hmac.compare_digest(certificate_thumbprint(peer_certificate), expected):
            raise InvalidToken(
                Reason.CERTIFICATE_MISMATCH,
                "the token is bound to another client certificate than the caller's: it was "
                "replayed by another workload, or the caller's certificate rotated (re-exchange)",
            )
        return expected

    def _now(self) -> int:
        return int(self._clock.now().timestamp())


def _invalid_token(refusal: Refusal, message: str) -> InvalidToken:
    return InvalidToken(Reason(refusal.value), message)


def _revocation_check(
    checker: RevocationChecker | TokenRevocationChecker | None,
) -> Callable[[Mapping[str, Any]], bool] | None:
    if checker is None:
        return None
    if isinstance(checker, TokenRevocationChecker):
        return checker.is_token_revoked
    by_jti = checker.is_revoked
    return lambda claims: by_jti(claims["jti"])


REQUIRED_CLAIMS: Final = ("aud", "client_id", "exp", "iat", "iss", "jti", "sub")
"""RFC 9068 §2.2's, in the order a refusal lists the missing ones."""


def _names_an_audience(aud: object, audiences: tuple[str, ...]) -> bool:
    """`aud` is one of ours, or a list of strings holding one of ours (RFC 7519 §4.1.3)."""
    if isinstance(aud, str):
        return aud in audiences
    return (
        isinstance(aud, list)
        and all(isinstance(member, str) for member in aud)
        and any(ours in aud for ours in audiences)
    )


def _numeric_date(value: object) -> TypeGuard[int | float]:
    """RFC 7519 NumericDate: a JSON number (not a boolean), and finite (NaN would never expire)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _claim_error(claim: str, issuer: str, audiences: tuple[str, ...]) -> InvalidToken:
    if claim == "iss":
        return InvalidToken(Reason.WRONG_ISSUER, f"the token was not issued by {issuer}")
    if claim == "aud":
        return InvalidToken(
            Reason.WRONG_AUDIENCE, f"the token is not for this audience ({', '.join(audiences)})"
        )
    if claim == "nbf":
        return InvalidToken(Reason.NOT_YET_VALID, "the token is not valid yet (nbf)")
    if claim == "iat":
        return InvalidToken(Reason.NOT_YET_VALID, "the token was issued in the future (iat)")
    return InvalidToken(Reason.INVALID_CLAIM, f"the token's {claim} claim is malformed")


def _credential(claims: dict[str, Any], *, kid: str, bound_to: str | None) -> VerifiedCredential:
    aud = claims["aud"]
    return VerifiedCredential(
        subject=claims["sub"],
        client_id=claims["client_id"],
        audience=(aud,) if isinstance(aud, str) else tuple(aud),
        scopes=tuple(claims.get("scope", "").split()),
        jti=claims["jti"],
        task_id=claims.get("txn", ""),
        issued_at=dt.datetime.fromtimestamp(claims["iat"], dt.UTC),
        expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
        kid=kid,
        bound_to=bound_to,
        task=dict(claims.get("task", {})),
        claims=claims,
    )
