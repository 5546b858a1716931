"""Hostile identities through the real TLS listeners (hypothesis; see fuzzing.py):
- JWT-SVIDs mutated byte by byte, validly signed ones with random headers and claims, and valid
  ones with one header or claim changed to a near miss, sent as bearers over server TLS;
- X.509-SVIDs with random SANs, flags, key usages, validity and issuers, and certificates whose
  signed bytes were mutated and signed again, presented over mTLS.

Whatever the handshake or attestation makes of them, an Exchange is answered without INTERNAL
or UNKNOWN, the server keeps serving and the store holds no partial records. And an Exchange
that succeeds is checked against the rules written out here, independently of the server's code
(`assert_jwt_svid_acceptable`, `assert_x509_svid_acceptable`): a credential for a token or a
certificate that breaks one of DESIGN.md's J- or X- rules fails the test. (Measured: with the
J-3, J-5 or J-7 check removed from the server, the near-miss test fails. With the J-8 check
removed an expired token still gets no credential: its lifetime cap refuses it. The X-4 and X-7
leaves are refused by grpcio's own handshake before taskpass sees them.)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import assume, given
from hypothesis import strategies as st
from joserfc import jws
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass.server.pki.builder import CLIENT_AUTH, SERVER_AUTH, Issued, KeyType, Usage
from tests.integration.fuzzing import (
    METHODS,
    Method,
    assert_never_internal,
    assert_still_serving,
    certificate_channel,
    fuzz_settings,
    tls_channel,
)
from tests.integration.harness import AUDIENCE, BILLING_BOT, Harness
from tests.support.pki import EXAMPLE, OTHER, TestPki

EXCHANGE: Method = next(m for m in METHODS if m.path.endswith("/Exchange"))
REQUEST = pb.ExchangeRequest(
    task=pb.TaskDescriptor(
        task_id="fuzz",
        audience="payments-api",
        action="read",
        sensitivity=pb.SENSITIVITY_INTERNAL,
        requested_ttl_seconds=60,
    )
).SerializeToString()

LEEWAY = dt.timedelta(seconds=30)  # the harness's jwt_leeway_seconds (the default)


def exchange(channel: grpc.Channel, metadata: Sequence[tuple[str, str]] = ()) -> tuple[str, str]:
    """One Exchange: its status code and, when OK, the `sub` its credential was issued to."""
    unary = channel.unary_unary(EXCHANGE.path, None, None)  # bytes in, bytes out
    try:
        answer = unary(REQUEST, timeout=1.0, metadata=tuple(metadata))
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        assert_never_internal(code, error.details())
        return code.name, ""
    token = pb.ExchangeResponse.FromString(answer).credential.token
    claims = json.loads(jws.extract_compact(token.encode()).payload)
    return "OK", str(claims["sub"])


# -- JWT-SVIDs --------------------------------------------------------------------------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=60),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)
NEAR_IDS = [
    BILLING_BOT,
    f"spiffe://{EXAMPLE}/agents/Billing-Bot",
    f"spiffe://{EXAMPLE.upper()}/agents/billing-bot",
    f"spiffe://{EXAMPLE}:443/agents/billing-bot",
    f"spiffe://{EXAMPLE}/agents/../admin",
    f"spiffe://{EXAMPLE}/agents/billing-bot?x=1",
    f"spiffe://{EXAMPLE}/agents/%2e%2e",
    f"spiffe://{EXAMPLE}/",
    f"spiffe://{EXAMPLE}",
    f"spiffe://{OTHER}/agents/billing-bot",
    "spiffe://unknown.org/agents/billing-bot",
    "https://example.org/agents/billing-bot",
]
"""SPIFFE IDs (and not quite) close to the valid one."""
_IDS = st.one_of(
    st.sampled_from(NEAR_IDS),
    st.text(max_size=80),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(
        lambda path: f"spiffe://{EXAMPLE}/{path}"
    ),
)


@st.composite
def mutated_tokens(draw: st.DrawFn, pki: TestPki) -> str:
    """A valid JWT-SVID with a few characters replaced, dropped or inserted."""
    token = list(pki.jwt(BILLING_BOT, audience=AUDIENCE))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(token) - 1))
        action = draw(st.sampled_from(["replace", "drop", "insert"]))
        char = draw(st.sampled_from(_B64URL))
        if action == "replace":
            token[position] = char
        elif action == "drop" and len(token) > 1:
            del token[position]
        else:
            token.insert(position, char)
    return "".join(token)


@st.composite
def signed_tokens(draw: st.DrawFn, pki: TestPki) -> str:
    """Validly signed (ES256, by the trust domain's JWT key) with random header and claims."""
    header = draw(
        st.dictionaries(
            st.sampled_from(["kid", "typ", "crit", "jku", "x5u", "cty", "b64", "zip"]),
            _JSON,
            max_size=3,
        )
    )
    claims = draw(
        st.dictionaries(
            st.sampled_from(["sub", "aud", "exp", "iat", "nbf", "iss", "jti", "x"]),
            st.one_of(_JSON, _IDS),
            max_size=4,
        )
    )
    omit = draw(st.lists(st.sampled_from(["sub", "aud", "exp", "iat"]), max_size=2))
    try:
        return pki.jwt(BILLING_BOT, audience=AUDIENCE, header=header, claims=claims, omit=omit)
    except Exception:  # the JOSE library would not make this one: not a case for the server
        assume(False)
        raise


NEAR_MISSES: list[tuple[str, Any]] = [
    *(("header", {name: "x"}) for name in ("cty", "x5t", "nonce", "zip")),
    ("header", {"b64": True}),
    *(("header", {name: "https://example.org/keys"}) for name in ("jku", "x5u")),
    *(("header", {"typ": typ}) for typ in ("JWT", "JOSE", "jwt", "at+jwt", "JWS", "")),
    *(
        ("aud", aud)
        for aud in (AUDIENCE, [AUDIENCE], ["other", AUDIENCE], ["other"], "other", [], None)
    ),
    # seconds from now; the leeway is 30 s, so a few seconds around it are left out (clock races)
    *(("exp", offset) for offset in (600, 1, -10, -60, -3600, None, "soon", True)),
    *(("sub", sub) for sub in NEAR_IDS),
]


@st.composite
def near_miss_tokens(draw: st.DrawFn, pki: TestPki) -> str:
    """A valid JWT-SVID with one header or claim changed to a value close to a valid one: the
    cases where a missing check shows as a credential the oracle refuses."""
    change, value = draw(st.sampled_from(NEAR_MISSES))
    header: dict[str, Any] = value if change == "header" else {}
    claims: dict[str, Any] = {}
    omit: list[str] = []
    if change in ("aud", "exp", "sub") and value is None:
        omit.append(change)
    elif change == "exp" and isinstance(value, int) and not isinstance(value, bool):
        claims["exp"] = int(dt.datetime.now(dt.UTC).timestamp()) + value
    elif change in ("aud", "exp", "sub"):
        claims[change] = value
    # Always the example.org JWT key: a sub of another trust domain must then be refused (J-9).
    return pki.jwt(
        BILLING_BOT, audience=AUDIENCE, signer=EXAMPLE, header=header, claims=claims, omit=omit
    )


@st.composite
def raw_tokens(draw: st.DrawFn) -> str:
    """Arbitrary JSON header and claims with an arbitrary signature (alg none, HS256, ...)."""
    header = draw(
        st.one_of(
            st.fixed_dictionaries(
                {"alg": st.sampled_from(["none", "HS256", "RS256", "ES256", "EdDSA", ""])},
                optional={"kid": st.text(max_size=20), "typ": st.text(max_size=8)},
            ),
            _JSON,
        )
    )
    claims = draw(st.one_of(st.fixed_dictionaries({"sub": _IDS, "aud": st.just(AUDIENCE)}), _JSON))
    return TestPki.raw_jws(header, claims, draw(st.binary(max_size=96)))


def assert_jwt_svid_acceptable(value: str, subject: str, pki: TestPki) -> None:
    """What a credential for the authorization header `value`, issued to `subject`, implies."""
    scheme, _, token = value.partition(" ")
    assert scheme.lower() == "bearer", value
    token = token.strip(" ")
    public_key = JWKRegistry.import_key(pki.jwt_public_pem(EXAMPLE), "EC")
    registry = JWSRegistry(algorithms=["ES256"], strict_check_header=False)
    # J-1, J-2, J-9: a compact JWS that the trust domain's JWT key signed, ES256 here
    signed = jws.deserialize_compact(token, public_key, registry=registry)
    header, claims = signed.headers(), json.loads(signed.payload)
    assert set(header) <= {"alg", "kid", "typ"}, header  # J-3
    assert header.get("kid", pki.example.jwt_kid) == pki.example.jwt_kid, header  # J-9 by kid
    assert header.get("typ") in (None, "JWT", "JOSE"), header  # J-5
    assert claims["sub"] == subject, (claims, subject)  # J-6: the identity the credential names
    assert subject.startswith(f"spiffe://{EXAMPLE}/"), subject  # J-9: sub's own trust domain
    aud = claims["aud"]
    assert aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud), aud  # J-7
    exp = claims["exp"]
    assert isinstance(exp, int | float) and not isinstance(exp, bool), exp  # J-8
    assert exp > (dt.datetime.now(dt.UTC) - LEEWAY).timestamp(), exp


async def test_hostile_jwt_svids_over_server_tls_never_fail_the_server(harness: Harness) -> None:
    channel = tls_channel(harness)
    codes: Counter[str] = Counter()
    tokens = st.one_of(
        mutated_tokens(harness.pki),
        signed_tokens(harness.pki),
        raw_tokens(),
        _IDS,
    )

    @fuzz_settings(150)
    @given(token=tokens, scheme=st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "", "Basic "]))
    def fuzz(token: str, scheme: str) -> None:
        value = scheme + token
        assume(value.isascii() and value.isprintable() and len(value) < 8000)
        code, subject = exchange(channel, [("authorization", value)])
        codes[code] += 1
        if code == "OK":
            assert_jwt_svid_acceptable(value, subject, harness.pki)

    try:
        await asyncio.to_thread(fuzz)
    finally:
        channel.close()
    assert codes["UNAUTHENTICATED"] > 0
    await assert_still_serving(harness)


async def test_near_miss_jwt_svids_get_a_credential_only_when_every_rule_holds(
    harness: Harness,
) -> None:
    channel = tls_channel(harness)
    codes: Counter[str] = Counter()

    @fuzz_settings(100)
    @given(token=near_miss_tokens(harness.pki))
    def fuzz(token: str) -> None:
        code, subject = exchange(channel, [("authorization", f"Bearer {token}")])
        codes[code] += 1
        if code == "OK":
            assert_jwt_svid_acceptable(f"Bearer {token}", subject, harness.pki)

    try:
        await asyncio.to_thread(fuzz)
    finally:
        channel.close()
    assert codes["OK"] > 0 and codes["UNAUTHENTICATED"] > 0  # both sides of the rules reached


# -- X.509-SVIDs ------------------------------------------------------------------------------

_EKUS = st.sampled_from([CLIENT_AUTH, SERVER_AUTH, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.4")])


@st.composite
def hostile_leaves(draw: st.DrawFn, pki: TestPki) -> tuple[Issued, list[Issued]]:
    """A leaf with random SANs, flags, key usage, EKU, validity and issuer, and its chain."""
    domain = pki.domains[draw(st.sampled_from([EXAMPLE, OTHER]))]
    issuer_name = draw(st.sampled_from(["root", "root", "intermediate", "self", "foreign"]))
    issuer: Issued | None = {
        "root": domain.root,
        "intermediate": domain.intermediate,
        "self": None,
        "foreign": pki.domains[OTHER if domain.trust_domain == EXAMPLE else EXAMPLE].root,
    }[issuer_name]
    hours = st.integers(-72, 72).map(lambda h: pki.now + dt.timedelta(hours=h))
    choices: dict[str, st.SearchStrategy[Any]] = {
        "uri_sans": st.lists(_IDS, max_size=3),
        "dns_sans": st.lists(st.sampled_from(["localhost", "batch.legacy.internal"]), max_size=2),
        "ca": st.sampled_from([True, None]),
        "path_length": st.integers(0, 3),
        "key_usage": st.none() | st.frozensets(st.sampled_from(list(Usage))),
        "extended_key_usage": st.none() | st.lists(_EKUS, max_size=3),
        "key_type": st.sampled_from([KeyType.EC_P384, KeyType.ED25519]),
        "not_before": hours,
        "not_after": hours,
    }
    # A few knobs turned at a time, so most certificates get through the TLS handshake and
    # reach taskpass's own checks; the others are refused by the handshake (UNAVAILABLE).
    turned = draw(st.sets(st.sampled_from(sorted(choices)), min_size=1, max_size=3))
    knobs = {name: draw(choices[name]) for name in sorted(turned)}
    assume(knobs.get("not_before", pki.not_before) < knobs.get("not_after", pki.not_after))
    try:
        leaf = pki.leaf(BILLING_BOT, issuer=issuer, **knobs)
    except (ValueError, TypeError):  # cryptography will not build it: not a case for the server
        assume(False)
        raise
    chain = [domain.intermediate] if issuer_name == "intermediate" else []
    return leaf, chain


def _tlv(data: bytes, at: int) -> tuple[int, int]:
    """(offset of the value, offset after it) of the DER element at `at`."""
    length = data[at + 1]
    start = at + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    return start, start + length


def _der(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + value


def resigned(leaf: Issued, tbs: bytes, issuer: Issued) -> bytes:
    """A certificate of `tbs` (the signed part, mutated) signed again by `issuer`: PEM.

    Test-only DER assembly: Certificate ::= SEQUENCE { tbs, signatureAlgorithm, BIT STRING }.
    """
    der = leaf.der
    body, _ = _tlv(der, 0)
    _, after_tbs = _tlv(der, body)
    _, after_alg = _tlv(der, after_tbs)
    algorithm = der[after_tbs:after_alg]
    assert isinstance(issuer.key, ec.EllipticCurvePrivateKey)
    signature = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    certificate = _der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature))
    b64 = base64.encodebytes(certificate).decode().replace("\n", "")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    ).encode()


@st.composite
def mutated_certificates(draw: st.DrawFn, pki: TestPki, leaf: Issued) -> bytes:
    """The leaf's signed bytes with a few bytes changed, signed again by the real root: in the
    SPIFFE ID (the structure holds, so TLS lets it through to taskpass) or anywhere."""
    tbs = bytearray(leaf.cert.tbs_certificate_bytes)
    start = tbs.find(BILLING_BOT.encode())
    assert start > 0
    in_san = st.integers(start, start + len(BILLING_BOT) - 1)
    anywhere = st.integers(0, len(tbs) - 1)
    where = draw(st.sampled_from([in_san, anywhere]))
    for _ in range(draw(st.integers(1, 3))):
        tbs[draw(where)] = draw(st.integers(0, 255))
    return resigned(leaf, bytes(tbs), pki.example.root)


def _key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def exchange_presenting(harness: Harness, chain_pem: bytes, key_pem: bytes) -> str:
    """One Exchange over a new mTLS connection presenting `chain_pem`: its status code, and
    when OK, the credential checked against the presented leaf."""
    channel = certificate_channel(harness, chain_pem, key_pem)
    try:
        code, subject = exchange(channel)
    finally:
        channel.close()
    if code == "OK":
        assert_x509_svid_acceptable(chain_pem, subject, harness.pki)
    return code


def assert_x509_svid_acceptable(chain_pem: bytes, subject: str, pki: TestPki) -> None:
    """What a credential for the presented chain, issued to `subject`, implies."""
    leaf = x509.load_pem_x509_certificate(chain_pem)  # the first certificate is the leaf
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [subject]
    domain = pki.domains[subject.removeprefix("spiffe://").split("/", 1)[0]]
    # issued by a CA of the ID's own trust domain (the fuzzer signs with these or others)
    assert leaf.issuer in (domain.root.cert.subject, domain.intermediate.cert.subject), leaf
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc  # X-9, dates
    extensions = {e.oid: e.value for e in leaf.extensions}
    constraints = extensions.get(x509.OID_BASIC_CONSTRAINTS)
    assert not (isinstance(constraints, x509.BasicConstraints) and constraints.ca)
    usage = extensions.get(x509.OID_KEY_USAGE)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    ekus = extensions.get(x509.OID_EXTENDED_KEY_USAGE)
    assert ekus is None or (isinstance(ekus, x509.ExtendedKeyUsage) and CLIENT_AUTH in ekus)


async def test_hostile_x509_svids_over_mtls_never_fail_the_server(harness: Harness) -> None:
    codes: Counter[str] = Counter()

    @fuzz_settings(60)
    @given(presented=hostile_leaves(harness.pki))
    def fuzz(presented: tuple[Issued, list[Issued]]) -> None:
        leaf, chain = presented
        pem = leaf.pem + b"".join(c.pem for c in chain)
        codes[exchange_presenting(harness, pem, _key_pem(leaf))] += 1

    await asyncio.to_thread(fuzz)
    assert codes["UNAUTHENTICATED"] > 0  # taskpass's own checks refused what TLS let through
    await assert_still_serving(harness)


async def test_mutated_and_resigned_certificates_over_mtls_never_fail_the_server(
    harness: Harness,
) -> None:
    leaf = harness.pki.leaf(BILLING_BOT)
    codes: Counter[str] = Counter()

    @fuzz_settings(60)
    @given(pem=mutated_certificates(harness.pki, leaf))
    def fuzz(pem: bytes) -> None:
        codes[exchange_presenting(harness, pem, _key_pem(leaf))] += 1

    await asyncio.to_thread(fuzz)
    assert codes["UNAUTHENTICATED"] > 0  # mutated SPIFFE IDs reached taskpass and were refused
    await assert_still_serving(harness)


def test_a_resigned_unmutated_certificate_is_the_original() -> None:
    """The DER assembly above is right: re-signing the untouched bytes gives a valid cert."""
    pki = TestPki()
    leaf = pki.leaf(BILLING_BOT)
    again = x509.load_pem_x509_certificate(
        resigned(leaf, leaf.cert.tbs_certificate_bytes, pki.example.root)
    )
    assert again.tbs_certificate_bytes == leaf.cert.tbs_certificate_bytes
    root_key = pki.example.root.key
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    root_key.public_key().verify(
        again.signature, again.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
    )
    assert dataclasses.replace(leaf).cert.subject == again.subject
