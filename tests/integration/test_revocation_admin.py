"""Security admins revoke credentials and tasks, ban and unban identities; nobody else may."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.client import NotFound, PermissionDenied, Task, TaskpassClient
from taskpass.client.revocations import RevocationAdmin
from taskpass.client.security_events import RevocationKind
from taskpass.server.cli.main import main
from tests.integration.harness import ADMIN, BILLING_BOT, REPORT_BOT, SIDECAR, Harness
from tests.integration.watching import WAIT, Followers, claims
from tests.support.pki import TestPki

AGENTS = "spiffe://example.org/agents"


@pytest.fixture
async def followers(harness: Harness) -> AsyncIterator[Followers]:
    made = Followers(harness)
    yield made
    await made.close()


@pytest.fixture
async def admin(harness: Harness) -> AsyncIterator[RevocationAdmin]:
    async with harness.agent(ADMIN) as client:
        yield RevocationAdmin(client)


def read_task(task_id: str) -> Task:
    return Task(
        task_id=task_id, audience="payments-api", action="read", ttl=dt.timedelta(minutes=5)
    )


async def test_a_ban_revokes_what_the_identity_holds_blocks_its_exchanges_until_unban(
    harness: Harness, followers: Followers, admin: RevocationAdmin
) -> None:
    follower = await followers.ready()
    async with harness.agent() as agent, harness.agent(REPORT_BOT) as other:
        held = await agent.exchange(read_task("t-1"))
        spared = await other.exchange(read_task("t-2"))

        banned = await admin.ban(BILLING_BOT, reason="key leaked")

        assert banned.revoked_jtis == (held.jti,)
        assert banned.ban is not None
        assert banned.ban.banned_by == ADMIN
        with pytest.raises(PermissionDenied, match="banned by security; ask the security team"):
            await agent.exchange(read_task("t-3"))
        with pytest.raises(PermissionDenied, match="banned by security"):
            await agent.introspect(held.token)  # a banned identity may call nothing at all
        assert not (await other.introspect(held.token)).active
        assert (await other.introspect(spared.token)).active
        await follower.has(1)
        assert follower.got[0].kind is RevocationKind.IDENTITY
        assert follower.watcher.is_token_revoked(claims(held, "t-1"))
        assert not follower.watcher.is_token_revoked(claims(spared, "t-2", REPORT_BOT))
        assert [b.identity for b in await admin.list_bans()] == [BILLING_BOT]

        await admin.unban(BILLING_BOT, reason="new key")

        after = await agent.exchange(read_task("t-4"))
        assert (await agent.introspect(after.token)).active
        assert not (await agent.introspect(held.token)).active  # what the ban revoked stays so
    assert await admin.list_bans() == ()


async def test_a_pattern_ban_covers_every_identity_under_it(
    harness: Harness, admin: RevocationAdmin
) -> None:
    banned = await admin.ban(f"{AGENTS}/*")
    assert banned.revoked_count == 0
    for identity in (BILLING_BOT, REPORT_BOT):
        async with harness.agent(identity) as agent:
            with pytest.raises(PermissionDenied, match=rf"by the ban on {AGENTS}/\*"):
                await agent.exchange(read_task("t-1"))


async def test_revoking_a_credential_or_a_task_is_streamed_and_introspected_inactive(
    harness: Harness, followers: Followers, admin: RevocationAdmin
) -> None:
    follower = await followers.ready()
    async with harness.agent() as agent:
        one = await agent.exchange(read_task("t-1"))
        kept = await agent.exchange(read_task("t-1"))
        task = await agent.exchange(read_task("t-2"))

        by_jti = await admin.revoke_credential(one.jti, reason="leaked")
        by_task = await admin.revoke_task("t-2", requester=BILLING_BOT)

        assert by_jti.revoked_jtis == (one.jti,)
        assert by_task.revoked_jtis == (task.jti,)
        assert not (await agent.introspect(one.token)).active
        assert (await agent.introspect(kept.token)).active
        assert not (await agent.introspect(task.token)).active
    await follower.has(2)
    assert [(r.kind, r.jti, r.task_id) for r in follower.got] == [
        (RevocationKind.CREDENTIAL, one.jti, "t-1"),
        (RevocationKind.TASK, None, "t-2"),
    ]
    assert [r.seq for r in follower.got] == [by_jti.seq, by_task.seq]


async def test_revoking_what_does_not_exist_is_not_found(admin: RevocationAdmin) -> None:
    with pytest.raises(NotFound):
        await admin.revoke_credential("no-such-jti")
    with pytest.raises(NotFound):
        await admin.revoke_task("t-none", requester=BILLING_BOT)
    with pytest.raises(NotFound):
        await admin.unban(BILLING_BOT)


@pytest.mark.parametrize("identity", [BILLING_BOT, SIDECAR], ids=["agent", "subscriber"])
async def test_only_admins_may_revoke_ban_unban_or_list_bans(
    harness: Harness, identity: str
) -> None:
    async with harness.agent(identity) as client:
        outsider = RevocationAdmin(client)
        calls = [
            outsider.revoke_credential("any"),
            outsider.revoke_task("t-1"),
            outsider.ban(REPORT_BOT),
            outsider.unban(REPORT_BOT),
            outsider.list_bans(),
        ]
        for call in calls:
            with pytest.raises(PermissionDenied, match="admins"):
                await call


# -- the CLI -------------------------------------------------------------------------------


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def watch(*argv: str) -> tuple[int, str, str]:
    """`taskpass watch` in its own process, so a test that fails cannot leave it running."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "taskpass"),
        "watch",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), WAIT * 2)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def connection(harness: Harness, spiffe_id: str) -> list[str]:
    name = spiffe_id.rsplit("/", 1)[-1]
    cert, key = TestPki.write_identity(harness.directory / "cli", name, harness.pki.leaf(spiffe_id))
    return [
        "--server",
        harness.mtls_target,
        "--ca",
        str(harness.server_ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
    ]


async def issued(harness: Harness, task_id: str) -> tuple[TaskpassClient, str]:
    agent = harness.agent()
    return agent, (await agent.exchange(read_task(task_id))).jti


async def test_cli_revoke_ban_unban_and_watch(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = connection(harness, ADMIN)
    agent, jti = await issued(harness, "t-1")
    try:
        code, out, err = await run(capsys, "revoke", *admin, f"--jti={jti}", "--json")
        assert code == 0, err
        assert json.loads(out)["revoked_jtis"] == [jti]

        await agent.exchange(read_task("t-2"))
        code, out, err = await run(
            capsys, "revoke", *admin, "--task-id", "t-2", "--requester", BILLING_BOT, "--json"
        )
        assert code == 0, err
        assert json.loads(out)["revoked_count"] == 1

        await agent.exchange(read_task("t-3"))  # live when the ban comes: it stays in force
        code, out, err = await run(capsys, "ban", *admin, "--spiffe-id", BILLING_BOT, "--json")
        assert code == 0, err
        assert json.loads(out)["ban"]["identity"] == BILLING_BOT
        code, out, _ = await run(capsys, "bans", *admin)
        assert [json.loads(line)["identity"] for line in out.splitlines()] == [BILLING_BOT]
        code, out, err = await run(capsys, "unban", *admin, "--spiffe-id", BILLING_BOT)
        assert code == 0, err
        assert f"identity: {BILLING_BOT}" in out
    finally:
        await agent.aclose()

    code, out, err = await watch(*connection(harness, SIDECAR), "--max-events", "3")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["seq"], e["kind"]) for e in lines] == [
        (1, "credential"),
        (2, "task"),
        (3, "identity"),
    ]
    assert lines[0]["jti"] == jti


async def test_cli_watch_resumes_after_a_seq(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    async with harness.agent() as agent:
        for n in range(3):
            await agent.exchange(read_task(f"t-{n}"))
            await agent.complete_task(f"t-{n}")
    sidecar = connection(harness, SIDECAR)
    code, out, err = await watch(*sidecar, "--since", "1", "--max-events", "2")
    assert code == 0, err
    assert [json.loads(line)["task_id"] for line in out.splitlines()] == ["t-1", "t-2"]


async def test_cli_revoke_by_a_non_admin_exits_denied(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run(
        capsys, "ban", *connection(harness, BILLING_BOT), "--spiffe-id", REPORT_BOT
    )
    assert code == 3
    assert "admins" in err


async def test_revoke_with_an_identity_is_a_ban_and_without_a_target_is_invalid(
    harness: Harness,
) -> None:
    async with harness.agent() as agent, harness.agent(ADMIN) as admin:
        held = await agent.exchange(read_task("t-1"))
        stub = pb_grpc.RevocationServiceStub(admin.channel)
        response = await stub.Revoke(pb.RevokeRequest(identity=BILLING_BOT, reason="leaked"))
        assert list(response.revoked_jtis) == [held.jti]
        assert response.event.kind == pb.REVOCATION_KIND_IDENTITY
        listed = await stub.ListBans(pb.ListBansRequest())
        assert [(b.identity, b.reason) for b in listed.bans] == [(BILLING_BOT, "leaked")]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Revoke(pb.RevokeRequest(reason="no target"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jti, task or identity" in (refused.value.details() or "")
