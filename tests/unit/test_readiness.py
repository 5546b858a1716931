"""Readiness: the store answers (for SQLite, its file opens afresh) and a signing key signs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import KeyRing, KeyState
from taskpass.server.readiness import Readiness, ReadinessProbe
from taskpass.server.store.base import Store
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.store.builders import T0


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys", algorithm="ES256", clock=FixedClock(T0))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "taskpass.db") as opened:
        yield opened


async def test_a_store_that_answers_and_an_active_key_are_ready(
    store: SqliteStore, keys: KeyRing
) -> None:
    readiness = await ReadinessProbe(store=store, keys=keys).check()
    assert readiness == Readiness(store=None, keys=None)
    assert readiness.ok
    assert readiness.describe() == "ready"


def _rename(path: Path) -> None:
    path.rename(path.with_name("moved.db"))


def _delete(path: Path) -> None:
    path.unlink()


def _garble(path: Path) -> None:
    replacement = path.with_name("garbage")
    replacement.write_bytes(b"not a database" * 100)
    replacement.replace(path)


@pytest.mark.parametrize(
    "take_away",
    [
        pytest.param(_rename, id="renamed"),
        pytest.param(_delete, id="deleted"),
        pytest.param(_garble, id="replaced-by-garbage"),
    ],
)
async def test_a_sqlite_file_gone_from_under_open_connections_is_not_ready(
    store: SqliteStore, keys: KeyRing, take_away: Callable[[Path], None]
) -> None:
    take_away(store.path)

    readiness = await ReadinessProbe(store=store, keys=keys).check()

    assert not readiness.ok
    assert readiness.store is not None
    assert readiness.store.startswith("store")
    assert readiness.keys is None


async def test_a_closed_store_is_not_ready(store: SqliteStore, keys: KeyRing) -> None:
    await store.close()
    readiness = await ReadinessProbe(store=store, keys=keys).check()
    assert readiness.store == "store: store is closed"
    assert readiness.describe() == "store: store is closed"


class HangingLog:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def current_seq(self) -> int:
        self.calls += 1
        await self.release.wait()
        return 0


class HangingStore:
    def __init__(self) -> None:
        self.revocations = HangingLog()


async def test_a_store_that_does_not_answer_in_time_is_not_ready(keys: KeyRing) -> None:
    hanging = HangingStore()
    probe = ReadinessProbe(store=cast(Store, hanging), keys=keys, timeout=0.05)
    readiness = await probe.check()
    assert readiness.store == "store did not answer within 0.05 s"


async def test_concurrent_checks_share_one_run(keys: KeyRing) -> None:
    hanging = HangingStore()
    probe = ReadinessProbe(store=cast(Store, hanging), keys=keys, timeout=5)
    checks = [asyncio.ensure_future(probe.check()) for _ in range(10)]
    await asyncio.sleep(0)
    hanging.revocations.release.set()
    results: list[Any] = await asyncio.gather(*checks)
    assert hanging.revocations.calls == 1
    assert all(r.ok for r in results)


class BrokenKey:
    kid = "kid-1"
    state = KeyState.ACTIVE

    def sign(self, signing_input: bytes) -> bytes:
        raise ValueError("the HSM is gone")


class Keys:
    def __init__(self, published: list[str]) -> None:
        self.active = BrokenKey()
        self._published = published

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kid": kid} for kid in self._published]}


@pytest.mark.parametrize(
    ("published", "problem"),
    [
        pytest.param([], "signing key kid-1 is not published in the JWKS", id="unpublished"),
        pytest.param(["kid-1"], "signing key kid-1 cannot sign", id="cannot-sign"),
    ],
)
async def test_a_signing_key_that_is_unpublished_or_cannot_sign_is_not_ready(
    store: SqliteStore, published: list[str], problem: str
) -> None:
    readiness = await ReadinessProbe(store=store, keys=cast(KeyRing, Keys(published))).check()
    assert (readiness.store, readiness.keys) == (None, problem)
    assert "HSM" not in readiness.describe()  # the cause's text stays out of the answer
