"""The attested exchange end to end: a real server on loopback, real TLS, real SQLite."""

from __future__ import annotations

import datetime as dt

import jwt as pyjwt
import pytest

from taskpass.client import Denied, Task
from tests.integration.harness import BILLING_BOT, ISSUER, Harness

READ = Task(task_id="t-42", audience="payments-api", action="read", sensitivity="internal")


async def test_x509_svid_exchange_returns_a_bound_at_jwt(harness: Harness) -> None:
    async with harness.agent() as client:
        credential = await client.exchange(READ)
        jwks = await client.jwks()
    assert credential.scopes == ("payments:read",)
    assert credential.matched_rules == ("grant.payments.read",)
    assert credential.policy_version.startswith("sha256:")
    header = pyjwt.get_unverified_header(credential.token)
    assert header["typ"] == "at+jwt"
    key = pyjwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = pyjwt.decode(
        credential.token, key, algorithms=["ES256"], audience="payments-api", issuer=ISSUER
    )
    assert claims["sub"] == claims["client_id"] == BILLING_BOT
    assert claims["txn"] == "t-42"
    assert claims["jti"] == credential.jti
    assert "x5t#S256" in claims["cnf"]
    assert claims["exp"] - claims["iat"] == 600


async def test_denial_names_the_rules_and_decision(harness: Harness) -> None:
    async with harness.agent() as client:
        with pytest.raises(Denied) as info:
            await client.exchange(
                Task(
                    task_id="t-del",
                    audience="payments-api",
                    action="delete",
                    ttl=dt.timedelta(seconds=60),
                )
            )
    assert info.value.matched_rules == ("deny.delete",)
    assert info.value.decision_id.startswith("dec_")
    assert "deny.delete" in info.value.message
