"""`taskpass db copy`: a SQLite deployment's data moves into PostgreSQL as it was, or not at all."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskpass.server.cli.main import main
from taskpass.server.store.audit_chain import verify_chain
from taskpass.server.store.base import MAX_PAGE, Store
from taskpass.server.store.copy import TABLES
from taskpass.server.store.postgres import PostgresStore
from taskpass.server.store.records import BanRecord
from taskpass.server.store.sqlite import SqliteStore
from tests.support.postgres import fresh_schema, raw_connection
from tests.unit.store.builders import (
    OTHER_AGENT,
    T0,
    credential_revocation,
    entry,
    issue,
    task_revocation,
)
from tests.unit.store.test_keys import published
from tests.unit.store.test_postgres_replicas import pending_approval

pytestmark = pytest.mark.postgres

HOUR = dt.timedelta(hours=1)


@pytest.fixture
async def source(tmp_path: Path) -> Path:
    """A SQLite store with some of everything, closed (as after stopping the server)."""
    path = tmp_path / "taskpass.db"
    async with SqliteStore(path) as store:
        for n in range(5):
            await issue(store, f"jti-{n}", task_id=f"task-{n % 2}", issued_at=T0 + n * HOUR)
        await store.credentials.revoke_credential(
            jti="jti-0",
            at=T0,
            reason="leaked",
            audit=entry("revoke"),
            event=credential_revocation("jti-0"),
        )
        await store.credentials.complete_task(
            requester="spiffe://example.org/agents/a",
            task_id="task-1",
            at=T0 + HOUR,
            audit=entry("task_completed"),
            event=task_revocation("task-1", at=T0 + HOUR),
        )
        await store.approvals.create_or_reuse(pending_approval(), audit=entry(), now=T0)
        second = dataclasses.replace(pending_approval(), approval_id="apr-2", digest="digest-2")
        await store.approvals.create_or_reuse(second, audit=entry(), now=T0)
        await store.approvals.decide(
            "apr-2",
            approve=True,
            by="spiffe://example.org/humans/alice",
            at=T0,
            reason="ok",
            expires_at=T0 + HOUR,
            audit=entry("approval_granted"),
        )
        ban = BanRecord(pattern=OTHER_AGENT, banned_at=T0, banned_by="admin", reason="test")
        await store.bans.ban(ban=ban, audit=entry("ban"), event=None)
        await store.keys.publish(published(), audit=entry("key_shared"))
        await store.audit.append(entry("decision", note={"nested": [1, 2.5, "é"]}))
    return path


@pytest.fixture
async def destination() -> AsyncIterator[str]:
    async with fresh_schema() as dsn:
        yield dsn


async def copy(source: Path, destination: str) -> int:
    # main runs its own event loop: give it a thread, as the shell would a process.
    return await asyncio.to_thread(
        main, ["db", "copy", "--from", f"sqlite:///{source}", "--to", destination]
    )


async def everything(store: Store) -> dict[str, object]:
    """What each aggregate holds, read through the store interface."""
    return {
        "credentials": [await store.credentials.get_credential(f"jti-{n}") for n in range(5)],
        "tasks": [
            await store.credentials.get_task("spiffe://example.org/agents/a", f"task-{n}")
            for n in range(2)
        ],
        "events": await store.revocations.read_after(0, limit=MAX_PAGE),
        "audit": await store.audit.read(limit=MAX_PAGE),
        "approvals": [await store.approvals.get(i) for i in ("apr-1", "apr-2")],
        "latest": await store.approvals.latest_for(pending_approval().requester, "digest-1"),
        "bans": await store.bans.list_bans(),
        "keys": await store.keys.list_published(T0),
    }


async def row_counts(dsn: str) -> dict[str, int]:
    async with raw_connection(dsn) as conn:
        return {t.name: await conn.fetchval(f"SELECT count(*) FROM {t.name}") for t in TABLES}  # noqa: S608


async def test_copy_moves_every_record_as_it_was_and_the_chain_verifies(
    source: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with SqliteStore(source) as before:
        expected = await everything(before)

    code = await copy(source, destination)

    out, err = capsys.readouterr()
    async with PostgresStore(destination) as after:
        copied = await everything(after)
    assert code == 0, err
    assert copied == expected  # every record, with its seq, hash, state and times
    audit = expected["audit"]
    assert isinstance(audit, list)
    assert verify_chain(audit).ok
    assert f"audit log ok: {len(audit)} records chained, head {len(audit)}" in out
    assert "5 credentials" in out and "2 revocation events" in out
    assert destination not in out + err  # a DSN may carry a password


async def test_writes_after_the_copy_continue_the_sequences_and_the_chain(
    source: Path, destination: str
) -> None:
    assert await copy(source, destination) == 0

    async with PostgresStore(destination) as store:
        before = await store.audit.read(limit=MAX_PAGE)
        await issue(store, "jti-new", task_id="task-new")
        _, event = await store.credentials.revoke_credential(
            jti="jti-new",
            at=T0,
            reason="r",
            audit=entry("revoke"),
            event=credential_revocation("jti-new"),
        )
        after = await store.audit.read(limit=MAX_PAGE)

    assert event is not None and event.seq == 3
    assert after[: len(before)] == before
    assert after[len(before)].prev_hash == before[-1].hash
    assert verify_chain(after).ok


async def test_a_destination_that_holds_data_is_refused_and_left_as_it_was(
    source: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await copy(source, destination) == 0
    counts = await row_counts(destination)
    capsys.readouterr()

    code = await copy(source, destination)

    assert code == 2
    assert "already holds" in capsys.readouterr().err
    assert await row_counts(destination) == counts


async def test_a_source_whose_audit_chain_was_edited_copies_nothing(
    source: Path, destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(source)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("""UPDATE audit SET payload = '{"jti":"jti-9"}' WHERE seq = 3""")
    conn.commit()
    conn.close()

    code = await copy(source, destination)

    assert code == 2
    assert "record 3" in capsys.readouterr().err
    assert set((await row_counts(destination)).values()) == {0}


@pytest.mark.parametrize(
    ("source", "destination", "problem"),
    [
        pytest.param("postgresql://h/db", "sqlite:///x.db", "SQLite store into", id="reversed"),
        pytest.param("sqlite:///a.db", "sqlite:///b.db", "SQLite store into", id="sqlite-both"),
        pytest.param("sqlite:///missing.db", "postgresql://h/db", "no SQLite", id="no-file"),
    ],
)
def test_copy_only_moves_an_existing_sqlite_store_into_postgres(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    destination: str,
    problem: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no server is contacted: the arguments are refused first

    code = main(["db", "copy", "--from", source, "--to", destination])

    assert code == 2
    assert problem in capsys.readouterr().err
