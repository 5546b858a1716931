"""Helpers of the delegation tests: a harness on the delegation policy, agents that keep their
certificate (so a token's `cnf` can be checked against it), and delegation chains."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt

from taskpass.client import Task, TaskCredential, TaskpassClient
from taskpass.server.clock import Clock
from taskpass.server.pki.builder import Issued
from tests.integration.harness import BILLING_BOT, ISSUER, SIDECAR, Harness, start_harness
from tests.support.pki import EXAMPLE, TestPki

POLICY = Path(__file__).parent / "delegation_policy.yaml"
RUNNER = f"spiffe://{EXAMPLE}/tools/runner"
TASK_ID = "t-deleg"


def tool(n: int) -> str:
    return f"spiffe://{EXAMPLE}/tools/hop-{n}"


async def start_delegation(directory: Path, pki: TestPki, *, clock: Clock | None = None) -> Harness:
    return await start_harness(directory, pki, policy=POLICY, clock=clock)


def read(
    task_id: str = TASK_ID,
    *,
    ttl: int = 600,
    audience: str = "payments-api",
    sensitivity: str = "internal",
) -> Task:
    return Task(
        task_id=task_id,
        audience=audience,
        action="read",
        sensitivity=sensitivity,
        ttl=dt.timedelta(seconds=ttl),
    )


def thumbprint(leaf: Issued) -> str:
    """RFC 8705 x5t#S256 of a certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(leaf.der).digest()).rstrip(b"=").decode()


@dataclass
class Agent:
    """A workload with one certificate for the whole test."""

    harness: Harness
    spiffe_id: str
    leaf: Issued

    def client(self) -> TaskpassClient:
        name = self.spiffe_id.rsplit("/", 1)[-1]
        return self.harness.client(self.leaf, name=name)

    async def exchange(self, task: Task) -> TaskCredential:
        async with self.client() as client:
            return await client.exchange(task)

    async def delegate(
        self,
        parent: TaskCredential | str,
        *,
        task: Task | None = None,
        ttl: int = 120,
        scopes: tuple[str, ...] = (),
    ) -> TaskCredential:
        """Exchange `parent` (a credential, or a raw token) for this agent's own."""
        token = parent if isinstance(parent, str) else parent.token
        async with self.client() as client:
            return await client.exchange(task or read(ttl=ttl), on_behalf_of=token, scopes=scopes)


def agent(harness: Harness, spiffe_id: str = BILLING_BOT) -> Agent:
    return Agent(harness, spiffe_id, harness.pki.leaf(spiffe_id))


async def chain(harness: Harness, depth: int, *, task_id: str = TASK_ID) -> list[TaskCredential]:
    """The billing bot's credential, then `depth` delegations, each to the next tool and each a
    minute shorter-lived than the one before: root first."""
    credentials = [await agent(harness).exchange(read(task_id))]
    for n in range(1, depth + 1):
        hop = agent(harness, tool(n))
        task = read(task_id, ttl=600 - 60 * n)
        credentials.append(await hop.delegate(credentials[-1], task=task))
    return credentials


async def verified_claims(harness: Harness, token: str, audience: str = "payments-api") -> Any:
    """The token's claims, verified with PyJWT alone and the server's published JWKS (asked by a
    sidecar: the token's holder may be banned, and then may call nothing)."""
    async with harness.agent(SIDECAR) as client:
        jwks = await client.jwks()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = pyjwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    return pyjwt.decode(
        token,
        key,
        algorithms=["ES256", "EdDSA"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
