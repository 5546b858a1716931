"""Revoking a credential, a task, an identity; what the exchange asks of revocation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskpass.server.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, Unavailable
from taskpass.server.revocation.hub import Heartbeat, RevocationHub, StreamItem
from taskpass.server.revocation.service import RACED_A_BAN, RevocationService
from taskpass.server.store.records import BanRecord, RevocationEvent, RevocationKind
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.store.builders import AGENT, OTHER_AGENT, T0, entry, issue

from .conftest import ADMIN, WAIT, workload

AGENTS = "spiffe://example.org/agents"


async def next_event(stream: AsyncIterator[StreamItem]) -> RevocationEvent:
    while True:
        item = await asyncio.wait_for(anext(stream), WAIT)
        if isinstance(item, RevocationEvent):
            return item


async def caught_up(hub: RevocationHub) -> AsyncIterator[StreamItem]:
    stream = hub.watch(None)
    while not isinstance(await asyncio.wait_for(anext(stream), WAIT), Heartbeat):
        pass
    return stream


async def last_audit_kind(store: SqliteStore) -> str:
    return (await store.audit.read(limit=1000))[-1].kind


async def test_revoking_a_credential_stores_its_event_and_tells_the_stream(
    service: RevocationService, store: SqliteStore, hub: RevocationHub
) -> None:
    await issue(store, "jti-1", task_id="t-1")
    stream = await caught_up(hub)

    done = await service.revoke_credential(workload(), "jti-1", reason="leaked")

    assert [c.jti for c in done.credentials] == ["jti-1"]
    assert done.event is not None
    assert done.event.kind is RevocationKind.CREDENTIAL
    assert (await next_event(stream)).seq == done.event.seq
    record = await store.credentials.get_credential("jti-1")
    assert record is not None
    assert record.revoke_reason == "leaked"
    audit = (await store.audit.read(limit=100))[-1]
    assert (audit.kind, audit.actor, audit.payload["jti"]) == ("revocation", ADMIN, "jti-1")


@pytest.mark.parametrize(
    ("jti", "error"),
    [
        pytest.param("", InvalidRequest, id="empty"),
        pytest.param("nope", NotFound, id="unknown"),
        pytest.param("jti-1", Conflict, id="already-revoked"),
    ],
)
async def test_revoking_a_credential_refuses_what_cannot_be_revoked(
    service: RevocationService, store: SqliteStore, jti: str, error: type[Exception]
) -> None:
    await issue(store, "jti-1")
    await service.revoke_credential(workload(), "jti-1", reason="")
    seq = await store.revocations.current_seq()
    with pytest.raises(error):
        await service.revoke_credential(workload(), jti, reason="")
    assert await store.revocations.current_seq() == seq


async def test_a_reason_too_long_is_an_invalid_request(
    service: RevocationService, store: SqliteStore
) -> None:
    await issue(store, "jti-1")
    with pytest.raises(InvalidRequest) as refused:
        await service.revoke_credential(workload(), "jti-1", reason="x" * 600)
    assert refused.value.field == "reason"


async def test_revoking_a_task_revokes_every_credential_of_it_and_ends_it(
    service: RevocationService, store: SqliteStore
) -> None:
    await issue(store, "a", task_id="t-7", ttl=dt.timedelta(minutes=5))
    await issue(store, "b", task_id="t-7", ttl=dt.timedelta(minutes=9))
    await issue(store, "other", task_id="t-7", requester=OTHER_AGENT)

    done = await service.revoke_task(workload(), requester=AGENT, task_id="t-7", reason="")

    assert [c.jti for c in done.credentials] == ["a", "b"]
    assert done.event is not None
    assert (done.event.kind, done.event.subject, done.event.task_id) == (
        RevocationKind.TASK,
        AGENT,
        "t-7",
    )
    assert done.event.expires_at == T0 + dt.timedelta(minutes=9)
    task = await store.credentials.get_task(AGENT, "t-7")
    assert task is not None
    assert task.completed_at is not None
    other = await store.credentials.get_credential("other")
    assert other is not None
    assert other.revoked_at is None


async def test_revoking_a_task_without_a_requester_means_the_callers_own(
    service: RevocationService, store: SqliteStore
) -> None:
    await issue(store, "mine", task_id="t-1", requester=ADMIN)
    done = await service.revoke_task(workload(), requester="", task_id="t-1", reason="")
    assert [c.jti for c in done.credentials] == ["mine"]


async def test_a_ban_revokes_what_the_identity_holds_and_refuses_its_exchanges(
    service: RevocationService, store: SqliteStore
) -> None:
    await issue(store, "a-1", requester=f"{AGENTS}/a")

    banned = await service.ban(workload(), f"{AGENTS}/*", reason="fleet compromised")

    assert [c.jti for c in banned.credentials] == ["a-1"]
    assert banned.event is not None
    assert banned.event.kind is RevocationKind.IDENTITY
    assert banned.ban.banned_by == ADMIN
    with pytest.raises(PermissionDenied, match="banned by security"):
        await service.admit(workload(f"{AGENTS}/a"))
    assert await last_audit_kind(store) == "exchange_refused"
    await service.admit(workload(ADMIN))  # others pass, nothing written
    assert await last_audit_kind(store) == "exchange_refused"


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("", id="empty"),
        pytest.param("*", id="everyone"),
        pytest.param("spiffe://example.org/a/**/b", id="wildcard-in-the-middle"),
    ],
)
async def test_a_ban_refuses_a_pattern_that_is_not_valid(
    service: RevocationService, pattern: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await service.ban(workload(), pattern, reason="")
    assert refused.value.field == "identity"
    assert service.bans.patterns == ()


async def test_banning_twice_is_a_conflict_and_the_ban_stays(service: RevocationService) -> None:
    await service.ban(workload(), AGENT, reason="")
    with pytest.raises(Conflict):
        await service.ban(workload(), AGENT, reason="")
    assert service.bans.banned(AGENT) is not None


async def test_a_ban_that_could_not_be_stored_is_not_kept_in_memory(
    service: RevocationService, store: SqliteStore
) -> None:
    await store.close()
    with pytest.raises(Unavailable):
        await service.ban(workload(), AGENT, reason="")
    assert service.bans.banned(AGENT) is None


async def test_unban_lifts_the_ban_and_is_audited(
    service: RevocationService, store: SqliteStore
) -> None:
    await service.ban(workload(), AGENT, reason="")
    lifted = await service.unban(workload(), AGENT, reason="cleaned up")
    assert lifted.pattern == AGENT
    await service.admit(workload(AGENT))
    assert await service.list_bans() == []
    assert await last_audit_kind(store) == "unban"
    with pytest.raises(NotFound):
        await service.unban(workload(), AGENT, reason="")


async def test_a_credential_stored_after_a_ban_landed_is_taken_back(
    service: RevocationService, store: SqliteStore
) -> None:
    await service.ban(workload(), AGENT, reason="")
    raced = await issue(store, "raced")  # an exchange that passed admit() before the ban

    with pytest.raises(PermissionDenied):
        await service.recheck_issued(workload(AGENT), raced)

    record = await store.credentials.get_credential("raced")
    assert record is not None
    assert record.revoke_reason == RACED_A_BAN
    events = await store.revocations.read_after(0, limit=10)
    assert [(e.kind, e.jti) for e in events][-1] == (RevocationKind.CREDENTIAL, "raced")


async def test_recheck_leaves_an_identity_that_is_not_banned_alone(
    service: RevocationService, store: SqliteStore
) -> None:
    fine = await issue(store, "fine")
    await service.recheck_issued(workload(AGENT), fine)
    record = await store.credentials.get_credential("fine")
    assert record is not None
    assert record.revoked_at is None


async def test_bans_made_elsewhere_arrive_with_the_refresh(
    service: RevocationService, store: SqliteStore
) -> None:
    refresher = asyncio.create_task(service.keep_bans_fresh(dt.timedelta(milliseconds=5)))
    try:
        elsewhere = BanRecord(pattern=AGENT, banned_at=T0, banned_by="other", reason="")
        await store.bans.ban(ban=elsewhere, audit=entry("ban"), event=None)
        async with asyncio.timeout(WAIT):
            while service.bans.banned(AGENT) is None:
                await asyncio.sleep(0.005)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


async def test_a_ban_stays_listed_when_a_refresh_read_the_table_before_its_commit(
    service: RevocationService, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_ban = store.bans.ban
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_ban(**kwargs: Any) -> Any:  # the commit lands a little after the add()
        writing.set()
        await release.wait()
        return await real_ban(**kwargs)

    monkeypatch.setattr(store.bans, "ban", slow_ban)
    banning = asyncio.create_task(service.ban(workload(), AGENT, reason="compromised"))
    await writing.wait()
    await service.bans.refresh(store.bans)  # the periodic refresh reads the table now
    release.set()
    await banning

    assert service.bans.banned(AGENT) is not None  # it was gone until the next refresh
