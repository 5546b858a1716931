"""In-process figures: policy decisions per second, offline verifications per second.

Both are measured in this process, per call, against targets in DESIGN.md ("Performance
targets": under 30 us p50 per decision with 100 rules; over 10,000 verifications/s/core).
Verification is measured with the SDK's CredentialVerifier (what a relying party runs: JOSE and
claim checks, the certificate binding) on each token in full and on tokens it verified before,
with PyJWT and joserfc alone, and as the bare ES256 signature check: the ceiling no full check of
these tokens passes on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet

from bench import report
from bench.environment import AGENT, AUDIENCE, ISSUER
from taskpass.client.jwks import StaticJwks
from taskpass.client.verifier import CredentialVerifier, certificate_thumbprint
from taskpass.server.clock import SystemClock
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.policy.decision import Outcome
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor
from tests.support.pki import TestPki


def policy_yaml(rules: int) -> bytes:
    """A document of `rules` rules shaped like a real one: a few denies and caps, many grants
    over several audiences, a quarter on the audience the benchmark asks for, most with a CEL
    condition. The request matches only the last grant."""
    lines = ['version: "bench"', "rules:"]
    fixed = [
        "  - {id: deny.delete, effect: deny, actions: [delete]}",
        "  - id: deny.agents.restricted\n    effect: deny\n"
        '    workload: "spiffe://example.org/agents/*"\n    when: task.sensitivity >= restricted',
        '  - id: cap.prod\n    effect: cap\n    when: task.environment == "prod"\n    max_ttl: 5m',
    ]
    lines += fixed
    for k in range(rules - len(fixed) - 1):
        audience = AUDIENCE if k % 4 == 0 else f"api-{k % 7}"
        lines.append(
            f"  - id: grant.{k}\n    effect: grant\n"
            f'    workload: "spiffe://example.org/agents/bot-{k}"\n'
            f"    audience: {audience}\n    actions: [read, write]\n"
            f'    when: task.sensitivity <= confidential && task.tool != "forbidden-{k}"\n'
            f'    max_ttl: 15m\n    scopes: ["scope:{k}"]'
        )
    lines.append(
        "  - id: grant.payments.read\n    effect: grant\n"
        '    workload: "spiffe://example.org/agents/*"\n'
        f"    audience: {AUDIENCE}\n    actions: [read]\n"
        "    when: task.sensitivity <= confidential\n"
        '    max_ttl: 15m\n    scopes: ["payments:read"]'
    )
    return ("\n".join(lines) + "\n").encode()


def _workload(now: dt.datetime, cert_thumbprint: str = "x" * 43) -> Workload:
    return Workload(
        id=AGENT,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=now + dt.timedelta(hours=1),
        cert_thumbprint=cert_thumbprint,
    )


def _task(i: int) -> TaskDescriptor:
    return TaskDescriptor(
        task_id=f"micro-{i}",
        audience=AUDIENCE,
        action="read",
        sensitivity=Sensitivity.INTERNAL,
        requested_ttl=dt.timedelta(minutes=5),
        tool="bench",
        environment="staging",
        reason="micro benchmark",
    )


def _per_call(fn: Callable[[int], object], calls: int) -> dict[str, float]:
    """Time each call; report calls per second (over the whole loop) and the p50/p99 in us."""
    samples = []
    began = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append(time.perf_counter_ns() - t0)
    return _figures(samples, time.perf_counter() - began)


async def _per_await(fn: Callable[[int], Awaitable[object]], calls: int) -> dict[str, float]:
    """_per_call for a coroutine function, every call awaited on one running loop."""
    samples = []
    began = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter_ns()
        await fn(i)
        samples.append(time.perf_counter_ns() - t0)
    return _figures(samples, time.perf_counter() - began)


def _figures(samples_ns: list[int], elapsed: float) -> dict[str, float]:
    """Calls per second over the whole loop, and the p50/p99 of the calls in us."""
    samples_ns.sort()
    return {
        "per_second": len(samples_ns) / elapsed,
        "p50_us": statistics.median(samples_ns) / 1000,
        "p99_us": samples_ns[int(len(samples_ns) * 0.99)] / 1000,
    }


def policy_decisions(rules: int, calls: int) -> dict[str, float]:
    engine = PolicyEngine.from_yaml(policy_yaml(rules), source=f"bench-{rules}")
    now = dt.datetime.now(dt.UTC)
    workload = _workload(now)
    requests = [PolicyRequest(workload=workload, task=_task(i), now=now) for i in range(1000)]
    if engine.decide(requests[0]).outcome is not Outcome.ALLOW:
        raise RuntimeError("the benchmark policy should allow the benchmark request")
    for request in requests:  # warm the plan caches
        engine.decide(request)
    result = _per_call(lambda i: engine.decide(requests[i % len(requests)]), calls)
    return {"rules": rules, **result}


def verifications(key_dir: Path, calls: int) -> dict[str, dict[str, float]]:
    """Relying-party verification of issued at+jwt tokens with the published JWKS."""
    clock = SystemClock()
    keys = KeyRing.load_or_create(key_dir, algorithm="ES256", clock=clock)
    issuer = TokenIssuer(issuer=ISSUER, keys=keys, clock=clock)
    now = clock.now()
    engine = PolicyEngine.from_yaml(policy_yaml(10), source="bench-verify")
    # Tokens bound to a real certificate, which the SDK's verifier is shown as the caller's.
    peer = TestPki(now.replace(microsecond=0)).leaf(AGENT).der
    workload = _workload(now, certificate_thumbprint(peer))
    tokens = []
    for i in range(200):
        task = _task(i)
        decision = engine.decide(PolicyRequest(workload=workload, task=task, now=now))
        tokens.append(issuer.issue(workload=workload, task=task, decision=decision).token)
    jwks: dict[str, Any] = keys.jwks()
    pyjwt_key = pyjwt.PyJWKSet.from_dict(jwks).keys[0]
    key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    claims_registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )

    def with_pyjwt(i: int) -> object:
        return pyjwt.decode(
            tokens[i % len(tokens)],
            pyjwt_key,
            algorithms=["ES256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "jti"]},
        )

    def with_joserfc(i: int) -> object:
        token = jose_jwt.decode(tokens[i % len(tokens)], key_set, algorithms=["ES256"])
        claims_registry.validate(token.claims)
        return token

    # Every token checked in full (the cache off), as on the first call with a credential...
    sdk = CredentialVerifier(StaticJwks(jwks), issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    # ...and as on its holder's next calls: the signature check remembered.
    seen = CredentialVerifier(StaticJwks(jwks), issuer=ISSUER, audience=AUDIENCE)

    def verifying(verifier: CredentialVerifier) -> Callable[[int], Awaitable[object]]:
        async def verify(i: int) -> object:
            return await verifier.verify(tokens[i % len(tokens)], peer_certificate=peer)

        return verify

    async def sdk_figures(verifier: CredentialVerifier) -> dict[str, float]:
        await verifier.refresh()
        for i in range(len(tokens)):  # warm: each token seen once
            await verifier.verify(tokens[i], peer_certificate=peer)
        return await _per_await(verifying(verifier), calls)

    # The signature check alone, on the signing input and DER signature made beforehand.
    public = key_set.keys[0]
    assert isinstance(public, ECKey)
    signed = [_signature_input(token) for token in tokens]
    ecdsa = ec.ECDSA(hashes.SHA256())

    def signature_only(i: int) -> object:
        message, signature = signed[i % len(signed)]
        public.public_key.verify(signature, message, ecdsa)
        return None

    return {
        "taskpass sdk": asyncio.run(sdk_figures(sdk)),
        report.SEEN_BEFORE: asyncio.run(sdk_figures(seen)),
        "pyjwt": _per_call(with_pyjwt, calls),
        "joserfc": _per_call(with_joserfc, calls),
        report.SIGNATURE_ONLY: _per_call(signature_only, calls),
    }


def _signature_input(token: str) -> tuple[bytes, bytes]:
    """A compact JWS's signing input and its ES256 signature as DER (r and s, 32 bytes each)."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    return f"{header}.{payload}".encode(), encode_dss_signature(r, s)
