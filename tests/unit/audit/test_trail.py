"""The auditor's view: export by cursor and time across pages; verification of the whole chain."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.audit.trail import AuditTrail
from taskpass.server.store.audit_chain import ChainProblem, Head, record_hash
from taskpass.server.store.records import AuditEntry, AuditRecord
from taskpass.server.store.sqlite import SqliteStore
from taskpass.server.store.sqlite_codec import from_db_time

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


def rewrite_from(store: SqliteStore, seq: int) -> None:
    """What someone with write access to the database can do that the chain alone cannot show:
    edit record `seq` and re-hash it and every record after it."""
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER audit_no_update")
    rows = conn.execute(
        "SELECT seq, kind, actor, at, payload, prev_hash FROM audit WHERE seq >= ? ORDER BY seq",
        (seq,),
    ).fetchall()
    prev = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()[0]
    for number, kind, actor, at, payload, _ in rows:
        if number == seq:
            payload = '{"n":"rewritten"}'
        record = AuditRecord(
            seq=number,
            kind=kind,
            actor=actor,
            at=from_db_time(at),
            payload=json.loads(payload),
            prev_hash=prev,
            hash="",
        )
        digest = record_hash(record)
        conn.execute(
            "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (payload, prev, digest, number),
        )
        prev = digest
    conn.commit()
    conn.close()


async def test_a_rewritten_and_rehashed_log_passes_alone_but_not_against_a_kept_head(
    store: SqliteStore,
) -> None:
    trail = AuditTrail(store.audit, page_size=2)
    kept = await trail.verify()
    head = Head(seq=kept.last_seq, hash=kept.last_hash)

    rewrite_from(store, 3)

    assert (await trail.verify()).ok  # the chain alone cannot tell
    result = await trail.verify(head)
    assert not result.ok
    assert (result.problem, result.seq) == (ChainProblem.HEAD_MISMATCH, 7)
    assert result.message == (
        "audit record 7 has another hash than when it was seen earlier: the log was rewritten "
        "at or before it (and re-hashed to hide it)"
    )


async def test_a_log_cut_off_below_a_kept_head_fails(store: SqliteStore) -> None:
    head = Head(seq=9, hash="a" * 64)  # two records more than the log holds now

    result = await AuditTrail(store.audit, page_size=3).verify(head)

    assert (result.ok, result.problem, result.seq) == (False, ChainProblem.CUT_OFF, 9)
    assert result.message.startswith("the audit log ends at record 7, before record 9")


async def test_a_log_that_still_holds_the_kept_head_passes(store: SqliteStore) -> None:
    trail = AuditTrail(store.audit, page_size=3)
    earlier = await trail.verify()
    await store.audit.append(
        AuditEntry(kind="decision", actor="spiffe://example.org/agents/a", at=T0, payload={})
    )

    result = await trail.verify(Head(seq=earlier.last_seq, hash=earlier.last_hash))

    assert result.ok and result.last_seq == 8
