"""SQLite-only behaviour: the file itself (triggers, tampering, pragmas, migrations), injected
database faults, and group commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskpass.server.errors import ConfigError, Unavailable
from taskpass.server.store import sqlite_schema
from taskpass.server.store.audit_chain import ChainProblem, chain_hash, verify_chain
from taskpass.server.store.base import MAX_PAGE
from taskpass.server.store.sqlite import SqliteStore
from taskpass.server.store.sqlite_codec import to_db_time

from .builders import AGENT, T0, entry, issue, task_revocation

RawSql = Callable[[sqlite3.Connection], None]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "taskpass.db"


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """The file opened directly, as anyone with write access to it could."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def audit_of_six(path: Path) -> None:
    async with SqliteStore(path) as store:
        for n in range(1, 7):
            await store.audit.append(entry("decision", n=n))


async def verify_file(path: Path) -> tuple[bool, ChainProblem | None, int | None]:
    async with SqliteStore(path) as store:
        result = verify_chain(await store.audit.read(limit=MAX_PAGE))
    return result.ok, result.problem, result.seq


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit SET payload = '{}' WHERE seq = 2", id="update"),
        pytest.param("DELETE FROM audit WHERE seq = 2", id="delete"),
    ],
)
async def test_changing_an_audit_row_is_refused_by_the_trigger(path: Path, statement: str) -> None:
    await audit_of_six(path)

    with raw(path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)

    assert await verify_file(path) == (True, None, None)


def edit(conn: sqlite3.Connection) -> None:
    conn.execute("""UPDATE audit SET payload = '{"n":99}' WHERE seq = 3""")


def delete(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM audit WHERE seq = 3")


def insert(conn: sqlite3.Connection) -> None:
    """Make room at seq 3 and put a well-formed forged record there, chained to record 2."""
    conn.execute("UPDATE audit SET seq = seq + 100 WHERE seq >= 3")
    conn.execute("UPDATE audit SET seq = seq - 99 WHERE seq >= 100")
    prev_hash = conn.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
    payload = {"n": 0, "forged": True}
    digest = chain_hash(
        prev_hash=prev_hash, seq=3, kind="decision", actor="agent", at=T0, payload=payload
    )
    conn.execute(
        "INSERT INTO audit (seq, kind, actor, at, payload, prev_hash, hash) "
        "VALUES (3, 'decision', 'agent', ?, '{\"forged\":true,\"n\":0}', ?, ?)",
        (to_db_time(T0), prev_hash, digest),
    )


def reorder(conn: sqlite3.Connection) -> None:
    """Swap records 3 and 4, keeping the seq column in order."""
    conn.execute("UPDATE audit SET seq = -1 WHERE seq = 3")
    conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4")
    conn.execute("UPDATE audit SET seq = 4 WHERE seq = -1")


@pytest.mark.parametrize(
    ("tamper", "problem", "seq"),
    [
        pytest.param(edit, ChainProblem.HASH_MISMATCH, 3, id="edited"),
        pytest.param(delete, ChainProblem.SEQ_GAP, 4, id="deleted"),
        pytest.param(insert, ChainProblem.BROKEN_LINK, 4, id="inserted"),
        pytest.param(reorder, ChainProblem.BROKEN_LINK, 3, id="reordered"),
    ],
)
async def test_tampering_with_the_file_is_found_by_verify_chain(
    path: Path, tamper: RawSql, problem: ChainProblem, seq: int
) -> None:
    await audit_of_six(path)
    with raw(path) as conn:
        # An attacker with the file drops the triggers first; the chain still gives them away.
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        tamper(conn)

    assert await verify_file(path) == (False, problem, seq)


def test_connections_use_wal_and_fsync_every_commit(path: Path) -> None:
    conn = sqlite_schema.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in sqlite_schema.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert versions[-1] == sqlite_schema.LATEST_VERSION


async def test_migrate_records_each_version_once_and_can_run_again(path: Path) -> None:
    store = SqliteStore(path)

    assert await store.migrate() == sqlite_schema.LATEST_VERSION
    assert await store.migrate() == sqlite_schema.LATEST_VERSION
    async with store:
        await store.audit.append(entry())

    with raw(path) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in sqlite_schema.MIGRATIONS]


async def test_a_schema_newer_than_the_code_is_refused(path: Path) -> None:
    await SqliteStore(path).migrate()
    with raw(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'later')")

    with pytest.raises(ConfigError, match=r"schema is version 999.*upgrade taskpass"):
        await SqliteStore(path).open()


@pytest.mark.parametrize(
    "prepare",
    [
        pytest.param(lambda p: p.write_bytes(b"not a database" * 100), id="not-a-database"),
        pytest.param(lambda p: None, id="missing-directory"),
    ],
)
async def test_a_file_that_cannot_be_the_database_is_a_config_error(
    tmp_path: Path, prepare: Callable[[Path], object]
) -> None:
    path = tmp_path / "taskpass.db"
    prepare(path)
    target = path if path.exists() else tmp_path / "absent" / "taskpass.db"

    with pytest.raises(ConfigError, match="SQLite database at"):
        await SqliteStore(target).open()


async def test_a_database_fault_in_one_operation_fails_only_that_one(path: Path) -> None:
    async with SqliteStore(path) as store:
        with raw(path) as conn:
            conn.execute(
                "CREATE TRIGGER fault BEFORE INSERT ON credentials WHEN NEW.jti = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'injected disk fault'); END"
            )
        jtis = [f"jti-{n}" for n in range(20)]
        jtis.insert(10, "poison")

        results = await asyncio.gather(
            *(issue(store, jti, task_id=f"task-{jti}") for jti in jtis), return_exceptions=True
        )

        failed = {
            jti: r for jti, r in zip(jtis, results, strict=True) if isinstance(r, BaseException)
        }
        assert list(failed) == ["poison"]
        error = failed["poison"]
        assert isinstance(error, Unavailable)
        assert "injected" not in str(error)  # internal text stays in the cause, for the log
        assert isinstance(error.__cause__, sqlite3.Error)
        assert store.writer_stats.batches < len(jtis)  # they really shared a transaction
        records = await store.audit.read(limit=MAX_PAGE)
        assert [r.seq for r in records] == list(range(1, 21))
        assert verify_chain(records).ok


async def test_a_fault_after_an_operation_appended_its_audit_record_leaves_no_trace(
    path: Path,
) -> None:
    async with SqliteStore(path) as store:
        tasks = [f"task-{n}" for n in range(12)]
        for task_id in tasks:
            await issue(store, f"jti-{task_id}", task_id=task_id)
        with raw(path) as conn:
            # complete_task appends its audit record, then its event: the event insert fails.
            conn.execute(
                "CREATE TRIGGER fault BEFORE INSERT ON revocation_events "
                "WHEN NEW.task_id = 'task-5' BEGIN SELECT RAISE(ABORT, 'injected'); END"
            )

        results = await asyncio.gather(
            *(
                store.credentials.complete_task(
                    requester=AGENT,
                    task_id=task_id,
                    at=T0,
                    audit=entry("task_completed", task_id=task_id),
                    event=task_revocation(task_id, at=T0),
                )
                for task_id in tasks
            ),
            return_exceptions=True,
        )

        assert [isinstance(r, Unavailable) for r in results] == [n == 5 for n in range(12)]
        records = await store.audit.read(limit=MAX_PAGE)
        assert [r.seq for r in records] == list(range(1, 12 + 11 + 1))
        assert "task-5" not in [r.payload.get("task_id") for r in records[12:]]
        assert verify_chain(records).ok
        events = await store.revocations.read_after(0, limit=MAX_PAGE)
        assert [e.seq for e in events] == list(range(1, 12))
        untouched = await store.credentials.get_credential("jti-task-5")
        assert untouched is not None
        assert untouched.revoked_at is None
        task = await store.credentials.get_task(AGENT, "task-5")
        assert task is not None
        assert task.completed_at is None


async def test_concurrent_writes_share_one_commit(path: Path) -> None:
    async with SqliteStore(path) as store:
        await asyncio.gather(*(store.audit.append(entry(n=n)) for n in range(64)))

        stats = store.writer_stats

    assert stats.operations == 64
    assert stats.batches <= 2
    assert stats.largest_batch >= 32


async def test_a_batch_never_exceeds_its_cap(path: Path) -> None:
    async with SqliteStore(path, max_batch=8) as store:
        await asyncio.gather(*(store.audit.append(entry(n=n)) for n in range(64)))

        stats = store.writer_stats

    assert stats.operations == 64
    assert stats.largest_batch == 8
    assert stats.batches == 8


async def test_sequential_writes_commit_one_by_one(path: Path) -> None:
    async with SqliteStore(path) as store:
        for n in range(5):
            await store.audit.append(entry(n=n))

        assert store.writer_stats.batches == 5


async def test_writes_queued_when_the_writer_is_cancelled_fail_as_unavailable(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    writer_task = next(t for t in asyncio.all_tasks() if t.get_name() == "taskpass-sqlite-writer")
    pending = asyncio.create_task(store.audit.append(entry()))
    await asyncio.sleep(0)  # one loop turn: the write is queued, the writer not yet running it
    writer_task.cancel()

    # The timeout only turns a regression (a write left waiting forever) into a failure.
    with pytest.raises(Unavailable, match="closed"):
        async with asyncio.timeout(10):
            await pending
    await store.close()
