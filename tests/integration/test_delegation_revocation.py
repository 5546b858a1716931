"""Cascade revocation over the real server: revoking a parent credential, its task or its holder
revokes every descendant, three levels deep; every watcher sees each event once; Introspect
reports the descendants inactive; and the CLI delegates as the README says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taskpass.client import PermissionDenied, TaskCredential
from taskpass.client.revocations import RevocationAdmin, RevokeResult
from taskpass.client.security_events import RevocationKind
from taskpass.server.cli.main import main
from tests.integration.delegating import (
    RUNNER,
    TASK_ID,
    agent,
    chain,
    read,
    start_delegation,
    tool,
    verified_claims,
)
from tests.integration.harness import ADMIN, BILLING_BOT, SIDECAR, Harness
from tests.integration.watching import Follower, Followers
from tests.support.pki import TestPki


@pytest.fixture
async def harness(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    running = await start_delegation(tmp_path, pki)
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)


@pytest.fixture
async def followers(harness: Harness) -> AsyncIterator[Followers]:
    made = Followers(harness)
    yield made
    await made.close()


async def active(harness: Harness, credentials: list[TaskCredential]) -> list[bool]:
    # Asked by a relying party's sidecar: the holder may be banned, and then may call nothing.
    async with harness.agent(SIDECAR) as client:
        return [(await client.introspect(c.token)).active for c in credentials]


async def seen_revoked(
    harness: Harness, follower: Follower, credentials: list[TaskCredential]
) -> list[bool]:
    """What the watcher answers for each token, asked with the token's verified claims."""
    return [
        follower.watcher.is_token_revoked(await verified_claims(harness, c.token))
        for c in credentials
    ]


def credential_events(follower: Follower) -> list[str | None]:
    return [r.jti for r in follower.got if r.kind is RevocationKind.CREDENTIAL]


Revoke = Callable[[Harness, list[TaskCredential]], Awaitable[RevokeResult | tuple[str, ...]]]


async def _revoke_root(harness: Harness, chain: list[TaskCredential]) -> RevokeResult:
    async with harness.agent(ADMIN) as admin:
        return await RevocationAdmin(admin).revoke_credential(chain[0].jti, reason="leaked")


async def _complete_root_task(harness: Harness, chain: list[TaskCredential]) -> tuple[str, ...]:
    async with agent(harness).client() as client:
        return await client.complete_task(TASK_ID)


async def _ban_root_holder(harness: Harness, chain: list[TaskCredential]) -> RevokeResult:
    async with harness.agent(ADMIN) as admin:
        return await RevocationAdmin(admin).ban(BILLING_BOT, reason="compromised")


def _jtis(result: RevokeResult | tuple[str, ...]) -> tuple[str, ...]:
    return result if isinstance(result, tuple) else result.revoked_jtis


@pytest.mark.parametrize(
    ("revoke", "first_kind"),
    [
        pytest.param(_revoke_root, RevocationKind.CREDENTIAL, id="the-parent-credential"),
        pytest.param(_complete_root_task, RevocationKind.TASK, id="its-task"),
        pytest.param(_ban_root_holder, RevocationKind.IDENTITY, id="its-holder-identity"),
    ],
)
async def test_revoking_the_root_reaches_every_descendant_three_levels_deep(
    harness: Harness, followers: Followers, revoke: Revoke, first_kind: RevocationKind
) -> None:
    watching = [await followers.ready() for _ in range(2)]
    credentials = await chain(harness, depth=3)
    descendants = credentials[1:]
    assert await active(harness, credentials) == [True] * 4

    revoked = await revoke(harness, credentials)

    assert _jtis(revoked) == tuple(c.jti for c in credentials)
    assert await active(harness, credentials) == [False] * 4
    for follower in watching:
        await follower.has(4)
        assert follower.got[0].kind is first_kind
        assert credential_events(follower)[-3:] == [c.jti for c in descendants]
        assert len(follower.seqs) == len(set(follower.seqs)) == 4  # each event once, in order
        assert follower.seqs == sorted(follower.seqs)
        assert follower.watcher.duplicates == follower.watcher.rejected == 0
        assert await seen_revoked(harness, follower, credentials) == [True] * 4
        reasons = {r.jti: r.reason for r in follower.got}
        assert reasons[descendants[-1].jti].startswith("delegation chain revoked")


async def test_banning_a_delegate_revokes_what_it_holds_and_below_but_not_above(
    harness: Harness, followers: Followers
) -> None:
    follower = await followers.ready()
    credentials = await chain(harness, depth=3)

    async with harness.agent(ADMIN) as admin:
        banned = await RevocationAdmin(admin).ban(tool(2), reason="tool compromised")

    below = credentials[2:]
    assert banned.revoked_jtis == tuple(c.jti for c in below)
    assert await active(harness, credentials) == [True, True, False, False]
    await follower.has(3)
    assert follower.got[0].kind is RevocationKind.IDENTITY
    # the delegate's own credential has the principal as `sub`: it is announced by jti too
    assert credential_events(follower) == [c.jti for c in below]
    assert await seen_revoked(harness, follower, credentials) == [False, False, True, True]


async def test_a_revoked_link_cannot_be_extended_and_revocation_does_not_climb(
    harness: Harness,
) -> None:
    credentials = await chain(harness, depth=2)
    async with harness.agent(ADMIN) as admin:
        await RevocationAdmin(admin).revoke_credential(credentials[1].jti)

    with pytest.raises(PermissionDenied, match="the parent credential is revoked"):
        await agent(harness, tool(3)).delegate(credentials[2], task=read(ttl=60))
    assert await active(harness, credentials) == [True, False, False]
    fresh = await agent(harness, RUNNER).delegate(credentials[0], task=read(ttl=60))
    assert (await active(harness, [fresh])) == [True]


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_cli_delegates_on_behalf_of_a_parent_token_file(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = await agent(harness).exchange(read())
    parent_file = harness.directory / "parent.jwt"
    parent_file.write_text(parent.token + "\n")
    runner = agent(harness, RUNNER)
    cert, key = harness.pki.write_identity(harness.directory / "cli", "runner", runner.leaf)
    connection = ["--server", harness.mtls_target, "--ca", str(harness.server_ca)]
    connection += ["--cert", str(cert), "--key", str(key)]
    task = ["--task-id", TASK_ID, "--audience", "payments-api", "--action", "read"]

    code, out, err = await _cli(
        capsys,
        "exchange",
        *connection,
        *task,
        "--on-behalf-of",
        str(parent_file),
        "--scope",
        "payments:read",
        "--ttl",
        "120",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["scopes"] == ["payments:read"]
    claims = await verified_claims(harness, result["token"])
    assert (claims["sub"], claims["client_id"], claims["act"]) == (
        BILLING_BOT,
        RUNNER,
        {"sub": RUNNER},
    )

    code, _, err = await _cli(
        capsys, "exchange", *connection, *task, "--scope", "payments:read", "--ttl", "60"
    )
    assert code == 2
    assert "give --on-behalf-of too" in err

    code, _, err = await _cli(
        capsys,
        "exchange",
        *connection,
        *task,
        "--on-behalf-of",
        str(parent_file),
        "--scope",
        "payments:write",
        "--ttl",
        "60",
    )
    assert code == 3
    assert "wider than the parent credential's" in err
