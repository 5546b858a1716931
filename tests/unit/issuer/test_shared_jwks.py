"""The shared JWKS: two replicas (two key rings, one real store) publish and merge their keys."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import KeyRing, KeyState
from taskpass.server.issuer.shared_jwks import SharedKeys, SharingSettings
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.records import AuditEntry, PublishedKey
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.issuer.factories import ISSUER, START, make_decision, make_task, make_workload

MINUTE = dt.timedelta(minutes=1)
SETTINGS = SharingSettings(
    renew_interval=dt.timedelta(minutes=5),
    refresh_interval=dt.timedelta(hours=1),  # the loop test wakes it with notify(), never a poll
    max_token_lifetime=dt.timedelta(minutes=30),
)
LEASE = SETTINGS.lease  # 30 min + 2 x 5 min
WAIT_S = 10.0
"""Only turns a regression (a wake-up that never comes) into a failure; never waited out."""


@dataclass
class Replica:
    ring: KeyRing
    shared: SharedKeys

    def other_kids(self) -> set[str]:
        own = {key.kid for key in self.ring.signing_keys()}
        return {member["kid"] for member in self.ring.jwks()["keys"]} - own


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "shared.db") as opened:
        yield opened


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def replica(tmp_path: Path, name: str, store: SqliteStore, clock: FixedClock) -> Replica:
    ring = KeyRing.load_or_create(
        tmp_path / name, algorithm="ES256", clock=clock, expiry_reservation=dt.timedelta(0)
    )
    shared = SharedKeys(ring=ring, store=store.keys, clock=clock, replica=name, settings=SETTINGS)
    return Replica(ring, shared)


async def published(store: SqliteStore, clock: FixedClock) -> dict[str, PublishedKey]:
    return {key.kid: key for key in await store.keys.list_published(clock.now())}


async def test_each_replica_publishes_its_key_on_start_and_merges_the_others(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    b = replica(tmp_path, "b", store, clock)

    await a.shared.start()
    await b.shared.start()
    await a.shared.refresh()

    keys = await published(store, clock)
    assert set(keys) == {a.ring.active.kid, b.ring.active.kid}
    assert keys[a.ring.active.kid].publish_until == START + LEASE
    assert keys[a.ring.active.kid].published_by == "a"
    assert "d" not in keys[a.ring.active.kid].jwk  # public keys only
    assert a.other_kids() == {b.ring.active.kid}
    assert b.other_kids() == {a.ring.active.kid}
    kinds = [r.kind for r in await store.audit.read(limit=MAX_PAGE)]
    assert kinds == ["key_shared", "key_shared"]


async def test_a_token_signed_by_one_replica_verifies_on_another(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    b = replica(tmp_path, "b", store, clock)
    await a.shared.start()
    await b.shared.start()
    token = (
        TokenIssuer(issuer=ISSUER, keys=a.ring, clock=clock)
        .issue(workload=make_workload(), task=make_task(), decision=make_decision())
        .token
    )
    outsider = KeyRing.load_or_create(tmp_path / "outsider", algorithm="ES256", clock=clock)

    assert TokenVerifier(issuer=ISSUER, jwks=b.ring.jwks, clock=clock).verify(token) is not None
    # the control: a ring that never joined the shared JWKS cannot verify it
    assert TokenVerifier(issuer=ISSUER, jwks=outsider.jwks, clock=clock).verify(token) is None


async def test_renewing_extends_the_publication_of_a_replicas_keys(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    await a.shared.start()

    clock.advance(SETTINGS.renew_interval)
    await a.shared.publish()

    keys = await published(store, clock)
    assert keys[a.ring.active.kid].publish_until == START + SETTINGS.renew_interval + LEASE


async def test_a_dead_replicas_key_leaves_the_jwks_when_its_lease_ends(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    b = replica(tmp_path, "b", store, clock)
    await a.shared.start()  # and a then dies: nobody renews its key
    await b.shared.start()

    clock.advance(LEASE - MINUTE)
    await b.shared.refresh()
    still = b.other_kids()
    clock.advance(MINUTE)
    await b.shared.refresh()

    assert still == {a.ring.active.kid}
    assert b.other_kids() == set()


async def test_a_retired_key_stays_published_until_its_last_token_expires(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    b = replica(tmp_path, "b", store, clock)
    await a.shared.start()
    old = a.ring.active.kid
    last_token_expiry = START + dt.timedelta(hours=2)  # beyond the active key's lease
    a.ring.note_issued(old, last_token_expiry)
    a.ring.rotate()
    a.ring.promote()
    await a.shared.publish()
    await b.shared.start()

    clock.advance(last_token_expiry - START - MINUTE)
    await b.shared.refresh()
    before = b.other_kids()
    clock.advance(MINUTE)
    await b.shared.refresh()

    assert [k.state for k in a.ring.signing_keys()] == [KeyState.ACTIVE, KeyState.RETIRED]
    assert old in before
    assert old not in b.other_kids()


async def test_a_key_that_is_not_a_safe_public_key_is_left_out_of_the_jwks(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    b = replica(tmp_path, "b", store, clock)
    await a.shared.start()
    good = a.ring.active.public_jwk()
    forged = {**good, "kid": "f" * 43, "d": "c2VjcmV0"}  # someone with write access to the table
    await store.keys.publish(
        PublishedKey(
            kid=forged["kid"],
            jwk=forged,
            published_by="intruder",
            published_at=START,
            publish_until=START + LEASE,
        ),
        audit=AuditEntry(kind="key_shared", actor="intruder", at=START, payload={}),
    )

    await b.shared.start()

    assert b.other_kids() == {good["kid"]}
    assert all("d" not in member for member in b.ring.jwks()["keys"])


async def test_a_rotation_step_is_reported_then_the_new_key_is_published(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store, clock)
    await a.shared.start()
    reported: list[str] = []

    async def report(what: str, details: dict[str, object]) -> None:
        reported.append(what)
        assert str(details["kid"]) not in await published(store, clock)  # reported first

    upcoming = a.ring.rotate()
    await a.shared.publishing(report)("key_published", {"kid": upcoming.kid})

    assert reported == ["key_published"]
    assert upcoming.kid in await published(store, clock)


class CountingReads:
    """The store's keys, with an event set after each list_published (the loop's re-read)."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.read = asyncio.Event()

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        return await self._store.keys.publish(key, audit=audit)

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        listed = await self._store.keys.list_published(now)
        self.read.set()
        return listed

    async def remove_ended(
        self, now: dt.datetime, *, audit: Callable[[PublishedKey], AuditEntry]
    ) -> list[PublishedKey]:
        return await self._store.keys.remove_ended(now, audit=audit)


async def test_notify_wakes_the_loop_to_merge_a_key_published_by_another_replica(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    reads = CountingReads(store)
    b_ring = KeyRing.load_or_create(tmp_path / "b", algorithm="ES256", clock=clock)
    b = SharedKeys(ring=b_ring, store=reads, clock=clock, replica="b", settings=SETTINGS)
    await b.start()
    a = replica(tmp_path, "a", store, clock)
    await a.shared.publish()  # after b started: b learns of it only by a notification
    task = asyncio.create_task(b.run())
    try:
        reads.read.clear()
        b.notify()
        async with asyncio.timeout(WAIT_S):
            await reads.read.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert a.ring.active.kid in {member["kid"] for member in b_ring.jwks()["keys"]}


async def test_the_loop_publishes_a_key_rotated_in_without_being_told(
    tmp_path: Path, store: SqliteStore, clock: FixedClock
) -> None:
    reads = CountingReads(store)
    ring = KeyRing.load_or_create(tmp_path / "a", algorithm="ES256", clock=clock)
    shared = SharedKeys(ring=ring, store=reads, clock=clock, replica="a", settings=SETTINGS)
    await shared.start()
    task = asyncio.create_task(shared.run())
    try:
        upcoming = ring.rotate()  # no publishing() hook: the loop notices the ring changed
        reads.read.clear()
        shared.notify()
        async with asyncio.timeout(WAIT_S):
            await reads.read.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert upcoming.kid in await published(store, clock)
