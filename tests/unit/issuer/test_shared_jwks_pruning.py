"""SharedKeys.publish removes the rows whose publication ended, with real key rings, on both
backends."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import Unavailable
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.shared_jwks import REMOVAL_MARGIN, SharedKeys, SharingSettings
from taskpass.server.store.base import MAX_PAGE, KeyTable, Store
from taskpass.server.store.factory import open_store
from taskpass.server.store.records import AuditEntry, PublishedKey
from tests.unit.issuer.factories import START
from tests.unit.store.conftest import BACKENDS, Backend

SETTINGS = SharingSettings(
    renew_interval=dt.timedelta(minutes=5),
    refresh_interval=dt.timedelta(hours=1),
    max_token_lifetime=dt.timedelta(minutes=30),
)
LEASE = SETTINGS.lease  # 30 min + 2 x 5 min
MINUTE = dt.timedelta(minutes=1)
LONG_AGO = START - dt.timedelta(days=1)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Backend = request.param
    async with backend(tmp_path) as dsn, open_store(dsn) as opened:
        yield opened


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@dataclass
class Replica:
    keys: KeyRing
    shared: SharedKeys


def replica(tmp_path: Path, name: str, keys: KeyTable, clock: FixedClock) -> Replica:
    """A replica as app.py builds one."""
    ring = KeyRing.load_or_create(
        tmp_path / name, algorithm="ES256", clock=clock, expiry_reservation=dt.timedelta(0)
    )
    shared = SharedKeys(ring=ring, store=keys, clock=clock, replica=name, settings=SETTINGS)
    return Replica(ring, shared)


async def table(store: Store) -> set[str]:
    """Every kid the table still holds, ended or not."""
    return {key.kid for key in await store.keys.list_published(LONG_AGO)}


async def test_a_renewal_removes_a_gone_replicas_ended_key_and_keeps_a_retired_key_in_use(
    tmp_path: Path, store: Store, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store.keys, clock)
    gone = replica(tmp_path, "gone", store.keys, clock)  # starts, then never renews again
    await gone.shared.start()
    old = a.keys.active
    a.keys.note_issued(old.kid, START + 2 * LEASE)  # a token outliving its key's lease
    await a.shared.start()
    clock.advance(LEASE + MINUTE)  # the gone replica's lease has ended, within the margin
    new = a.keys.rotate()
    a.keys.promote()  # `old` retired: published until its last token expires
    await a.shared.publish()
    assert await table(store) == {gone.keys.active.kid, old.kid, new.kid}

    clock.advance(REMOVAL_MARGIN)  # the renewal after the margin
    await a.shared.publish()

    assert await table(store) == {old.kid, new.kid}
    clock.advance(LEASE)  # past old's last token, and the margin
    await a.shared.publish()
    assert await table(store) == {new.kid}
    records = await store.audit.read(limit=MAX_PAGE)
    removals = [r for r in records if r.kind == "key_unshared"]
    assert [r.payload["kid"] for r in removals] == [gone.keys.active.kid, old.kid]
    assert removals[0].actor == "taskpass-server"
    assert removals[0].payload["published_by"] == "gone"
    assert removals[0].payload["removed_by"] == "a"
    assert removals[0].payload["publish_until"] == (START + LEASE).isoformat()
    assert removals[1].payload["publish_until"] == (START + 2 * LEASE).isoformat()


async def test_a_live_replicas_keys_are_never_removed(
    tmp_path: Path, store: Store, clock: FixedClock
) -> None:
    a = replica(tmp_path, "a", store.keys, clock)
    b = replica(tmp_path, "b", store.keys, clock)
    await a.shared.start()
    await b.shared.start()
    for _ in range(20):  # 20 renewal rounds: 5 leases
        clock.advance(SETTINGS.renew_interval)
        await a.shared.publish()
        await b.shared.publish()

    assert await table(store) == {a.keys.active.kid, b.keys.active.kid}
    assert "key_unshared" not in {r.kind for r in await store.audit.read(limit=MAX_PAGE)}


class FailingRemoval:
    """The store's keys, whose removal fails as a store that is down does."""

    def __init__(self, keys: KeyTable) -> None:
        self._keys = keys

    async def publish(self, key: PublishedKey, *, audit: AuditEntry) -> PublishedKey:
        return await self._keys.publish(key, audit=audit)

    async def list_published(self, now: dt.datetime) -> list[PublishedKey]:
        return await self._keys.list_published(now)

    async def remove_ended(
        self, now: dt.datetime, *, audit: Callable[[PublishedKey], AuditEntry]
    ) -> list[PublishedKey]:
        raise Unavailable("store unavailable: the database write failed; retry later")


async def test_a_failed_removal_is_logged_and_never_fails_the_publication(
    tmp_path: Path, store: Store, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    a = replica(tmp_path, "a", FailingRemoval(store.keys), clock)

    with caplog.at_level(logging.WARNING, logger="taskpass.issuer"):
        stored = await a.shared.publish()

    assert [key.kid for key in stored] == [a.keys.active.kid]
    assert await table(store) == {a.keys.active.kid}
    assert caplog.messages == [
        "taskpass: ended key publications could not be removed: "
        "store unavailable: the database write failed; retry later"
    ]
