"""A real SQLite store, key ring and hub on an injected clock; the hub's loop runs as a task."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.revocation.bans import BanList
from taskpass.server.revocation.events import EventSigner
from taskpass.server.revocation.hub import HubSettings, RevocationHub
from taskpass.server.revocation.service import RevocationService
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.store.builders import T0

ISSUER = "https://taskpass.test"
ADMIN = "spiffe://example.org/security/admin"

# Short intervals: the tests wait for what the hub does, never for a fixed time.
FAST = HubSettings(
    queue_size=8,
    heartbeat_interval=dt.timedelta(milliseconds=50),
    poll_interval=dt.timedelta(milliseconds=50),
    stuck_grace=dt.timedelta(milliseconds=200),
    snapshot_chunk=3,
)

WAIT = 10.0
"""Seconds any one awaited step may take before the test fails. Each takes milliseconds: this is
a bound against a hang, never waited out, so it is generous for a loaded two-core CI machine."""

HubMaker = Callable[..., RevocationHub]


class Stopwatch:
    """The hub's monotonic seconds, which `stuck_grace` is measured in, moved only by the test:
    a stream is cut because the test let its grace pass, never because the machine was slow."""

    def __init__(self) -> None:
        self._elapsed = dt.timedelta(0)  # a timedelta, so advancing by parts of a grace is exact

    def __call__(self) -> float:
        return self._elapsed.total_seconds()

    def advance(self, delta: dt.timedelta) -> None:
        self._elapsed += delta


def workload(spiffe_id: str = ADMIN) -> Workload:
    return Workload(
        id=spiffe_id,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=T0 + dt.timedelta(hours=1),
        cert_thumbprint="thumb",
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "taskpass.db") as opened:
        yield opened


@pytest.fixture
def ring(tmp_path: Path, clock: FixedClock) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys", algorithm="ES256", clock=clock)


@pytest.fixture
def signer(ring: KeyRing, clock: FixedClock) -> EventSigner:
    return EventSigner(
        issuer=TokenIssuer(issuer=ISSUER, keys=ring, clock=clock), keys=ring, clock=clock
    )


@pytest.fixture
def stopwatch() -> Stopwatch:
    return Stopwatch()


@pytest.fixture
async def make_hub(
    store: SqliteStore, clock: FixedClock, stopwatch: Stopwatch
) -> AsyncIterator[HubMaker]:
    """Started hubs whose loops run until the test ends; their stuck grace runs on `stopwatch`."""
    loops: list[asyncio.Task[None]] = []

    def make(settings: HubSettings = FAST, *, running: bool = True) -> RevocationHub:
        hub = RevocationHub(
            log=store.revocations, clock=clock, settings=settings, monotonic=stopwatch
        )
        if running:
            loops.append(asyncio.create_task(hub.run()))
        return hub

    yield make
    for loop in loops:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


@pytest.fixture
async def hub(make_hub: HubMaker) -> RevocationHub:
    made = make_hub()
    await made.start()
    return made


@pytest.fixture
async def service(
    store: SqliteStore, signer: EventSigner, hub: RevocationHub, clock: FixedClock
) -> RevocationService:
    return RevocationService(
        store=store, signer=signer, hub=hub, bans=BanList(await store.bans.list_bans()), clock=clock
    )
