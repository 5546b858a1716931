"""The in-memory ban list the exchange consults."""

from __future__ import annotations

import pytest

from taskpass.server.errors import PermissionDenied
from taskpass.server.revocation.bans import BanList
from taskpass.server.store.records import BanRecord
from taskpass.server.store.sqlite import SqliteStore
from tests.unit.store.builders import T0, entry

AGENTS = "spiffe://example.org/agents"


def ban(pattern: str) -> BanRecord:
    return BanRecord(pattern=pattern, banned_at=T0, banned_by="admin", reason="compromised")


@pytest.mark.parametrize(
    ("pattern", "workload", "banned"),
    [
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/a", True, id="exact"),
        pytest.param(f"{AGENTS}/a", f"{AGENTS}/ab", False, id="exact-is-not-a-prefix"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a", True, id="one-segment"),
        pytest.param(f"{AGENTS}/*", f"{AGENTS}/a/b", False, id="one-segment-not-deeper"),
        pytest.param(f"{AGENTS}/**", f"{AGENTS}/a/b", True, id="any-depth"),
        pytest.param(f"{AGENTS}/**", AGENTS, False, id="not-the-base-itself"),
        pytest.param("legacy-batch", "legacy-batch", True, id="mapped-identity"),
    ],
)
def test_a_ban_covers_the_identities_its_pattern_matches(
    pattern: str, workload: str, banned: bool
) -> None:
    bans = BanList([ban(pattern)])
    assert (bans.banned(workload) is not None) is banned


def test_check_refuses_a_banned_identity_and_says_whom_to_ask() -> None:
    bans = BanList([ban(f"{AGENTS}/**")])
    with pytest.raises(PermissionDenied) as refused:
        bans.check(f"{AGENTS}/a")
    assert "is banned by security" in refused.value.message
    assert f"by the ban on {AGENTS}/**" in refused.value.message
    assert "ask the security team" in refused.value.message
    bans.check("spiffe://example.org/sidecars/s")  # others pass


def test_add_and_remove_take_effect_at_once() -> None:
    bans = BanList()
    bans.add(ban(f"{AGENTS}/a"))
    assert bans.banned(f"{AGENTS}/a") is not None
    bans.remove(f"{AGENTS}/a")
    assert bans.banned(f"{AGENTS}/a") is None
    assert bans.patterns == ()


async def test_refresh_takes_the_stores_bans(store: SqliteStore) -> None:
    await store.bans.ban(ban=ban(f"{AGENTS}/**"), audit=entry("ban"), event=None)
    bans = BanList([ban("legacy-batch")])
    await bans.refresh(store.bans)
    assert bans.patterns == (f"{AGENTS}/**",)


async def test_refresh_does_not_undo_a_local_ban_made_while_it_read(store: SqliteStore) -> None:
    bans = BanList()

    class SlowStore:
        async def list_bans(self) -> list[BanRecord]:
            read = await store.bans.list_bans()  # empty: the ban below is not stored yet
            bans.add(ban(f"{AGENTS}/a"))
            return read

    await bans.refresh(SlowStore())  # type: ignore[arg-type]
    assert bans.banned(f"{AGENTS}/a") is not None
