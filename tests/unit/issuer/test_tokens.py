from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import string
from typing import Any

import jwt as pyjwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError, SecurityWarning
from joserfc.jwk import KeySet

from taskpass.server.clock import FixedClock
from taskpass.server.errors import ConfigError, Conflict, InvalidRequest, PermissionDenied
from taskpass.server.identity.workload import AttestationMethod
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import (
    JTI_BYTES,
    JTI_LENGTH,
    IssuedCredential,
    TokenIssuer,
    new_jti,
)
from taskpass.server.policy.decision import Outcome
from tests.unit.issuer.factories import (
    AGENT,
    ISSUER,
    THUMBPRINT,
    RingFactory,
    make_decision,
    make_task,
    make_workload,
)

AUDIENCE = "payments-api"


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def header_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64decode(token.split(".")[0])))


def claims_of(token: str) -> dict[str, Any]:
    """Reads the payload without verifying: only for asserting what was signed."""
    return dict(json.loads(b64decode(token.split(".")[1])))


def pyjwt_decode(
    token: str,
    ring: KeyRing,
    *,
    audience: str | None = None,
    require: tuple[str, ...] = ("exp", "iat", "nbf", "jti", "sub"),
) -> dict[str, Any]:
    """The interop check: PyJWT, keyed from the published JWKS by the token's kid."""
    keys = {member["kid"]: member for member in ring.jwks()["keys"]}
    kid = pyjwt.get_unverified_header(token)["kid"]
    if kid not in keys:
        raise LookupError(f"kid {kid} is not published")
    return pyjwt.decode(
        token,
        key=pyjwt.PyJWK(keys[kid]),
        algorithms=["ES256", "EdDSA"],
        issuer=ISSUER,
        audience=audience,
        options={"require": list(require)},
    )


def issue(issuer: TokenIssuer, **changes: Any) -> IssuedCredential:
    arguments: dict[str, Any] = {
        "workload": make_workload(),
        "task": make_task(),
        "decision": make_decision(),
    }
    arguments.update(changes)
    return issuer.issue(**arguments)


def test_issuer_is_required(ring: KeyRing, clock: FixedClock) -> None:
    with pytest.raises(ConfigError, match="issuer"):
        TokenIssuer(issuer="", keys=ring, clock=clock)


# -- the token -----------------------------------------------------------------------------------


def test_header_is_at_jwt_with_the_active_kid(issuer: TokenIssuer, ring: KeyRing) -> None:
    credential = issue(issuer)

    assert header_of(credential.token) == {"typ": "at+jwt", "alg": "ES256", "kid": ring.active.kid}
    assert credential.kid == ring.active.kid


def test_claims_are_exactly_the_rfc_9068_set_with_the_task_claim(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    credential = issue(issuer)
    iat = int(clock.now().timestamp())

    assert claims_of(credential.token) == {
        "iss": ISSUER,
        "sub": AGENT,
        "client_id": AGENT,
        "aud": AUDIENCE,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 600,
        "jti": credential.jti,
        "scope": "payments:read payments:list",
        "txn": "task-42",
        "cnf": {"x5t#S256": THUMBPRINT},
        "task": {
            "action": "read",
            "tool": "ledger-cli",
            "sensitivity": "internal",
            "environment": "prod",
            "policy_version": "sha256:abc123",
            "rules": ["payments.read.agents"],
        },
    }


def test_credential_reports_what_was_signed(issuer: TokenIssuer, clock: FixedClock) -> None:
    credential = issue(issuer)
    claims = claims_of(credential.token)

    assert credential.issued_at == clock.now()
    assert credential.expires_at == clock.now() + dt.timedelta(minutes=10)
    assert int(credential.expires_at.timestamp()) == claims["exp"]
    assert credential.scopes == ("payments:read", "payments:list")
    assert credential.token not in repr(credential)


def test_cnf_is_absent_without_a_client_certificate(issuer: TokenIssuer) -> None:
    bearer = make_workload(method=AttestationMethod.JWT_SVID, cert_thumbprint=None)

    claims = claims_of(issue(issuer, workload=bearer).token)

    assert "cnf" not in claims


@pytest.mark.parametrize(
    ("workload_left", "ttl", "expected_lifetime"),
    [
        (dt.timedelta(hours=1), dt.timedelta(minutes=10), 600),
        (dt.timedelta(minutes=3), dt.timedelta(minutes=10), 180),
        (dt.timedelta(minutes=3, milliseconds=900), dt.timedelta(minutes=10), 180),
        (dt.timedelta(hours=1), dt.timedelta(seconds=90, milliseconds=700), 90),
    ],
    ids=[
        "ttl-within-svid",
        "capped-by-svid-expiry",
        "svid-expiry-rounded-down",
        "ttl-whole-seconds",
    ],
)
def test_exp_is_the_decision_ttl_capped_by_the_workload_expiry(
    issuer: TokenIssuer,
    clock: FixedClock,
    workload_left: dt.timedelta,
    ttl: dt.timedelta,
    expected_lifetime: int,
) -> None:
    workload = make_workload(expires_at=clock.now() + workload_left)

    credential = issue(issuer, workload=workload, decision=make_decision(ttl=ttl))
    claims = claims_of(credential.token)

    assert claims["exp"] - claims["iat"] == expected_lifetime
    assert credential.expires_at <= workload.expires_at


def test_exp_never_passes_the_task_deadline_even_when_time_passed_since_the_decision(
    issuer: TokenIssuer, clock: FixedClock
) -> None:
    # The policy counted the ttl (to the deadline) at its own `now`; a durable write (an
    # approval's use, a delegation's reads) came between, and the clock moved on.
    deadline = clock.now() + dt.timedelta(seconds=120, milliseconds=990)
    decision = make_decision(ttl=dt.timedelta(seconds=120))
    clock.advance(dt.timedelta(milliseconds=1010))

    credential = issue(issuer, task=make_task(deadline=deadline), decision=decision)

    assert claims_of(credential.token)["exp"] == int(deadline.timestamp())
    assert credential.expires_at <= deadline


def test_iat_is_whole_seconds_rounded_down(issuer: TokenIssuer, clock: FixedClock) -> None:
    whole = int(clock.now().timestamp())
    clock.advance(dt.timedelta(milliseconds=800))

    claims = claims_of(issue(issuer).token)

    assert claims["iat"] == whole
    assert claims["exp"] == whole + 600


def test_scope_is_omitted_when_the_decision_grants_none(issuer: TokenIssuer) -> None:
    credential = issue(issuer, decision=make_decision(scopes=()))

    assert "scope" not in claims_of(credential.token)
    assert credential.scopes == ()


def test_act_claim_carries_the_delegation_chain(issuer: TokenIssuer) -> None:
    actor = {"sub": "spiffe://example.org/orchestrator", "act": {"sub": "spiffe://example.org/ci"}}

    claims = claims_of(issue(issuer, actor=actor).token)

    assert claims["act"] == actor


def test_actor_without_sub_is_rejected(issuer: TokenIssuer) -> None:
    with pytest.raises(InvalidRequest, match="actor"):
        issue(issuer, actor={"client_id": "x"})


def test_approval_id_appears_in_the_task_claim_when_given(issuer: TokenIssuer) -> None:
    claims = claims_of(issue(issuer, approval_id="apr-7").token)

    assert claims["task"]["approval_id"] == "apr-7"


def test_jti_is_128_random_bits_and_unique(issuer: TokenIssuer) -> None:
    jtis = {issue(issuer).jti for _ in range(50)}

    assert len(jtis) == 50
    assert all(len(b64decode(jti[1:])) == JTI_BYTES for jti in jtis)


URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


def test_jtis_are_unique_url_safe_of_one_length_and_never_start_with_a_dash() -> None:
    # Plain base64url starts 1 in 32 ids with '-' or '_': 20,000 of them would hold ~625.
    jtis = [new_jti() for _ in range(20_000)]

    assert len(set(jtis)) == len(jtis)
    assert {len(jti) for jti in jtis} == {JTI_LENGTH}
    assert all(set(jti) <= URL_SAFE for jti in jtis)
    assert not [jti for jti in jtis if jti.startswith(("-", "_"))]
    assert {len(b64decode(jti[1:])) for jti in jtis} == {JTI_BYTES}


@pytest.mark.parametrize(
    "fill", [b"\xfb", b"\xff"], ids=["random-bits-all-dashes", "all-underscores"]
)
def test_a_jti_starts_with_a_letter_or_digit_even_when_its_random_bits_encode_to_dashes(
    monkeypatch: pytest.MonkeyPatch, fill: bytes
) -> None:
    monkeypatch.setattr(secrets, "token_bytes", lambda n: fill * n)

    jti = new_jti()

    assert jti[0].isascii() and jti[0].isalnum()
    assert b64decode(jti[1:]) == fill * JTI_BYTES
    assert jti[1] in "-_"  # the bits alone would have started the id with it


@pytest.mark.parametrize(
    ("outcome", "approval_id"),
    [(Outcome.DENY, None), (Outcome.DENY, "apr-7"), (Outcome.PENDING_APPROVAL, None)],
    ids=["deny", "deny-with-approval", "pending-without-approval"],
)
def test_no_credential_without_an_allowing_decision(
    issuer: TokenIssuer, outcome: Outcome, approval_id: str | None
) -> None:
    with pytest.raises(PermissionDenied, match=outcome.value):
        issue(issuer, decision=make_decision(outcome=outcome), approval_id=approval_id)


def test_pending_decision_with_its_approval_is_issued(issuer: TokenIssuer) -> None:
    decision = make_decision(outcome=Outcome.PENDING_APPROVAL)

    credential = issue(issuer, decision=decision, approval_id="apr-7")

    assert claims_of(credential.token)["task"]["approval_id"] == "apr-7"


def test_expired_workload_gets_no_credential(issuer: TokenIssuer, clock: FixedClock) -> None:
    with pytest.raises(Conflict, match="less than one second"):
        issue(issuer, workload=make_workload(expires_at=clock.now()))


def test_issuing_keeps_the_signing_key_published_until_the_token_expires(
    issuer: TokenIssuer, ring: KeyRing
) -> None:
    credential = issue(issuer)

    expiry = ring.active.max_token_expiry
    assert expiry is not None
    assert expiry >= credential.expires_at


# -- verification by others ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"], ids=["es256", "eddsa"])
def test_token_verifies_with_pyjwt_from_the_jwks(
    make_ring: RingFactory, clock: FixedClock, algorithm: str
) -> None:
    ring = make_ring(algorithm)
    issuer = TokenIssuer(issuer=ISSUER, keys=ring, clock=clock)
    credential = issue(issuer)

    claims = pyjwt_decode(credential.token, ring, audience=AUDIENCE)

    assert claims["sub"] == AGENT
    assert claims["jti"] == credential.jti
    assert pyjwt.get_unverified_header(credential.token)["alg"] == algorithm


def test_token_verifies_with_joserfc_from_the_jwks(issuer: TokenIssuer, ring: KeyRing) -> None:
    credential = issue(issuer)

    token = jose_jwt.decode(credential.token, KeySet.import_key_set(ring.jwks()), ["ES256"])  # type: ignore[arg-type]
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    ).validate(token.claims)

    assert token.header["typ"] == "at+jwt"
    assert token.claims["jti"] == credential.jti


def test_eddsa_token_verifies_with_joserfc_which_warns_that_rfc_9864_deprecates_eddsa(
    make_ring: RingFactory, clock: FixedClock
) -> None:
    ring = make_ring("EdDSA")
    credential = issue(TokenIssuer(issuer=ISSUER, keys=ring, clock=clock))

    with pytest.warns(SecurityWarning, match="EdDSA"):
        token = jose_jwt.decode(credential.token, KeySet.import_key_set(ring.jwks()), ["EdDSA"])  # type: ignore[arg-type]

    assert token.claims["jti"] == credential.jti


def tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["scope"] = "payments:read payments:write"
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def tamper_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    raw = bytearray(b64decode(signature))
    raw[5] ^= 0x01
    return f"{head}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


@pytest.mark.parametrize("tamper", [tamper_payload, tamper_signature], ids=["payload", "signature"])
def test_tampered_token_fails_verification(issuer: TokenIssuer, ring: KeyRing, tamper: Any) -> None:
    token = tamper(issue(issuer).token)

    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt_decode(token, ring, audience=AUDIENCE)
    with pytest.raises(BadSignatureError):
        jose_jwt.decode(token, KeySet.import_key_set(ring.jwks()), ["ES256"])  # type: ignore[arg-type]


def test_token_for_another_audience_is_rejected_by_pyjwt(
    issuer: TokenIssuer, ring: KeyRing
) -> None:
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt_decode(issue(issuer).token, ring, audience="other-api")


# -- rotation as verifiers see it ----------------------------------------------------------------


def test_tokens_keep_verifying_across_a_rotation_until_the_old_key_is_pruned(
    issuer: TokenIssuer, ring: KeyRing, clock: FixedClock
) -> None:
    old_token = issue(issuer).token
    upcoming = ring.rotate()

    assert issue(issuer).kid != upcoming.kid  # published, not yet signing
    ring.promote()
    new_token = issue(issuer).token

    assert header_of(new_token)["kid"] == upcoming.kid
    pyjwt_decode(old_token, ring, audience=AUDIENCE)
    pyjwt_decode(new_token, ring, audience=AUDIENCE)

    clock.advance(dt.timedelta(minutes=9))
    ring.prune()
    assert header_of(old_token)["kid"] in {member["kid"] for member in ring.jwks()["keys"]}

    clock.advance(dt.timedelta(minutes=1))
    ring.prune()
    assert header_of(old_token)["kid"] not in {member["kid"] for member in ring.jwks()["keys"]}


# -- security event tokens -----------------------------------------------------------------------


CAEP_SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


def revocation_claims() -> dict[str, Any]:
    return {
        "txn": "task-42",
        "events": {
            CAEP_SESSION_REVOKED: {
                "sub_id": {"format": "complex", "session": {"format": "opaque", "id": "task-42"}}
            }
        },
    }


def test_security_event_is_a_secevent_jwt_that_verifies_with_the_jwks(
    issuer: TokenIssuer, ring: KeyRing, clock: FixedClock
) -> None:
    token = issuer.sign_security_event(claims=revocation_claims())

    assert header_of(token) == {"typ": "secevent+jwt", "alg": "ES256", "kid": ring.active.kid}
    claims = pyjwt_decode(token, ring, require=("iat", "jti"))
    assert claims["iss"] == ISSUER
    assert claims["iat"] == int(clock.now().timestamp())
    assert len(claims["jti"]) == JTI_LENGTH
    assert len(b64decode(claims["jti"][1:])) == JTI_BYTES
    assert claims["events"] == revocation_claims()["events"]


def test_security_event_keeps_claims_the_caller_set(issuer: TokenIssuer) -> None:
    token = issuer.sign_security_event(
        claims={**revocation_claims(), "jti": "event-9", "iat": 1_700_000_000}
    )

    claims = claims_of(token)
    assert (claims["jti"], claims["iat"]) == ("event-9", 1_700_000_000)


def test_security_event_without_events_is_rejected(issuer: TokenIssuer) -> None:
    with pytest.raises(InvalidRequest, match="events"):
        issuer.sign_security_event(claims={"txn": "task-42"})


def test_security_event_can_keep_its_key_published(
    issuer: TokenIssuer, ring: KeyRing, clock: FixedClock
) -> None:
    until = clock.now() + dt.timedelta(hours=3)

    issuer.sign_security_event(claims=revocation_claims(), publish_until=until)

    assert ring.active.max_token_expiry == until


def test_delegated_credential_keeps_the_principal_as_sub(issuer: TokenIssuer) -> None:
    credential = issue(issuer, subject="spiffe://example.org/agents/root", actor={"sub": AGENT})
    claims = claims_of(credential.token)
    assert claims["sub"] == "spiffe://example.org/agents/root"
    assert claims["client_id"] == AGENT
    assert claims["act"] == {"sub": AGENT}
