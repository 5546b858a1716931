"""The auditor's view: export by cursor and time across pages; verification of the whole chain."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.audit.trail import AuditTrail
from taskpass.server.store.audit_chain import ChainProblem
from taskpass.server.store.records import AuditEntry
from taskpass.server.store.sqlite import SqliteStore

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(tmp_path / "t.db") as opened:
        for n in range(7):
            await opened.audit.append(
                AuditEntry(
                    kind="decision",
                    actor="spiffe://example.org/agents/a",
                    at=T0 + dt.timedelta(minutes=n),
                    payload={"n": n},
                )
            )
        yield opened


async def test_export_walks_every_page_in_order(store: SqliteStore) -> None:
    trail = AuditTrail(store.audit, page_size=3)

    seqs = [r.seq async for r in trail.export()]

    assert seqs == [1, 2, 3, 4, 5, 6, 7]


async def test_export_starts_after_a_cursor_and_at_a_time(store: SqliteStore) -> None:
    trail = AuditTrail(store.audit, page_size=2)

    after = [r.seq async for r in trail.export(after_seq=4)]
    since = [r.seq async for r in trail.export(since=T0 + dt.timedelta(minutes=5))]

    assert after == [5, 6, 7]
    assert since == [6, 7]


async def test_verify_checks_every_page(store: SqliteStore) -> None:
    result = await AuditTrail(store.audit, page_size=2).verify()

    assert result.ok
    assert (result.checked, result.last_seq) == (7, 7)


async def test_verify_finds_an_edit_on_a_later_page(store: SqliteStore) -> None:
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("""UPDATE audit SET payload = '{"n":50}' WHERE seq = 5""")
    conn.commit()
    conn.close()

    result = await AuditTrail(store.audit, page_size=2).verify()

    assert not result.ok
    assert (result.problem, result.seq, result.checked) == (ChainProblem.HASH_MISMATCH, 5, 4)


def test_a_page_size_out_of_range_is_refused(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="page_size"):
        AuditTrail(store.audit, page_size=0)
