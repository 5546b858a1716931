"""`taskpass keys rotate`: the next key is published before it signs, a retired key stays
published until its last token expires, and a relying party's verifier keeps working throughout."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import jwt as pyjwt
import pytest

from taskpass.client import (
    AdminClient,
    CredentialVerifier,
    FailedPrecondition,
    PermissionDenied,
    Task,
)
from taskpass.server.clock import FixedClock
from tests.integration.harness import BILLING_BOT, Harness, start_harness
from tests.support.pki import TestPki

ADMIN = "spiffe://example.org/security/admin"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
async def clocked(tmp_path: Path, pki: TestPki, clock: FixedClock) -> AsyncIterator[Harness]:
    harness = await start_harness(tmp_path, pki, clock=clock)
    try:
        yield harness
    finally:
        await harness.server.stop(grace=0.5)


def kid_of(token: str) -> str:
    return str(pyjwt.get_unverified_header(token)["kid"])


async def test_rotation_publishes_first_signs_later_and_unpublishes_last(
    clocked: Harness, clock: FixedClock
) -> None:
    rotation = clocked.server.components.rotation
    leaf = clocked.pki.leaf(BILLING_BOT)
    async with clocked.client(leaf) as agent, clocked.agent(ADMIN) as admin_client:
        admin = AdminClient.over(admin_client)
        verifier = CredentialVerifier.from_client(
            agent, issuer="https://taskpass.test", audience="payments-api", clock=clock
        )
        old = await agent.exchange(Task(task_id="t-old", audience="payments-api", action="read"))
        upcoming = await admin.rotate_signing_key()
        assert upcoming.state == "next"
        assert upcoming.signs_from is not None

        # Published at once, but not signing yet: a relying party can fetch it in time.
        kids = {k["kid"] for k in (await agent.jwks())["keys"]}
        assert {kid_of(old.token), upcoming.kid} <= kids
        before = await agent.exchange(Task(task_id="t-1", audience="payments-api", action="read"))
        assert kid_of(before.token) == kid_of(old.token)

        clock.advance(dt.timedelta(seconds=121))
        await rotation.tick()
        new = await agent.exchange(Task(task_id="t-2", audience="payments-api", action="read"))
        assert kid_of(new.token) == upcoming.kid
        states = {k.kid: k.state for k in await admin.list_signing_keys()}
        assert states == {upcoming.kid: "active", kid_of(old.token): "retired"}
        # Tokens of both keys verify: the retired key is still published.
        await verifier.verify(old.token, peer_certificate=leaf.der)
        await verifier.verify(new.token, peer_certificate=leaf.der)

        # Once every token the old key signed has expired (plus its reservation), it goes.
        clock.advance(dt.timedelta(hours=2))
        await rotation.tick()
        kids = {k["kid"] for k in (await agent.jwks())["keys"]}
        assert kids == {upcoming.kid}


async def test_rotating_twice_before_promotion_is_refused(harness: Harness) -> None:
    async with harness.agent(ADMIN) as admin_client:
        admin = AdminClient.over(admin_client)
        await admin.rotate_signing_key()
        with pytest.raises(FailedPrecondition, match="already published as next"):
            await admin.rotate_signing_key()


async def test_only_admins_rotate_keys(harness: Harness) -> None:
    async with harness.agent() as agent:
        with pytest.raises(PermissionDenied, match="admins"):
            await AdminClient.over(agent).rotate_signing_key()


async def test_rotation_is_audited(harness: Harness) -> None:
    async with harness.agent(ADMIN) as admin_client:
        upcoming = await AdminClient.over(admin_client).rotate_signing_key()
    records = await harness.server.store.audit.read(after_seq=0, limit=1000)
    published = [r for r in records if r.kind == "key_published"]
    assert [r.payload["kid"] for r in published] == [upcoming.kid]
    assert published[0].actor == ADMIN  # the admin who asked, not the server
