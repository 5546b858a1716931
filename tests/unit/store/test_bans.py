"""Bans: the ban, the revocation of what the identity holds, its audit and event (every backend)."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass.server.errors import Conflict, InvalidRequest, NotFound
from taskpass.server.store.base import Store
from taskpass.server.store.records import BanRecord, NewRevocation, RevocationKind

from .builders import AGENT, T0, entry, issue
from .conftest import StoreMaker

AGENTS = "spiffe://example.org/agents"


def ban(pattern: str, *, at: dt.datetime = T0, reason: str = "compromised") -> BanRecord:
    return BanRecord(
        pattern=pattern, banned_at=at, banned_by="spiffe://example.org/admin", reason=reason
    )


def identity_event(pattern: str, *, at: dt.datetime = T0) -> NewRevocation:
    return NewRevocation(
        kind=RevocationKind.IDENTITY,
        subject=pattern,
        task_id=None,
        jti=None,
        expires_at=at,
        at=at,
        set_token=f"set-for-{pattern}",
        reason="compromised",
    )


async def issue_as(store: Store, requester: str, jti: str, *, ttl_minutes: int = 5) -> None:
    await issue(
        store,
        jti,
        requester=requester,
        task_id=f"task-{jti}",
        ttl=dt.timedelta(minutes=ttl_minutes),
    )


async def test_ban_revokes_every_live_credential_of_the_identity_with_one_event(
    store: Store,
) -> None:
    await issue_as(store, AGENT, "a-1", ttl_minutes=5)
    await issue_as(store, AGENT, "a-2", ttl_minutes=9)
    await issue_as(store, f"{AGENTS}/b", "b-1")

    revoked, event = await store.bans.ban(
        ban=ban(AGENT), audit=entry("ban", at=T0), event=identity_event(AGENT)
    )

    assert [c.jti for c in revoked] == ["a-1", "a-2"]
    assert all(c.revoked_at == T0 and "banned" in c.revoke_reason for c in revoked)
    assert event is not None
    assert event.kind is RevocationKind.IDENTITY
    assert event.expires_at == T0 + dt.timedelta(minutes=9)  # widened to the latest expiry
    other = await store.credentials.get_credential("b-1")
    assert other is not None
    assert other.revoked_at is None
    audit = await store.audit.read(limit=100)
    assert audit[-1].kind == "ban"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param(f"{AGENTS}/a", {"a"}, id="exact-is-not-a-prefix"),
        pytest.param(f"{AGENTS}/*", {"a", "ab", "c"}, id="one-segment"),
        pytest.param(f"{AGENTS}/**", {"a", "ab", "c", "c/deep"}, id="any-depth"),
        pytest.param(f"{AGENTS}/c/*", {"c/deep"}, id="under-a-leaf"),
    ],
)
async def test_ban_matches_requesters_as_workload_patterns_do(
    store: Store, pattern: str, expected: set[str]
) -> None:
    for name in ("a", "ab", "c", "c/deep"):
        await issue_as(store, f"{AGENTS}/{name}", f"jti-{name}")
    await issue_as(store, "spiffe://example.org/agentsx/a", "jti-neighbour")

    revoked, _ = await store.bans.ban(ban=ban(pattern), audit=entry("ban"), event=None)

    assert {c.requester.removeprefix(AGENTS + "/") for c in revoked} == expected


async def test_ban_leaves_expired_and_already_revoked_credentials_alone(store: Store) -> None:
    await issue_as(store, AGENT, "expired", ttl_minutes=1)
    await issue_as(store, AGENT, "revoked")
    await store.credentials.revoke_credential(
        jti="revoked", at=T0, reason="earlier", audit=entry("revoke"), event=None
    )
    later = T0 + dt.timedelta(minutes=2)

    revoked, event = await store.bans.ban(
        ban=ban(AGENT, at=later),
        audit=entry("ban", at=later),
        event=identity_event(AGENT, at=later),
    )

    assert revoked == []
    assert event is not None
    assert event.expires_at == later  # nothing to cover: in force no longer than its own time
    earlier = await store.credentials.get_credential("revoked")
    assert earlier is not None
    assert earlier.revoke_reason == "earlier"


async def test_banning_twice_is_a_conflict_and_writes_nothing(store: Store) -> None:
    await store.bans.ban(ban=ban(AGENT), audit=entry("ban"), event=identity_event(AGENT))
    seq = await store.revocations.current_seq()
    audit = await store.audit.read(limit=100)

    with pytest.raises(Conflict, match="already banned"):
        await store.bans.ban(ban=ban(AGENT), audit=entry("ban"), event=identity_event(AGENT))

    assert await store.revocations.current_seq() == seq
    assert await store.audit.read(limit=100) == audit


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("*", id="everyone"),
        pytest.param("spiffe://example.org/a*b", id="wildcard-inside-a-segment"),
        pytest.param("spiffe://EXAMPLE.org/a", id="upper-case-trust-domain"),
        pytest.param("has space", id="mapped-identity-with-space"),
    ],
)
async def test_ban_refuses_a_pattern_that_is_not_valid(store: Store, pattern: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.bans.ban(ban=ban(pattern), audit=entry("ban"), event=None)
    assert caught.value.field == "identity"
    assert await store.bans.list_bans() == []


async def test_unban_lifts_exactly_the_pattern_banned_and_keeps_revocations(
    store: Store,
) -> None:
    await issue_as(store, AGENT, "a-1")
    await store.bans.ban(ban=ban(AGENT), audit=entry("ban"), event=None)
    await store.bans.ban(
        ban=ban(f"{AGENTS}/**", at=T0 + dt.timedelta(seconds=1)), audit=entry("ban"), event=None
    )

    lifted = await store.bans.unban(pattern=AGENT, audit=entry("unban"))

    assert lifted == ban(AGENT)
    assert [b.pattern for b in await store.bans.list_bans()] == [f"{AGENTS}/**"]
    credential = await store.credentials.get_credential("a-1")
    assert credential is not None
    assert credential.revoked_at is not None
    assert (await store.audit.read(limit=100))[-1].kind == "unban"


async def test_unban_of_a_pattern_not_banned_is_not_found(store: Store) -> None:
    await store.bans.ban(ban=ban(f"{AGENTS}/**"), audit=entry("ban"), event=None)
    with pytest.raises(NotFound, match="not banned"):
        await store.bans.unban(pattern=AGENT, audit=entry("unban"))


async def test_bans_survive_a_reopen(make_store: StoreMaker) -> None:
    async with make_store() as store:
        await store.bans.ban(ban=ban(AGENT), audit=entry("ban"), event=None)
    async with make_store() as store:
        assert await store.bans.list_bans() == [ban(AGENT)]
